"""How long a class takes to grade: a synthetic class of 100 students x 14 exercises.

The class: 70 students hand in the worked solutions, 22 hand in one planted bug each (a wrong sign,
a factor 2, a missing transpose, the untouched stubs), and 8 hand in an endless loop in one
exercise. ``python -m minivae.exercises grade`` grades it with its default workers (one per usable
core, each forking its children from a warm zygote). The reference in the same run: a few of the
same students graded with a fresh interpreter per answer (``Sandbox(fork=False)``, the path a
platform without fork takes), so the ratio says what the warm children save.

    python benchmarks/grade_class.py [--students 100] [--timeout 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "tutorials" / "solutions"
STUBS = ROOT / "tutorials" / "exercises"

BUGS = {  # exercise -> a wrong answer a student writes
    "linear": "def linear_backward(dy, cache):\n    x, W = cache\n    return dy @ W, x.T @ dy, dy.sum(0)\n",
    "tanh": "def tanh_backward(dh, h):\n    return dh * (1 + h ** 2)\n",
    "kl": "import numpy as np\ndef gaussian_kl_backward(dkl, cache):\n    mu, logvar = cache[:2]\n    return dkl * mu, dkl * np.exp(logvar)\n",
    "iwae": "import numpy as np\ndef iwae_bound(log_w):\n    return log_w.mean(axis=0)\n",
}
LOOP = "def tanh_backward(dh, h):\n    while True:\n        pass\n"


def make_class(folder: Path, students: int) -> dict:
    """The class in ``folder``; returns how many of each kind."""
    n_loop = max(1, students * 8 // 100)
    n_wrong = students * 22 // 100
    kinds = {}
    for i in range(students):
        own = folder / f"student{i:03d}"
        if i < n_loop:
            shutil.copytree(SOLUTIONS, own)
            (own / "tanh.py").write_text(LOOP)
            kinds[own.name] = "loop"
        elif i < n_loop + n_wrong:
            if i % 5 == 0:
                shutil.copytree(STUBS, own)
                kinds[own.name] = "stubs"
            else:
                shutil.copytree(SOLUTIONS, own)
                name = list(BUGS)[i % len(BUGS)]
                (own / f"{name}.py").write_text(BUGS[name])
                kinds[own.name] = "bug"
        else:
            shutil.copytree(SOLUTIONS, own)
            kinds[own.name] = "right"
    return kinds


def batch_seconds(folder: Path, timeout: float, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "minivae.exercises", "grade", str(folder), "--out", str(out),
                    "--timeout", f"{timeout:g}", "--no-progress"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def fresh_interpreter_seconds(student: Path, timeout: float) -> float:
    """One right student graded with a new interpreter per answer (the no-fork path)."""
    sys.path.insert(0, str(ROOT))
    from minivae.exercises import REGISTRY
    from minivae.exercises.batch import grade_student
    from minivae.exercises.sandbox import Sandbox
    started = time.perf_counter()
    with Sandbox(timeout, fork=False) as sandbox:
        grade = grade_student(student, {n: 1.0 for n in REGISTRY}, sandbox)
    assert grade.passed == len(REGISTRY)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        kinds = make_class(tmp / "class", args.students)
        counts = {k: list(kinds.values()).count(k) for k in ("right", "bug", "stubs", "loop")}
        print(f"class: {args.students} students x 14 exercises: " + ", ".join(f"{v} {k}" for k, v in counts.items())
              + f"; answer time limit {args.timeout:g} s")
        batch = [batch_seconds(tmp / "class", args.timeout, tmp / f"out{r}") for r in range(args.runs)]
        right = next(tmp / "class" / s for s, k in kinds.items() if k == "right")
        fresh = [fresh_interpreter_seconds(right, args.timeout) for _ in range(args.runs)]
        grades = (tmp / "out0" / "grades.csv").read_text().splitlines()
    b, f = statistics.median(batch), statistics.median(fresh)
    per_student = (b - counts["loop"] * args.timeout / _workers()) / args.students
    print(f"batch: {', '.join(f'{s:.1f}' for s in batch)} s (median {b:.1f} s, {b / 60:.2f} min)")
    print(f"one right student, a fresh interpreter per answer: {', '.join(f'{s:.2f}' for s in fresh)} s "
          f"(median {f:.2f} s)")
    print(f"per student in the batch, the loops' time limits taken out: {per_student:.2f} s; "
          f"the fresh-interpreter path / the batch's: {f / per_student:.1f}x")
    print(f"grades.csv: {len(grades) - 1} rows")


def _workers() -> int:
    sys.path.insert(0, str(ROOT))
    from minivae.exercises.batch import usable_cores
    return usable_cores()


if __name__ == "__main__":
    main()

"""Gradescope's autograder: the zip a teacher uploads, and what runs for each submission.

``build_autograder(out_zip, points)`` writes the zip Gradescope's specification asks for:
``setup.sh`` and ``run_autograder`` at its root, a minivae wheel beside them (built here from the
installed package, so the container needs nothing from GitHub), and ``points.json``. In the
container, ``setup.sh`` makes a virtual environment with NumPy from PyPI and the bundled wheel, and
``run_autograder`` runs ``python -m minivae.exercises autograde /autograder``, which grades
``/autograder/submission`` into ``/autograder/results/results.json``. Both scripts take the root as
their first argument (default ``/autograder``), so the same files can be tried in any folder.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

from ..files import write_atomic

ROOT = "/autograder"
# What the grader imports: the wheel goes in without its other dependencies (plotting, data sets),
# which grading never loads.
GRADER_REQUIREMENTS = ("numpy>=1.26", "array-api-compat>=1.9")

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when the autograder is built: a virtual environment with NumPy
# from PyPI and the minivae wheel that came in this zip. The first argument is the root (default
# /autograder), so it can be tried anywhere.
set -euo pipefail
ROOT="${1:-/autograder}"
SOURCE="$(cd "$(dirname "$0")" && pwd)"
if ! python3 -c "import ensurepip, venv" 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3 python3-venv
fi
python3 -m venv "$ROOT/minivae-venv"
"$ROOT/minivae-venv/bin/python" -m pip install -q __REQUIREMENTS__
"$ROOT/minivae-venv/bin/python" -m pip install -q --no-deps "$SOURCE"/__WHEEL__
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission: grade ROOT/submission into ROOT/results/results.json.
# The first argument is the root (default /autograder). The grader never runs the student's code
# in its own process: each answer runs in a child with a time limit of __TIMEOUT__ s.
ROOT="${1:-/autograder}"
exec "$ROOT/minivae-venv/bin/python" -m minivae.exercises autograde "$ROOT" \\
  --points "$ROOT/source/points.json" --timeout __TIMEOUT__
"""


def _package_files() -> list[tuple[str, Path]]:
    """(name in the wheel, file here) for the package and its tutorials, as pyproject.toml ships them."""
    from ..tutorial import tutorials_source
    package = Path(__file__).resolve().parents[1]
    files = [(f"minivae/{p.relative_to(package).as_posix()}", p) for p in sorted(package.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
             and p.relative_to(package).parts[0] != "tutorials_data"]
    source = tutorials_source()
    for pattern in ("*.ipynb", "*.md", "*.py", "exercises/*.py", "exercises/*.md", "solutions/*.py"):
        files += [(f"minivae/tutorials_data/{p.relative_to(source).as_posix()}", p) for p in sorted(source.glob(pattern))]
    return files


def _metadata() -> tuple[str, str]:
    """(version, METADATA text) of the installed minivae."""
    from importlib import metadata

    from .. import __version__
    try:
        requires = metadata.requires("minivae") or []
    except metadata.PackageNotFoundError:
        requires = [*GRADER_REQUIREMENTS]
    lines = ["Metadata-Version: 2.1", "Name: minivae", f"Version: {__version__}", "Requires-Python: >=3.10",
             *[f"Requires-Dist: {r}" for r in requires]]
    return __version__, "\n".join(lines) + "\n"


def build_wheel() -> tuple[str, bytes]:
    """A pure-Python wheel of this minivae (PEP 427): its file name and its bytes."""
    version, metadata_text = _metadata()
    info = f"minivae-{version}.dist-info"
    entries = [(name, path.read_bytes()) for name, path in _package_files()]
    entries += [(f"{info}/METADATA", metadata_text.encode()),
                (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: minivae\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
                (f"{info}/entry_points.txt", b"[console_scripts]\nminivae = minivae.__main__:main\n")]
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    return f"minivae-{version}-py3-none-any.whl", _zip(entries)


def _zip(entries, executable=()) -> bytes:
    buffer = io.BytesIO()
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if name in executable else 0o100644) << 16
            z.writestr(info, data)
    return buffer.getvalue()


def build_autograder(out_zip, points: dict, timeout: float) -> int:
    """Write Gradescope's autograder zip to ``out_zip``; returns its size in bytes."""
    wheel_name, wheel = build_wheel()
    setup = SETUP_SH.replace("__REQUIREMENTS__", " ".join(f"'{r}'" for r in GRADER_REQUIREMENTS))
    setup = setup.replace("__WHEEL__", wheel_name)
    data = _zip([("setup.sh", setup.encode()), ("run_autograder", RUN_AUTOGRADER.replace("__TIMEOUT__", f"{timeout:g}").encode()),
                 (wheel_name, wheel), ("points.json", (json.dumps(points, indent=1) + "\n").encode())],
                executable=("setup.sh", "run_autograder"))
    write_atomic(Path(out_zip), data)
    return len(data)


def autograde(root, points: dict, timeout: float, memory_mb: int) -> dict:
    """Grade ``root/submission`` into ``root/results/results.json`` (Gradescope's layout); the results.

    Whatever goes wrong, a results.json is written: a grader that stopped without one shows the
    student only "the autograder failed"."""
    from .batch import gradescope_results, grade_student
    from .sandbox import Sandbox
    root = Path(root)
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    try:
        with Sandbox(timeout, memory_mb) as sandbox:
            grade = grade_student(root / "submission", points, sandbox)
        report = gradescope_results(grade)
    except Exception as e:  # the grader's own failure: still a results.json, with the reason
        report = {"score": 0.0, "output": f"the grader could not grade this submission ({type(e).__name__}: "
                  f"{e}); ask your teacher", "tests": []}
    write_atomic(results / "results.json", json.dumps(report, indent=1).encode())
    return report

"""Exercises with a grader: eight backward passes and six derivations, each checked by numbers.

From a shell, in the folder ``python -m minivae tutorials DIR`` made (or with ``--dir``)::

    python -m minivae.exercises list
    python -m minivae.exercises check linear        # one exercise; prints the file it graded
    python -m minivae.exercises check all           # every exercise, each as it is graded; exit 1 unless all pass
    python -m minivae.exercises hint linear         # the next hint, one level at a time
    python -m minivae.exercises solution linear     # where the library implements it

For a teacher (see the book's "Teaching with minivae")::

    python -m minivae.exercises grade SUBMISSIONS --out RESULTS   # a class, into Gradescope's results.json
    python -m minivae.exercises autograder autograder.zip        # Gradescope's autograder zip

From a notebook, on a function you just wrote::

    from minivae.exercises import check
    check("linear", my_linear_backward)

The backward passes are graded against centred finite differences (the library's bar,
max|analytic - numeric| / max|numeric| < 1e-8); the derivations against quadrature, closed forms
or a statistical test, on fresh inputs each time. The process that judges never runs a learner's
code: a learner's file is imported and called in a child process (``sandbox``), which returns plain
numbers only (``wire``), and the judge compares them with references it computed itself
(``backward``, ``derivations``, ``slip``). Whatever the answer does (raise, loop, exit, patch the
grader, return a list, a complex or an object array) is a failure that says what happened, never
a crash of the grader.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .backward import diagnose  # noqa: F401  (part of the public API)
from .grading import (ARGUMENTS, EXERCISES, REGISTRY, Entry, candidate_dirs, check,  # noqa: F401
                      check_file, exercise_dir, grade, grade_function, grade_functions)
from .outcome import DEFAULT_MEMORY_MB
from .result import GradeResult, GradeRow  # noqa: F401
from .sandbox import DEFAULT_TIMEOUT, Sandbox
from .slip import check_chain  # noqa: F401

HINT_FILE = ".minivae-hints.json"
MAX_HINT_FILE = 1 << 16  # bytes; a real one is a few dozen


# --- staged help ------------------------------------------------------------------------------------

def next_hint(name: str, directory: Path) -> str:
    """The hints of ``name`` up to the next level; the level is remembered in ``directory``.

    The level file is written like every file minivae writes (a fresh temporary and one rename, never
    through a link); a damaged one is set aside as ``.minivae-hints.damaged-<time>.json``, with a line."""
    import time

    from ..files import write_atomic
    state_file, note = directory / HINT_FILE, ""
    state = {}
    if state_file.is_file():
        try:
            state = json.loads(state_file.read_bytes()[:MAX_HINT_FILE + 1])
            if not (isinstance(state, dict) and all(isinstance(k, str) and type(v) is int and 0 <= v <= 99
                                                    for k, v in state.items())):
                raise ValueError("not a map of exercise names to hint levels")
        except (ValueError, RecursionError, OSError) as e:
            aside = state_file.with_name(f".minivae-hints.damaged-{time.strftime('%Y%m%d-%H%M%S')}.json")
            try:
                os.replace(state_file, aside)
                note = (f"note: {state_file.name} was damaged ({type(e).__name__}); set aside as "
                        f"{aside.name}, hint levels start again\n")
            except OSError:
                note = f"note: {state_file.name} is damaged ({type(e).__name__}); hint levels start again\n"
            state = {}
    hints = REGISTRY[name].hints
    level = min(state.get(name, 0) + 1, len(hints))
    state[name] = level
    try:
        write_atomic(state_file, json.dumps(state).encode())
    except OSError:
        pass  # a read-only folder, or something there that is not a file: the hint is still shown
    more = (f"(hint {level} of {len(hints)}; run it again for the next)" if level < len(hints)
            else f"(that was the last hint; `python -m minivae.exercises solution {name}` says where the answer is)")
    return note + "\n".join(f"hint {i + 1}: {h}" for i, h in enumerate(hints[:level])) + "\n" + more


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minivae.exercises", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def limits(p):
        p.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT,
                       help=f"seconds one exercise's answer may run (default {DEFAULT_TIMEOUT:g})")
        p.add_argument("--memory", type=_positive(int), default=DEFAULT_MEMORY_MB,
                       help=f"MB of memory an answer may use (default {DEFAULT_MEMORY_MB}; POSIX only)")

    def points(p):
        p.add_argument("--points", default=None, metavar="FILE",
                       help='JSON object of the assignment\'s exercises and their points, e.g. {"linear": 2, '
                            '"vae": 5} (default: all exercises, 1 point each)')
    c = sub.add_parser("check", help="grade one exercise, or all")
    c.add_argument("name", choices=[*REGISTRY, "all"])
    c.add_argument("--dir", default=None, help="folder of your exercise files")
    limits(c)
    g = sub.add_parser("grade", help="grade a class: one folder per student (or a zip of them) into "
                                     "Gradescope results.json files and grades.csv")
    g.add_argument("submissions", help="folder of student folders, or a zip of them")
    g.add_argument("--out", required=True, help="a new folder for the results")
    g.add_argument("--workers", type=_positive(int), default=None,
                   help="students graded side by side (default: the usable cores)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    limits(g)
    points(g)
    a = sub.add_parser("autograder", help="build the zip for a Gradescope programming assignment")
    a.add_argument("zip", help="the zip to write, e.g. autograder.zip")
    a.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT,
                   help=f"seconds one exercise's answer may run there (default {DEFAULT_TIMEOUT:g})")
    points(a)
    r = sub.add_parser("autograde", help="(in Gradescope's container) grade ROOT/submission into "
                                         "ROOT/results/results.json")
    r.add_argument("root", nargs="?", default="/autograder")
    limits(r)
    points(r)
    h = sub.add_parser("hint", help="the next hint for an exercise")
    h.add_argument("name", choices=list(REGISTRY))
    h.add_argument("--dir", default=None)
    s = sub.add_parser("solution", help="where the library implements the answer")
    s.add_argument("name", choices=list(REGISTRY))
    sub.add_parser("list", help="list the exercises")
    return parser


def _points(args) -> dict:
    from .batch import read_points
    if args.points is None:
        return {name: 1.0 for name in REGISTRY}
    return read_points(args.points, REGISTRY)


def _grade_command(args) -> int:
    from .batch import summary_table, grade_class
    report = grade_class(args.submissions, args.out, _points(args), args.timeout, args.memory,
                         args.workers, progress=not args.no_progress)
    print(summary_table(report.grades, report.points))
    print(f"\n{len(report.grades)} student(s) graded in {report.seconds:.1f} s"
          + (" (stopped early: the others were not graded)" if report.interrupted else "")
          + f"; results in {Path(args.out) / '<student>' / 'results.json'} and {Path(args.out) / 'grades.csv'}")
    return 130 if report.interrupted else 0


def _autograder_command(args) -> int:
    from .autograder import build_autograder
    points = _points(args)
    size = build_autograder(args.zip, points, args.timeout)
    print(f"wrote {args.zip} ({size / 1e6:.1f} MB): setup.sh, run_autograder, the minivae wheel and "
          f"points.json ({len(points)} exercise(s), {sum(points.values()):g} points). Upload it as a "
          f"Gradescope programming assignment's autograder.")
    return 0


def _check_command(args) -> int:
    directory = exercise_dir(args.dir)
    names = list(REGISTRY) if args.name == "all" else [args.name]
    print(f"grading the files in {directory.resolve()}\n", flush=True)
    passed = 0
    with Sandbox(args.timeout, args.memory) as sandbox:
        for name in names:  # each result as soon as it is graded
            result = check_file(name, directory, sandbox)
            passed += result.passed
            print(result, end="\n\n", flush=True)
    print(f"{passed} of {len(names)} exercise(s) passed")
    return 0 if passed == len(names) else 1


def main(argv=None) -> int:
    from .batch import SubmissionError
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name, entry in REGISTRY.items():
            print(f"{name:<16}{', '.join(f + '()' for f in entry.functions)}")
        return 0
    if args.command == "solution":
        print(f"{args.name}: the reference is {REGISTRY[args.name].reference}")
        return 0
    try:
        if args.command == "hint":
            print(next_hint(args.name, exercise_dir(args.dir)))
            return 0
        if args.command == "grade":
            return _grade_command(args)
        if args.command == "autograder":
            return _autograder_command(args)
        if args.command == "autograde":
            from .autograder import autograde
            report = autograde(args.root, _points(args), args.timeout, args.memory)
            print(report["output"])
            return 0
        return _check_command(args)
    except (FileNotFoundError, SubmissionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

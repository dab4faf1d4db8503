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
import importlib.util
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backward, derivations, slip
from .answers import outcome_problem, printed_note
from .backward import EXERCISES as BACKWARD_EXERCISES
from .backward import diagnose  # noqa: F401  (part of the public API)
from .result import GradeResult, GradeRow  # noqa: F401
from .sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, Outcome, Sandbox, run_here
from .slip import check_chain  # noqa: F401

_D = "minivae.exercises.derivations."


@dataclass(frozen=True)
class Entry:
    """An exercise: the functions its file defines, how to grade them, and staged help.

    ``plan(rng) -> (calls, state)`` makes the calls (plain inputs, fresh each time);
    ``judge(state, replies, file) -> GradeResult`` reads the answers. Neither runs learner code."""
    name: str
    functions: tuple
    plan: object
    judge: object
    hints: tuple             # shown one level at a time
    reference: str           # where the answer lives in the library
    library: tuple = ()      # the library's implementations of it: calling one is reported


def _backward_entry(name: str) -> Entry:
    ex = BACKWARD_EXERCISES[name]
    specific = " ".join(f"d{k}: {v}" for k, v in ex.hints.items())
    hints = (f"Write down the forward pass with every shape, then the chain rule for each input: "
             f"d(input) = d(output) times d(output)/d(input), summed over every place the input is used.",
             specific or backward.VAE_BLOCKS[0][2],
             "Check a gradient's shape first: it always has the shape of what it differentiates.")
    if name == "vae":
        hints = tuple(f"The {block}: {what}" for block, _, what in backward.VAE_BLOCKS)
    return Entry(name, (ex.function,), lambda rng, n=name: backward.plan(n, rng),
                 lambda state, replies, file, n=name: backward.judge(n, state, replies, file),
                 hints, ex.reference, ex.library)


REGISTRY = {name: _backward_entry(name) for name in BACKWARD_EXERCISES}
REGISTRY.update({e.name: e for e in [
    Entry("elbo_identity", derivations.ELBO_FUNCTIONS, derivations.plan_elbo_identity,
          derivations.judge_elbo_identity,
          ("log p(x) = log of the integral of p(x|z) p(z) dz: on the grid, sum the integrand and multiply by "
           "model.dz (model.integral does both); do the sum of exponentials in log space if you like.",
           "ELBO = E_q[log p(x|z) + log p(z) - log q(z|x)]; model.E_q(f) computes E_q[f(z)] on the grid.",
           "KL(q || p(z|x)) = E_q[log q(z|x) - log p(z|x)], and log p(z|x) = log p(x|z) + log p(z) - log p(x)."),
          "minivae/exercises/derivations.py: reference_elbo_identity (and tutorial 1)",
          (_D + "reference_elbo_identity",)),
    Entry("kl_general", ("kl_diag_gaussians",), derivations.plan_kl, derivations.judge_kl,
          ("Do one dimension first: KL(N(m1, v1) || N(m2, v2)) = E_q[log q - log p] with both log-densities "
           "written out; E_q[(z - m2)^2] = v1 + (m1 - m2)^2.",
           "The 1-D answer: 0.5 * (log v2 - log v1 + (v1 + (m1 - m2)^2) / v2 - 1). Diagonal: sum over dimensions.",
           "Check it: KL(q || q) must be 0, and with m2 = 0, v2 = 1 it must be the VAE's KL term."),
          "minivae/exercises/derivations.py: reference_kl (the VAE's special case: "
          "minivae/distributions.py: gaussian_kl_forward)", (_D + "reference_kl",)),
    Entry("iwae", ("iwae_bound",), derivations.plan_iwae, derivations.judge_iwae,
          ("L_K = log (1/K) sum_k w_k with w_k = exp(log_w[k]): the log of a mean, not the mean of logs.",
           "exp(1e4) is inf in float64. log mean exp(a) = m + log mean exp(a - m) for any m: pick m = max(a).",
           "Reduce over axis 0 (the K samples): one bound per example."),
          "minivae/bounds.py: logmeanexp and iwae_bound", (_D + "reference_iwae", "minivae.bounds.logmeanexp")),
    Entry("iwae_gradient", ("iwae_weights",), derivations.plan_iwae_gradient, derivations.judge_iwae_gradient,
          ("L_K = log sum_k exp(a_k) - log K with a_k = log w_k: the -log K is a constant, its derivative is 0.",
           "d/da_k log sum_j exp(a_j) = exp(a_k) / sum_j exp(a_j): each weight divided by its column's sum "
           "(a softmax over the K samples, axis 0).",
           "exp(1e4) overflows: exp(a_k - m) / sum_j exp(a_j - m) is the same ratio for any m; take m = the "
           "column's max."),
          "minivae/exercises/derivations.py: reference_iwae_weights", (_D + "reference_iwae_weights",)),
    Entry("score_function", ("score_function_gradient",), derivations.plan_score, derivations.judge_score,
          ("grad E_q[f] = E_q[f(z) grad log q(z)] (the log-derivative trick): only log q is differentiated.",
           "log N(z; mu, exp(logvar)) = -0.5 (log 2 pi + logvar + (z - mu)^2 exp(-logvar)); differentiate it "
           "with respect to mu and to logvar.",
           "d/dmu = (z - mu) / var; d/dlogvar = 0.5 ((z - mu)^2 / var - 1). Multiply each by f(z)."),
          "minivae/exercises/derivations.py: reference_score (tutorial 3 compares it with the "
          "reparameterized gradient)", (_D + "reference_score",)),
    Entry("find_the_slip", ("my_chains",), slip.plan, slip.judge,
          ("Run the worked example: `python -m minivae.exercises check find_the_slip` shows the first step of "
           "each of the lecture notes' chains that changes the value.",
           "Look for an expectation of a density where the log-density belongs (E_q[p(z)] is not E_q[log p(z)]), "
           "a sign that flips when a KL is named, and a log applied twice.",
           "log p(x) = E_q[log p(x|z)] - KL(q || p(z)) + KL(q || p(z|x)): the KL to the prior is subtracted."),
          "minivae/exercises/derivations.py: reference_elbo_identity; the derivation is tutorial 1's"),
]})
EXERCISES = REGISTRY  # the names, in the suggested order


def grade(name: str, run, rng=None) -> GradeResult:
    """Grade exercise ``name``: plan fresh inputs, ``run(entry, calls) -> (Outcome, file name)`` makes
    the calls somewhere, and the judge reads the answers. The grader's own numbers are computed under
    its own floating-point settings, whatever ``np.seterr`` the answer chose."""
    entry = REGISTRY[name]
    rng = np.random.default_rng() if rng is None else rng
    with np.errstate(all="ignore"):
        calls, state = entry.plan(rng)
    outcome, file = run(entry, calls)
    problem = outcome_problem(outcome, file, len(calls))
    if problem:
        result = GradeResult(name, [], problem)
    else:
        with np.errstate(all="ignore"):
            result = entry.judge(state, outcome.replies, file)
    if not problem and not any(r.name == "inputs" for r in result.rows):
        written = _written_inputs(entry, calls, outcome.replies)
        if written:
            result.rows.append(backward.in_place_row(f"{entry.functions[0]}()", written))
    used = sorted({u for r in outcome.replies for u in r.used if not u.startswith("model.")})
    if used:
        result.flags.append("calls the library's implementation: " + ", ".join(used))
        result.notes = "\n".join(filter(None, [result.notes, (
            f"note: the answer calls {', '.join(u + '()' for u in used)}, the library's own implementation "
            f"of this exercise: the grade is for the values, the teacher's report flags it")]))
    shown = printed_note(outcome.printed)
    if shown:
        result.notes = "\n".join(filter(None, [result.notes, shown]))
    return result


ARGUMENTS = {"kl_diag_gaussians": ("mu_q", "logvar_q", "mu_p", "logvar_p"), "iwae_bound": ("log_w",),
             "iwae_weights": ("log_w",), "score_function_gradient": ("f_z", "z", "mu", "logvar")}


def _written_inputs(entry: Entry, calls, replies) -> list[str]:
    """The arguments any call's answer wrote into (compared with the grader's untouched inputs)."""
    from .answers import changed_in_place
    written = []
    for (function, args), reply in zip(calls, replies):
        names = ARGUMENTS.get(function, tuple(f"argument {i + 1}" for i in range(len(args))))
        written += [n for n in changed_in_place(names, args, reply.after) if n not in written]
    return written


def grade_functions(name: str, functions: dict, timeout: float = DEFAULT_TIMEOUT, rng=None) -> GradeResult:
    """Grade ``functions`` (function name -> callable) for exercise ``name``, in this process (a
    notebook's functions have no file): each call on copies of the inputs, under a time limit."""
    entry = REGISTRY[name]
    missing = [f for f in entry.functions if not callable(functions.get(f))]
    if missing:
        return GradeResult(name, [], f"no function {', '.join(f + '()' for f in missing)} to grade")
    source = next((getattr(fn, "__code__", None) for fn in functions.values()), None)
    file = Path(source.co_filename).name if source is not None else "your function"
    return grade(name, lambda e, calls: (run_here(functions, calls, timeout), file), rng)


def grade_function(name: str, fn, timeout: float = DEFAULT_TIMEOUT, rng=None) -> GradeResult:
    """Grade one function for an exercise that has one (every exercise but elbo_identity)."""
    return grade_functions(name, {REGISTRY[name].functions[0]: fn}, timeout, rng)


def check(name: str, *functions, timeout: float = DEFAULT_TIMEOUT, **named) -> GradeResult:
    """Grade functions written in a notebook and print the result: ``check("linear", fn)``, or for
    elbo_identity ``check("elbo_identity", log_px=..., elbo=..., kl_to_posterior=...)``."""
    if name not in REGISTRY:
        raise ValueError(f"no exercise {name!r}; the exercises are {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    given = dict(zip(entry.functions, functions), **named)
    result = grade_functions(name, given, timeout)
    print(result)
    result.printed = True
    return result


# --- the learner's files --------------------------------------------------------------------------

def candidate_dirs(given=None) -> list[Path]:
    """Where a learner's exercise files are looked for, in order."""
    if given:
        return [Path(given)]
    found = [Path(p) for p in (os.environ.get("MINIVAE_EXERCISES"),) if p]
    return found + [Path("exercises"), Path("."), Path("tutorials") / "exercises"]


def exercise_dir(given=None) -> Path:
    """The first candidate folder that holds exercise files; never the installed package's copy."""
    looked = candidate_dirs(given)
    for d in looked:
        if d.is_dir() and any((d / f"{n}.py").is_file() for n in REGISTRY):
            return d
    raise FileNotFoundError(
        f"no exercise files ({', '.join(n + '.py' for n in list(REGISTRY)[:3])}, ...) in "
        f"{', '.join(str(d.resolve()) for d in looked)}. Copy them into a folder of your own with "
        f"`python -m minivae tutorials DIR` and run this inside DIR, or pass --dir FOLDER.")


def check_file(name: str, directory: Path, sandbox: Sandbox | None = None, rng=None) -> GradeResult:
    """Grade the learner's file for ``name`` in ``directory``: it is imported and run in a child
    process (``sandbox``), never here."""
    path = (Path(directory) / f"{name}.py").resolve()
    if not path.is_file():
        result = GradeResult(name, [], f"{Path(directory) / f'{name}.py'} not found")
    elif sandbox is None:
        with Sandbox() as own:
            return check_file(name, directory, own, rng)
    else:
        result = grade(name, lambda e, calls: (sandbox.run(path, e.functions, calls, e.library), path.name), rng)
        if name == "find_the_slip" and not result.problem:
            result.notes = "\n".join(filter(None, [_worked_example(), result.notes]))
    result.source = str(path)
    return result


def _worked_example() -> str:
    """Where the lecture notes' chains (the shipped find_the_slip.py's NOTES_DERIVATION) first go
    wrong. The notes are minivae's own copy: the learner's file is never imported here."""
    from ..tutorial import tutorials_source
    spec = importlib.util.spec_from_file_location("minivae_notes", tutorials_source() / "exercises" / "find_the_slip.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        notes = module.NOTES_DERIVATION
    except Exception:
        return ""
    lines = ["the worked example, the lecture notes' derivation, checked step by step:"]
    for key, steps in notes.items():
        i = slip.first_slip(steps, by_text=False)
        lines.append(f"  {key}: " + ("holds" if i is None else f"first slip at step {i + 1}: {steps[i][0]}"))
    return "\n".join(lines)


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

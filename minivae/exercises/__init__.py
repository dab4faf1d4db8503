"""Exercises with a grader: eight backward passes and six derivations, each checked by numbers.

From a shell, in the folder ``python -m minivae tutorials DIR`` made (or with ``--dir``)::

    python -m minivae.exercises list
    python -m minivae.exercises check linear        # one exercise; prints the file it graded
    python -m minivae.exercises check all           # every exercise; exit code 1 if any fails
    python -m minivae.exercises hint linear         # the next hint, one level at a time
    python -m minivae.exercises solution linear     # where the library implements it

From a notebook, on a function you just wrote::

    from minivae.exercises import check
    check("linear", my_linear_backward)

The backward passes are graded against centred finite differences (the library's bar,
max|analytic - numeric| / max|numeric| < 1e-8); the derivations against quadrature, closed forms
or a statistical test. A learner's mistake is never a crash of the grader: an exception, ``None``, a
list, a wrong shape or a NaN is reported as a failure that says how the answer is wrong and names
the classic mistake it matches.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import backward, derivations, slip
from .backward import EXERCISES as BACKWARD_EXERCISES
from .backward import diagnose  # noqa: F401  (part of the public API)
from .result import GradeResult, GradeRow  # noqa: F401
from .slip import check_chain  # noqa: F401


@dataclass(frozen=True)
class Entry:
    """An exercise: the functions its file defines, how to grade them, and staged help."""
    name: str
    functions: tuple
    grade: object            # grade(dict name -> function) -> GradeResult
    hints: tuple             # shown one level at a time
    reference: str           # where the answer lives in the library


def _backward_entry(name: str) -> Entry:
    ex = BACKWARD_EXERCISES[name]
    specific = " ".join(f"d{k}: {v}" for k, v in ex.hints.items())
    hints = (f"Write down the forward pass with every shape, then the chain rule for each input: "
             f"d(input) = d(output) times d(output)/d(input), summed over every place the input is used.",
             specific or backward.VAE_BLOCKS[0][2],
             "Check a gradient's shape first: it always has the shape of what it differentiates.")
    if name == "vae":
        hints = tuple(f"The {block}: {what}" for block, _, what in backward.VAE_BLOCKS)
    return Entry(name, (ex.function,), lambda fns, n=name, f=ex.function: backward.grade(n, fns[f]),
                 hints, ex.reference)


REGISTRY = {name: _backward_entry(name) for name in BACKWARD_EXERCISES}
REGISTRY.update({e.name: e for e in [
    Entry("elbo_identity", ("log_px", "elbo", "kl_to_posterior"), derivations.grade_elbo_identity,
          ("log p(x) = log of the integral of p(x|z) p(z) dz: on the grid, sum the integrand and multiply by "
           "model.dz (model.integral does both); do the sum of exponentials in log space if you like.",
           "ELBO = E_q[log p(x|z) + log p(z) - log q(z|x)]; model.E_q(f) computes E_q[f(z)] on the grid.",
           "KL(q || p(z|x)) = E_q[log q(z|x) - log p(z|x)], and log p(z|x) = log p(x|z) + log p(z) - log p(x)."),
          "minivae/exercises/derivations.py: reference_elbo_identity (and tutorial 1)"),
    Entry("kl_general", ("kl_diag_gaussians",), lambda fns: derivations.grade_kl(fns["kl_diag_gaussians"]),
          ("Do one dimension first: KL(N(m1, v1) || N(m2, v2)) = E_q[log q - log p] with both log-densities "
           "written out; E_q[(z - m2)^2] = v1 + (m1 - m2)^2.",
           "The 1-D answer: 0.5 * (log v2 - log v1 + (v1 + (m1 - m2)^2) / v2 - 1). Diagonal: sum over dimensions.",
           "Check it: KL(q || q) must be 0, and with m2 = 0, v2 = 1 it must be the VAE's KL term."),
          "minivae/exercises/derivations.py: reference_kl (the VAE's special case: "
          "minivae/distributions.py: gaussian_kl_forward)"),
    Entry("iwae", ("iwae_bound",), lambda fns: derivations.grade_iwae(fns["iwae_bound"]),
          ("L_K = log (1/K) sum_k w_k with w_k = exp(log_w[k]): the log of a mean, not the mean of logs.",
           "exp(1e4) is inf in float64. log mean exp(a) = m + log mean exp(a - m) for any m: pick m = max(a).",
           "Reduce over axis 0 (the K samples): one bound per example."),
          "minivae/bounds.py: logmeanexp and iwae_bound"),
    Entry("iwae_gradient", ("iwae_weights",), lambda fns: derivations.grade_iwae_gradient(fns["iwae_weights"]),
          ("L_K = log sum_k exp(a_k) - log K with a_k = log w_k: the -log K is a constant, its derivative is 0.",
           "d/da_k log sum_j exp(a_j) = exp(a_k) / sum_j exp(a_j): each weight divided by its column's sum "
           "(a softmax over the K samples, axis 0).",
           "exp(1e4) overflows: exp(a_k - m) / sum_j exp(a_j - m) is the same ratio for any m; take m = the "
           "column's max."),
          "minivae/exercises/derivations.py: reference_iwae_weights"),
    Entry("score_function", ("score_function_gradient",),
          lambda fns: derivations.grade_score_function(fns["score_function_gradient"]),
          ("grad E_q[f] = E_q[f(z) grad log q(z)] (the log-derivative trick): only log q is differentiated.",
           "log N(z; mu, exp(logvar)) = -0.5 (log 2 pi + logvar + (z - mu)^2 exp(-logvar)); differentiate it "
           "with respect to mu and to logvar.",
           "d/dmu = (z - mu) / var; d/dlogvar = 0.5 ((z - mu)^2 / var - 1). Multiply each by f(z)."),
          "minivae/exercises/derivations.py: reference_score (tutorial 3 compares it with the "
          "reparameterized gradient)"),
    Entry("find_the_slip", ("my_chains",), lambda fns: _grade_chains(fns["my_chains"]),
          ("Run the worked example: `python -m minivae.exercises check find_the_slip` shows the first step of "
           "each of the lecture notes' chains that changes the value.",
           "Look for an expectation of a density where the log-density belongs (E_q[p(z)] is not E_q[log p(z)]), "
           "a sign that flips when a KL is named, and a log applied twice.",
           "log p(x) = E_q[log p(x|z)] - KL(q || p(z)) + KL(q || p(z|x)): the KL to the prior is subtracted."),
          "minivae/exercises/derivations.py: reference_elbo_identity; the derivation is tutorial 1's"),
]})
EXERCISES = REGISTRY  # the names, in the suggested order


def _grade_chains(my_chains) -> GradeResult:
    chains, problem = backward.call_learner(my_chains, {})
    if problem:
        return GradeResult("find_the_slip", [], f"my_chains() {problem}")
    return slip.grade_chains(chains)


def grade_functions(name: str, functions: dict) -> GradeResult:
    """Grade ``functions`` (function name -> callable) for exercise ``name``."""
    entry = REGISTRY[name]
    missing = [f for f in entry.functions if not callable(functions.get(f))]
    if missing:
        return GradeResult(name, [], f"no function {', '.join(f + '()' for f in missing)} to grade")
    return entry.grade(functions)


def grade_function(name: str, fn) -> GradeResult:
    """Grade one function for an exercise that has one (every exercise but elbo_identity)."""
    return grade_functions(name, {REGISTRY[name].functions[0]: fn})


def check(name: str, *functions, **named) -> GradeResult:
    """Grade functions written in a notebook and print the result: ``check("linear", fn)``, or for
    elbo_identity ``check("elbo_identity", log_px=..., elbo=..., kl_to_posterior=...)``."""
    if name not in REGISTRY:
        raise ValueError(f"no exercise {name!r}; the exercises are {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    given = dict(zip(entry.functions, functions), **named)
    result = grade_functions(name, given)
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


def load_functions(name: str, directory: Path):
    """Import ``<directory>/<name>.py``; returns ``(functions, "")`` or ``(None, problem)``."""
    path = directory / f"{name}.py"
    if not path.is_file():
        return None, f"{path} not found"
    spec = importlib.util.spec_from_file_location(f"minivae_exercise_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        return None, f"{path.name} does not import: {type(e).__name__}: {e}"
    functions = {f: getattr(module, f, None) for f in REGISTRY[name].functions}
    missing = [f for f, fn in functions.items() if not callable(fn)]
    if missing:
        return None, f"{path.name} has no function {', '.join(m + '()' for m in missing)}"
    return functions, ""


def check_file(name: str, directory: Path) -> GradeResult:
    """Grade the learner's file for ``name`` in ``directory``."""
    functions, problem = load_functions(name, directory)
    result = GradeResult(name, [], problem) if functions is None else grade_functions(name, functions)
    result.source = str((directory / f"{name}.py").resolve())
    if name == "find_the_slip" and functions is not None:
        result.notes = _worked_example(directory)
    return result


def _worked_example(directory: Path) -> str:
    """Where the lecture notes' chains (in find_the_slip.py, NOTES_DERIVATION) first go wrong."""
    spec = importlib.util.spec_from_file_location("minivae_exercise_seed", directory / "find_the_slip.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        notes = module.NOTES_DERIVATION
    except Exception:
        return ""
    lines = ["the worked example, the lecture notes' derivation, checked step by step:"]
    for key, steps in notes.items():
        i = slip.first_slip(steps)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minivae.exercises", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="grade one exercise, or all")
    c.add_argument("name", choices=[*REGISTRY, "all"])
    c.add_argument("--dir", default=None, help="folder of your exercise files")
    h = sub.add_parser("hint", help="the next hint for an exercise")
    h.add_argument("name", choices=list(REGISTRY))
    h.add_argument("--dir", default=None)
    s = sub.add_parser("solution", help="where the library implements the answer")
    s.add_argument("name", choices=list(REGISTRY))
    sub.add_parser("list", help="list the exercises")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, entry in REGISTRY.items():
            print(f"{name:<16}{', '.join(f + '()' for f in entry.functions)}")
        return 0
    if args.command == "solution":
        print(f"{args.name}: the reference is {REGISTRY[args.name].reference}")
        return 0
    try:
        directory = exercise_dir(args.dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "hint":
        print(next_hint(args.name, directory))
        return 0
    names = list(REGISTRY) if args.name == "all" else [args.name]
    print(f"grading the files in {directory.resolve()}\n")
    results = [check_file(n, directory) for n in names]
    for r in results:
        print(r, end="\n\n")
    passed = sum(r.passed for r in results)
    print(f"{passed} of {len(results)} exercise(s) passed")
    return 0 if passed == len(results) else 1

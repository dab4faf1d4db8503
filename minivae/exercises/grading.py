"""The exercises and how each is graded: the registry (an exercise's functions, plan, judge and
hints), and the entry points that grade a notebook's functions (``check``) or a learner's file
(``check_file``, in a child process). The package's ``__init__`` re-exports them."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backward, derivations, slip
from .answers import outcome_problem, printed_note
from .backward import EXERCISES as BACKWARD_EXERCISES
from .result import GradeResult
from .sandbox import DEFAULT_TIMEOUT, Sandbox, run_here

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
          "minivae/core/distributions.py: gaussian_kl_forward)", (_D + "reference_kl",)),
    Entry("iwae", ("iwae_bound",), derivations.plan_iwae, derivations.judge_iwae,
          ("L_K = log (1/K) sum_k w_k with w_k = exp(log_w[k]): the log of a mean, not the mean of logs.",
           "exp(1e4) is inf in float64. log mean exp(a) = m + log mean exp(a - m) for any m: pick m = max(a).",
           "Reduce over axis 0 (the K samples): one bound per example."),
          "minivae/core/bounds.py: logmeanexp and iwae_bound",
          (_D + "reference_iwae", "minivae.core.bounds.logmeanexp")),
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

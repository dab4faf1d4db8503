"""Find the slip: a derivation checked step by step with numbers.

A derivation is a chain of expressions that should all be equal: ``[(text, f), (text, f), ...]``
where each ``f(model)`` evaluates its expression on the same small model (a ``SmallModel``: a 1-D
latent, where every expectation and log p(x) are computed exactly by quadrature). The checker
evaluates every step and reports the first one whose value differs from the step before it: that
is where the derivation went wrong. A learner can check a chain of their own the same way.

    from minivae.exercises.slip import check_chain
    check_chain([("KL(q || p(z|x))", lambda m: ...), ("= ...", lambda m: ...)])
"""

from __future__ import annotations

import math

from .backward import call_learner
from .derivations import SmallModel, reference_elbo_identity
from .result import GradeResult, GradeRow

STEP_TOLERANCE = 1e-8


def evaluate_chain(steps, model: SmallModel | None = None) -> list:
    """``[(text, value or None, problem)]`` for every step of a chain."""
    model = model or SmallModel()
    out = []
    for text, f in steps:
        value, problem = call_learner(f, {}, model)
        if not problem:
            try:
                value = float(value)
            except (TypeError, ValueError):
                value, problem = None, f"returned {type(value).__name__}, not a number"
        out.append((text, value, problem))
    return out


def check_chain(steps, name: str = "chain", start: float | None = None,
                start_text: str = "") -> GradeResult:
    """Check that every step of ``steps`` equals the one before it; ``start``, if given, is the value
    the first step must have (e.g. the exact KL(q || p(z|x)))."""
    if not isinstance(steps, (list, tuple)) or not steps or not all(
            isinstance(s, (list, tuple)) and len(s) == 2 and callable(s[1]) for s in steps):
        return GradeResult(name, [], "expected a list of (text, function of the model) pairs, e.g. "
                                     "[('log p(x)', lambda m: m.log_px()), ...]")
    rows, previous = [], None
    for i, (text, value, problem) in enumerate(evaluate_chain(steps)):
        label = f"step {i + 1}"
        if problem:
            rows.append(GradeRow(label, None, False, f"{text}\n          {problem}", ""))
            previous = None
            continue
        if i == 0 and start is not None:
            gap = abs(value - start)
            ok = gap < STEP_TOLERANCE * max(1.0, abs(start))
            rows.append(GradeRow(label, gap, ok, f"{text} = {value:.10f}" + ("" if ok else
                                 f"\n          but the chain must start at {start_text} = {start:.10f}"), "|gap|"))
        elif previous is None:
            rows.append(GradeRow(label, None, math.isfinite(value), f"{text} = {value:.10f}", ""))
        else:
            gap = abs(value - previous)
            ok = math.isfinite(value) and gap < STEP_TOLERANCE * max(1.0, abs(previous))
            rows.append(GradeRow(label, gap, ok, f"{text} = {value:.10f}" + ("" if ok else
                                 f"\n          <-- differs from the step before by {value - previous:+.6g}: "
                                 f"the slip is in this step"), "|gap|"))
        previous = value
    return GradeResult(name, rows)


def first_slip(steps) -> int | None:
    """The index of the first step that differs from the one before it (None: the chain holds)."""
    result = check_chain(steps)
    for i, row in enumerate(result.rows):
        if not row.passed:
            return i
    return None


# The three chains the learner must write: where each starts, and its exact value.
STARTS = {
    "kl_expansion": ("KL(q(z|x) || p(z|x))", lambda m: reference_elbo_identity(m)["kl_to_posterior"]),
    "log_likelihood": ("log p(x)", lambda m: m.log_px()),
    "elbo": ("ELBO = E_q[log p(x, z) - log q(z|x)]", lambda m: reference_elbo_identity(m)["elbo"]),
}


def grade_chains(chains: dict) -> GradeResult:
    """Grade a learner's ``{"kl_expansion": [...], "log_likelihood": [...], "elbo": [...]}``: each
    chain must start at its quantity, hold at every step, and have at least three steps."""
    if not isinstance(chains, dict):
        return GradeResult("find_the_slip", [], f"my_chains() returned {type(chains).__name__}; "
                                                f"expected a dict of the three chains")
    model, rows = SmallModel(), []
    for key, (text, exact) in STARTS.items():
        steps = chains.get(key)
        if steps is None or (isinstance(steps, (list, tuple)) and len(steps) < 3):
            rows.append(GradeRow(key, None, False, f"chain {key!r} needs at least 3 steps, starting at {text}", ""))
            continue
        result = check_chain(steps, key, start=exact(model), start_text=text)
        if result.problem:
            rows.append(GradeRow(key, None, False, result.problem, ""))
            continue
        bad = [r for r in result.rows if not r.passed]
        rows.append(GradeRow(key, None, not bad, "" if not bad else
                             f"{bad[0].name}: {bad[0].message}", ""))
    return GradeResult("find_the_slip", rows)

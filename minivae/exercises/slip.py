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


# Slips a step's *text* can keep while its function computes the right value (normalized text, see
# _normal): the grader reads the text too, since the text is the derivation a reader follows.
TEXT_SLIPS = {
    "e_q(q(": "E_q[q(z|x)], the expectation of a density where its log belongs: E_q[log q(z|x)]",
    "e_q(q)": "E_q[q], the expectation of a density where its log belongs: E_q[log q]",
    "e_q(p(z))": "E_q[p(z)], the expectation of a density where its log belongs: E_q[log p(z)]",
    "e_q(p(x|z))": "E_q[p(x|z)], the expectation of a density where its log belongs: E_q[log p(x|z)]",
    "log(log": "a log of a log",
    "+kl(q||p(z))": "+ KL(q || p(z)): the KL to the prior is subtracted",
    "+kl(q(z|x)||p(z))": "+ KL(q(z|x) || p(z)): the KL to the prior is subtracted",
}


def _normal(text: str) -> str:
    """A step's text without spaces, brackets unified and subscripts dropped, to compare forms."""
    t = str(text).lower().replace(" ", "").lstrip("=")
    for a, b in (("[", "("), ("]", ")"), ("{", "("), ("}", ")"), ("d_kl", "kl"), ("p_prior", "p"),
                 ("q_phi", "q"), ("p_theta", "p"), ("\\mid", "|"), ("\\|", "||")):
        t = t.replace(a, b)
    return t


def _form_problem(steps) -> str:
    """What is wrong with a chain's texts, or "": each step must change the expression, the chain
    must end somewhere other than where it started, and no text may keep a slip."""
    texts = [_normal(text) for text, _ in steps]
    for i in range(1, len(texts)):
        if texts[i] == texts[i - 1]:
            return (f"step {i + 1} repeats step {i} ({steps[i][0]!r}): each step must rewrite the "
                    f"expression; the values alone cannot tell a derivation from a repetition")
    if texts[-1] == texts[0]:
        return "the chain ends where it started: it must reach its target form"
    for i, text in enumerate(texts):
        for pattern, why in TEXT_SLIPS.items():
            if pattern in text:
                return (f"step {i + 1} ({steps[i][0]!r}) writes {why}. Its function computes the "
                        f"right value, but the text is the derivation: it must say what is computed")
    return ""


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
        if bad:
            rows.append(GradeRow(key, None, False, f"{bad[0].name}: {bad[0].message}", ""))
            continue
        form = _form_problem(steps)
        rows.append(GradeRow(key, None, not form, form, ""))
    return GradeResult("find_the_slip", rows)

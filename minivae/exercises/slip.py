"""Find the slip: a derivation checked step by step with numbers.

A derivation is a chain of expressions that should all be equal, each step a text such as
``"= E_q[log p(x|z)] - KL(q || p(z))"``. The grader reads every text with a small vocabulary over
the terms of a ``SmallModel`` (``expr``: a 1-D latent, where every expectation and log p(x) are
exact by quadrature), computes its value itself, and reports the first step whose value differs
from the step before it: that is where the derivation went wrong. The value comes from what the
text says, so a step cannot say one thing and compute another. A learner can check a chain of
their own the same way:

    from minivae.exercises.slip import check_chain
    check_chain(["KL(q || p(z|x))", "= E_q[log q - log p(z|x)]", ...])

A step may also be a ``(text, function of the model)`` pair, as the lecture notes' chains in
find_the_slip.py are; ``check_chain(..., by_text=False)`` evaluates the functions instead.
"""

from __future__ import annotations

import math

import numpy as np

from .derivations import reference_elbo_identity
from .expr import StepError, values
from .model import SmallModel, random_model
from .result import GradeResult, GradeRow

STEP_TOLERANCE = 1e-8
N_MODELS = 2


def step_text(step):
    """The text of a step (a string, or the first item of a pair); None if it has none."""
    if isinstance(step, str):
        return step
    if isinstance(step, (tuple, list)) and step and isinstance(step[0], str):
        return step[0]
    return None


def _value(step, model, by_text: bool):
    """``(value, problem)`` of one step on one model."""
    if by_text:
        try:
            sides = values(step_text(step), model)
            if any(not abs(v - sides[0]) < STEP_TOLERANCE * max(1.0, abs(sides[0])) for v in sides[1:]):
                return None, "the sides of '=' in this step differ: each '=' must join equal expressions"
            return sides[-1], ""
        except StepError as e:
            return None, f"the grader cannot read this text: {e}"
        except RecursionError:
            return None, "the grader cannot read this text: it is nested too deeply"
    try:
        with np.errstate(all="ignore"):
            return float(step[1](model)), ""
    except Exception as e:  # the notes' own functions, or a learner's in a notebook
        return None, f"raised {type(e).__name__}: {e}"


def check_chain(steps, name: str = "chain", start=None, start_text: str = "", models=None,
                by_text: bool = True) -> GradeResult:
    """Check that every step of ``steps`` equals the one before it on every model of ``models``
    (default: the standard ``SmallModel``); ``start(model)``, if given, is the value the first step
    must have there (e.g. the exact KL(q || p(z|x)))."""
    if not isinstance(steps, (list, tuple)) or not steps or any(step_text(s) is None for s in steps) or (
            not by_text and not all(isinstance(s, (list, tuple)) and len(s) == 2 and callable(s[1]) for s in steps)):
        return GradeResult(name, [], "expected a list of steps, each a text such as 'E_q[log p(x|z)] - KL(q || p(z))' "
                                     "(or a (text, function of the model) pair)")
    models = models or [SmallModel()]
    rows, previous = [], None
    for i, step in enumerate(steps):
        text, label = step_text(step), f"step {i + 1}"
        got = [_value(step, m, by_text) for m in models]
        problem = next((p for _, p in got if p), "")
        if problem:
            rows.append(GradeRow(label, None, False, f"{text}\n          {problem}", ""))
            previous = None
            continue
        now = [v for v, _ in got]
        if i == 0 and start is not None:
            target = [start(m) for m in models]
            gap = max(abs(v - t) / max(1.0, abs(t)) for v, t in zip(now, target))
            ok = gap < STEP_TOLERANCE
            rows.append(GradeRow(label, gap, ok, text + ("" if ok else
                                 f"\n          but the chain must start at {start_text}"), "|gap|"))
        elif previous is None:
            ok = all(math.isfinite(v) for v in now)
            rows.append(GradeRow(label, None, ok, text + ("" if ok else "\n          is not a finite number"), ""))
        else:
            gaps = [v - p for v, p in zip(now, previous)]
            gap = max(abs(g) / max(1.0, abs(p)) for g, p in zip(gaps, previous))
            ok = all(math.isfinite(v) for v in now) and gap < STEP_TOLERANCE
            rows.append(GradeRow(label, gap, ok, text + ("" if ok else
                                 f"\n          <-- differs from the step before (by {gaps[0]:+.6g} on the "
                                 f"first model): the slip is in this step" + _text_slip(text)), "|gap|"))
        previous = now
    return GradeResult(name, rows)


def first_slip(steps, by_text: bool = True) -> int | None:
    """The index of the first step that differs from the one before it (None: the chain holds)."""
    result = check_chain(steps, by_text=by_text)
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


# Slips a step's text may hold (normalized text, see _normal): named beside the value they change.
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


def _text_slip(text: str) -> str:
    t = _normal(text)
    for pattern, why in TEXT_SLIPS.items():
        if pattern in t:
            return f": it writes {why}"
    return ""


def _form_problem(texts) -> str:
    """What is wrong with a chain's texts as a derivation, or "": each step must change the
    expression, and the chain must end somewhere other than where it started."""
    normal = [_normal(t) for t in texts]
    for i in range(1, len(normal)):
        if normal[i] == normal[i - 1]:
            return (f"step {i + 1} repeats step {i} ({texts[i]!r}): each step must rewrite the "
                    f"expression; the values alone cannot tell a derivation from a repetition")
    if normal[-1] == normal[0]:
        return "the chain ends where it started: it must reach its target form"
    return ""


def plan(rng):
    """One call, ``my_chains()``; the models the chains are checked on are the grader's own."""
    return [("my_chains", ())], {"models": [random_model(rng) for _ in range(N_MODELS)]}


def judge(state, replies, file) -> GradeResult:
    """Grade a learner's ``{"kl_expansion": [...], "log_likelihood": [...], "elbo": [...]}``: each
    chain must start at its quantity, hold at every step on every model, and have at least three steps."""
    from .answers import kind_words, reply_problem
    problem = reply_problem(replies[0], file)
    if problem:
        return GradeResult("find_the_slip", [], f"my_chains() {problem}")
    chains = replies[0].value
    if not isinstance(chains, dict):
        return GradeResult("find_the_slip", [], f"my_chains() {kind_words(chains).replace('not an array', 'not a dict of the three chains')}")
    rows = []
    for key, (text, exact) in STARTS.items():
        steps = chains.get(key)
        if not isinstance(steps, (list, tuple)) or len(steps) < 3:
            rows.append(GradeRow(key, None, False, f"chain {key!r} needs at least 3 steps, starting at {text}", ""))
            continue
        texts = [step_text(s) for s in steps]
        if any(t is None for t in texts):
            rows.append(GradeRow(key, None, False, f"chain {key!r}: every step must be a text (or a (text, "
                                                   f"function) pair): the grader reads the text", ""))
            continue
        result = check_chain(texts, key, start=exact, start_text=text, models=state["models"])
        bad = [r for r in result.rows if not r.passed]
        if bad:
            rows.append(GradeRow(key, None, False, f"{bad[0].name}: {bad[0].message}", ""))
            continue
        form = _form_problem(texts)
        rows.append(GradeRow(key, None, not form, form, ""))
    return GradeResult("find_the_slip", rows, notes=f"every step's text evaluated by the grader on {N_MODELS} fresh models")

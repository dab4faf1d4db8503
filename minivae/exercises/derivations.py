"""Grading the derivation exercises: the ELBO identity, the general Gaussian KL, the importance-weighted
bound and its gradient, and the score-function estimator, each checked by numbers.

Every derivation is checked against an independent computation the grader makes itself: quadrature
on a fine grid for a one-dimensional latent (where log p(x) and the true posterior are exact),
closed forms, or a statistical test. The inputs are fresh each time (new models, new draws), so an
answer cannot be a remembered number. When an answer is wrong, the grader compares it with the
classic wrong answers (a sign slip in the KL, the log inside the integral, the KL the wrong way
round, std for variance, the 1/L or the log K of a mean) and names the one it matches; it says how
far off an answer is, never the value it expected.

Each exercise is a pair: ``plan_X(rng) -> (calls, state)``, the calls to make with plain inputs,
and ``judge_X(state, replies, file) -> GradeResult``, which reads the answers (plain data).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..core.bounds import logmeanexp
from ..core.gradcheck import STENCILS, numerical_gradient
from .answers import kind_words, reply_problem
from .backward import merge_instances
from .model import SmallModel, random_model
from .result import GradeResult, GradeRow
from .wire import ModelSpec, finite_float

VALUE_TOLERANCE = 1e-8  # |yours - reference| / max(1, |reference|)
__all__ = ["SmallModel", "reference_elbo_identity", "reference_kl", "reference_iwae", "reference_iwae_weights",
           "reference_score"]


def _off_by(value: float, want: float) -> str:
    """How far off a number is, and which way, without the number it should be."""
    gap = value - want
    return f"{'too high' if gap > 0 else 'too low'} by {abs(gap):.3g} (relative {abs(gap) / max(1.0, abs(want)):.1e})"


def _value_row(name, got, want, variants: dict) -> GradeRow:
    """A row comparing a learner's number with the reference; names a matching classic slip."""
    value = finite_float(got)
    if value is None:
        if got is None or not isinstance(got, (int, float, np.generic, np.ndarray)) or np.size(got) != 1:
            what = kind_words(got) if not isinstance(got, np.ndarray) else f"is an array of shape {got.shape}"
            return GradeRow(name, None, False, f"{name} {what} Expected one number (a float).")
        return GradeRow(name, None, False, f"{name} is NaN or inf (an exp that overflowed, a log of 0?)")
    err = abs(value - want) / max(1.0, abs(want))
    if getattr(got, "dtype", None) in (np.float32, np.float16):  # blame the row that lost the digits
        return GradeRow(name, err, False, f"{name} is a {got.dtype} number: compute it in float64. float32 "
                                          f"keeps about 7 digits, and a small quantity computed from it "
                                          f"(the KL) inherits the error many times over", "error")
    if err < VALUE_TOLERANCE:
        return GradeRow(name, err, True, label="error")
    for slip, v in variants.items():
        if abs(value - v) / max(1.0, abs(v)) < 1e-6:
            return GradeRow(name, err, False, f"{name} is {_off_by(value, want)}: {slip}", "error")
    if err < 1e-3:
        return GradeRow(name, err, False, f"{name} is close ({_off_by(value, want)}) but not within "
                                          f"{VALUE_TOLERANCE:g}: a value rounded to float32 somewhere, or a "
                                          f"coarser grid than the model's?", "error")
    return GradeRow(name, err, False, f"{name} is {_off_by(value, want)}", "error")


def _array_row(name, got, want, slips: dict, shape_hint: str) -> GradeRow:
    if not isinstance(got, np.ndarray):
        return GradeRow(name, None, False, f"{name} {kind_words(got)}")
    if got.shape != want.shape:
        return GradeRow(name, None, False, f"{name} has shape {got.shape}, expected {want.shape}: {shape_hint}")
    if not np.all(np.isfinite(got)):
        return GradeRow(name, None, False, f"{name} contains NaN or inf: an exp that overflowed, or a log of 0?")
    got = got.astype(np.float64)
    err = float(np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want))))
    if err < VALUE_TOLERANCE:
        return GradeRow(name, err, True, label="error")
    for slip, v in slips.items():
        if np.allclose(got, v, rtol=1e-6, atol=1e-9):
            return GradeRow(name, err, False, f"{name} {slip}", "error")
    return GradeRow(name, err, False, f"{name} does not match the reference (off by up to {err:.2g} relative)",
                    "error")


def _first_problem(replies, file):
    for reply in replies:
        problem = reply_problem(reply, file)
        if problem:
            return problem
    return ""


# --- 1. the ELBO identity --------------------------------------------------------------------------

ELBO_FUNCTIONS = ("log_px", "elbo", "kl_to_posterior")
N_MODELS = 2


def reference_elbo_identity(model: SmallModel) -> dict:
    m, z = model, model.z
    log_joint = m.log_px_given_z(z) + m.log_prior(z)
    return {"log_px": m.log_px(),
            "elbo": m.E_q(lambda z: log_joint - m.log_q(z)),
            "kl_to_posterior": m.E_q(lambda z: m.log_q(z) - m.log_post(z))}


def _elbo_identity_slips(m: SmallModel) -> dict:
    z = m.z
    recon = m.E_q(m.log_px_given_z)
    kl_prior = m.kl_q_prior()
    ref = reference_elbo_identity(m)
    log_joint = m.log_px_given_z(z) + m.log_prior(z)
    return {
        "log_px": {
            "the log is inside the integral: that is E_p(z)[log p(x|z)], a lower bound (Jensen), not log p(x)":
                m.integral(m.prior(z) * m.log_px_given_z(z)),
            "off by log(dz): the grid spacing dz is missing from the integral":
                float(logmeanexp(log_joint)) + math.log(len(log_joint)),
            "the prior p(z) is missing from the integral":
                math.log(m.integral(m.px_given_z(z))),
        },
        "elbo": {
            "the KL has the wrong sign: ELBO = E_q[log p(x|z)] - KL(q || p(z))": recon + kl_prior,
            "log p(z) is missing: the ELBO is E_q[log p(x|z) + log p(z) - log q(z|x)]":
                m.E_q(lambda z: m.log_px_given_z(z) - m.log_q(z)),
            "the KL term is missing: that is only the reconstruction term": recon,
            "log q(z|x) is added instead of subtracted": m.E_q(lambda z: log_joint + m.log_q(z)),
        },
        "kl_to_posterior": {
            "the KL the wrong way round: that is KL(p(z|x) || q(z|x)); the expectation is under q":
                m.integral(np.exp(m.log_post(z)) * (m.log_post(z) - m.log_q(z))),
            "the wrong sign: KL = E_q[log q - log p(z|x)] >= 0": -ref["kl_to_posterior"],
            "that is KL(q || p(z)), to the prior; the identity needs the posterior p(z|x)": kl_prior,
        },
    }


def plan_elbo_identity(rng):
    models = [random_model(rng) for _ in range(N_MODELS)]
    calls = [(f, (ModelSpec(m.spec()),)) for m in models for f in ELBO_FUNCTIONS]
    return calls, {"refs": [reference_elbo_identity(m) for m in models],
                   "slips": [_elbo_identity_slips(m) for m in models]}


def judge_elbo_identity(state, replies, file) -> GradeResult:
    per_model, n = [], len(ELBO_FUNCTIONS)
    for i, (ref, slips) in enumerate(zip(state["refs"], state["slips"])):
        rows, values = [], {}
        for name, reply in zip(ELBO_FUNCTIONS, replies[i * n:(i + 1) * n]):
            problem = reply_problem(reply, file)
            if problem:
                rows.append(GradeRow(name, None, False, f"{name} {problem}"))
                continue
            rows.append(_value_row(name, reply.value, ref[name], slips[name]))
            values[name] = finite_float(reply.value)
        if all(values.get(k) is not None for k in ELBO_FUNCTIONS):
            gap = values["log_px"] - values["elbo"] - values["kl_to_posterior"]
            ok = abs(gap) < VALUE_TOLERANCE
            rows.append(GradeRow("identity", abs(gap), ok, "" if ok else
                                 f"log p(x) - ELBO - KL(q || p(z|x)) = {gap:.3g}, not 0", "|gap|"))
        else:
            rows.append(GradeRow("identity", None, False, "needs all three numbers", "|gap|"))
        per_model.append(rows)
    rows = merge_instances(per_model)
    used = sorted({u for r in replies for u in r.used if u.startswith("model.")})
    if used:
        rows.append(GradeRow("own work", None, False,
                             f"the answer calls {' and '.join(u + '()' for u in used)}, which hold the answers "
                             f"this exercise asks for: compute them from model.log_px_given_z, model.log_prior, "
                             f"model.log_q and model.integral (or model.E_q)", label=""))
    return GradeResult("elbo_identity", rows, notes=f"checked on {N_MODELS} fresh models, each by its own quadrature")


# --- 2. KL between two diagonal Gaussians ----------------------------------------------------------

def reference_kl(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))), diagonal, summed over the last axis."""
    return 0.5 * np.sum(logvar_p - logvar_q + (np.exp(logvar_q) + (mu_q - mu_p) ** 2) / np.exp(logvar_p) - 1.0,
                        axis=-1)


def _kl_by_quadrature(mu_q, logvar_q, mu_p, logvar_p, n: int = 40001):
    """The same KL as a sum of 1-D integrals over each dimension, on a grid of +-12 std of q."""
    sq = np.exp(0.5 * logvar_q)
    t = np.linspace(-12.0, 12.0, n)
    z = mu_q[..., None] + sq[..., None] * t                      # (B, Z, n)
    log_n = lambda z, m, lv: -0.5 * (math.log(2 * math.pi) + lv[..., None] + (z - m[..., None]) ** 2 / np.exp(lv[..., None]))  # noqa: E731
    lq = log_n(z, mu_q, logvar_q)
    integrand = np.exp(lq) * (lq - log_n(z, mu_p, logvar_p))
    dz = sq * (t[1] - t[0])
    return np.sum(dz * (np.sum(integrand, -1) - 0.5 * (integrand[..., 0] + integrand[..., -1])), axis=-1)


def _kl_slips(mu_q, logvar_q, mu_p, logvar_p) -> dict:
    args = (mu_q, logvar_q, mu_p, logvar_p)
    return {
        "that is KL(p || q), the wrong way round: the expectation is under q, the first argument":
            reference_kl(mu_p, logvar_p, mu_q, logvar_q),
        "that is KL(q || N(0, I)): this exercise is the general p = N(mu_p, exp(logvar_p))":
            reference_kl(mu_q, logvar_q, 0 * mu_p, 0 * logvar_p),
        "exp(0.5 * logvar) is the std; the formula needs the variance exp(logvar)":
            0.5 * np.sum(0.5 * logvar_p - 0.5 * logvar_q + (np.exp(0.5 * logvar_q) + (mu_q - mu_p) ** 2)
                         / np.exp(0.5 * logvar_p) - 1.0, axis=-1),
        "a factor 2: the 0.5 in front is missing": 2 * reference_kl(*args),
        "the -1 per dimension is missing (it makes KL(q || q) = 0)": reference_kl(*args) + 0.5 * mu_q.shape[-1],
        "the squared mean difference is not divided by p's variance": reference_kl(*args) + 0.5 * np.sum(
            (mu_q - mu_p) ** 2 * (1 - 1 / np.exp(logvar_p)), -1),
        "the log-variance ratio has the wrong sign (logvar_q - logvar_p)": reference_kl(*args) + np.sum(
            logvar_q - logvar_p, -1),
    }


def plan_kl(rng):
    calls, cases = [], []
    for rows_, dims in ((5, 4), (3, 6)):
        g = lambda: rng.standard_normal((rows_, dims))  # noqa: E731
        args = (g(), 0.8 * g(), g(), 0.8 * g())
        calls.append(("kl_diag_gaussians", args))
        cases.append((_kl_by_quadrature(*args), _kl_slips(*args)))
    return calls, cases


def judge_kl(cases, replies, file) -> GradeResult:
    problem = _first_problem(replies, file)
    if problem:
        return GradeResult("kl_general", [], problem)
    rows = [[_array_row("kl", r.value, want, slips, "sum over the latent dimensions: one KL per row")]
            for (want, slips), r in zip(cases, replies)]
    return GradeResult("kl_general", merge_instances(rows), notes=(
        "checked against quadrature (40001 points per dimension) on two fresh sets of Gaussians"))


# --- 3. the importance-weighted bound ------------------------------------------------------------

def reference_iwae(log_w):
    """L_K per column: log mean_k exp(log_w[k]), the library's stable logmeanexp."""
    return logmeanexp(log_w, axis=0)


def _extreme_cases(g, shape=(7, 5)) -> dict:
    return {"near +1e4": g.standard_normal(shape) * 5 + 1e4,
            "near -1e4": g.standard_normal(shape) * 5 - 1e4,
            # a column whose weights spread by far more than 709 (exp's range): shifting by its
            # minimum overflows, only its maximum works
            "spread 3000": g.uniform(-1500, 1500, shape),
            # columns on very different scales: one shift for all of them underflows the low ones
            "mixed scales": g.standard_normal(shape) + np.array([1e4, 0.0, -1e4, 5e3, -5e3])}


IWAE_KS = (1, 4, 16, 64, 256)
IWAE_WHY = {"near +1e4": " exp(1e4) overflows to inf",
            "near -1e4": " exp(-1e4) underflows to 0, and log(0) = -inf",
            "spread 3000": " this column's weights spread by 3000: shifted by anything but its "
                           "maximum, some exp overflows",
            "mixed scales": " the columns sit near +1e4, 0 and -1e4: shifted by one number for all "
                            "columns, the low ones underflow to exp(-1e4) = 0"}


def plan_iwae(rng):
    cases = {"moderate": rng.standard_normal((7, 5)) * 3 - 10, **_extreme_cases(rng)}
    # a q far from the posterior, so that each L_k is clearly above the last (a gap of 0.1 or more
    # between L_1 and L_256, against a standard error of about 0.005)
    m = dataclasses.replace(random_model(rng), q_mean=float(rng.choice([-1.5, 1.5])), q_logvar=math.log(0.3))
    std = math.exp(0.5 * m.q_logvar)
    log_w1 = rng.standard_normal((1, 6))
    property_inputs = [log_w1]
    for k in IWAE_KS:
        z = m.q_mean + std * rng.standard_normal((k, 2000))
        property_inputs.append(m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))          # (k, 2000)
    calls = [("iwae_bound", (w,)) for w in [*cases.values(), *property_inputs]]
    return calls, {"cases": cases, "log_w1": log_w1, "log_px": m.log_px()}


def judge_iwae(state, replies, file) -> GradeResult:
    rows = []
    for (label, log_w), reply in zip(state["cases"].items(), replies):
        problem = reply_problem(reply, file)
        if problem:
            return GradeResult("iwae", rows, problem)
        K = log_w.shape[0]
        slips = {
            f"that is log-SUM-exp: it is log K = {math.log(K):.4f} too big; the bound averages the weights":
                reference_iwae(log_w) + math.log(K),
            "that is the mean of log w, the ELBO: the log goes outside the mean, log mean exp(log w)":
                np.mean(log_w, axis=0),
            "that is the max of log w: the shift was taken out but not put back into the sum":
                np.max(log_w, axis=0),
        }
        hint = "one bound per column (per example): reduce over axis 0, the K samples"
        row = _array_row(f"L_K {label}", reply.value, reference_iwae(log_w), slips, hint)
        if not row.passed and label in IWAE_WHY and ("NaN or inf" in row.message or "does not match" in row.message):
            row.message += IWAE_WHY[label] + ": subtract the max of each column before exp, and add it back after the log."
        rows.append(row)
    if all(r.passed for r in rows):
        rows += _iwae_properties(state, replies[len(state["cases"]):], file)
    return GradeResult("iwae", rows)


def _iwae_properties(state, replies, file) -> list:
    """L_1 equals the single log-weight (the ELBO's estimate), and E[L_k] rises with k towards log p(x)."""
    problem = _first_problem(replies, file)
    if problem:
        return [GradeRow("L_k on other shapes", None, False, f"with K = 1 or 2000 examples: {problem}", "")]
    l1, log_w1 = replies[0].value, state["log_w1"]
    ok1 = isinstance(l1, np.ndarray) and l1.shape == log_w1[0].shape and bool(
        np.allclose(l1, log_w1[0], rtol=0, atol=1e-12))
    rows = [GradeRow("L_1 = log w", float(np.max(np.abs(l1 - log_w1[0]))) if ok1 else None, ok1,
                     "" if ok1 else f"with K = 1 the bound must be the single log-weight: L_1 {kind_words(l1) if not isinstance(l1, np.ndarray) else 'differs from log w'}",
                     label="max gap")]
    means, ses = {}, {}
    for k, reply in zip(IWAE_KS, replies[1:]):
        lk = reply.value
        if not (isinstance(lk, np.ndarray) and lk.shape == (2000,) and np.all(np.isfinite(lk))):
            return rows + [GradeRow("L_k rises", None, False, f"with K = {k} and 2000 examples the answer "
                                    f"{kind_words(lk) if not isinstance(lk, np.ndarray) else f'has shape {lk.shape} or is not finite'}", "")]
        lk = lk.astype(np.float64)
        means[k], ses[k] = float(lk.mean()), float(lk.std() / math.sqrt(lk.size))
    noise = lambda a, b: 4 * math.hypot(ses[a], ses[b])  # noqa: E731 - 4 standard errors of a difference
    rising = all(means[b] - means[a] > -noise(a, b) for a, b in zip(IWAE_KS, IWAE_KS[1:])) and \
        means[IWAE_KS[-1]] - means[IWAE_KS[0]] > noise(IWAE_KS[0], IWAE_KS[-1])
    below = means[IWAE_KS[-1]] <= state["log_px"] + 4 * ses[IWAE_KS[-1]]
    table = ", ".join(f"L_{k} {means[k]:.4f}" for k in IWAE_KS)
    rows.append(GradeRow("L_k rises", None, rising and below,
                         f"E[L_k] over 2000 draws: {table}; log p(x) = {state['log_px']:.4f}"
                         + ("" if rising and below else ": it should rise with k (within 4 standard errors) and stay "
                                                         "below log p(x)"),
                         label=""))
    return rows


# --- 3b. the importance-weighted bound's gradient: self-normalized weights ---------------------

def reference_iwae_weights(log_w):
    """d L_K / d log_w[k] per column: the self-normalized weights w_k / sum_j w_j, computed stably."""
    w = np.exp(log_w - np.max(log_w, axis=0, keepdims=True))
    return w / np.sum(w, axis=0, keepdims=True)


def _numerical_iwae_weights(log_w) -> np.ndarray:
    """d L_K / d log_w by finite differences: the derivation's independent check. Each column's L_K
    depends on its own column only, so the gradient of their sum holds every column's."""
    shifted = log_w.copy()
    return numerical_gradient(lambda: float(np.sum(reference_iwae(shifted))), shifted)[0]


def _derivative(f, x0: float, h: float = 1e-4):
    """d f / d x at the scalar x0 for an array-valued f, by the library's 4-point stencil."""
    offsets, weights = STENCILS[4]
    return sum(w * f(x0 + o * h) for o, w in zip(offsets, weights)) / h


def _log_w_in_mu(m: SmallModel, eps):
    """log w_k as a function of q's mean, with z_k = mu + std eps_k (eps fixed)."""
    std = math.exp(0.5 * m.q_logvar)

    def log_w(mu):  # log q(z|x) at z = mu + std eps does not depend on mu
        z = mu + std * eps
        return m.log_px_given_z(z) + m.log_prior(z) - (-0.5 * (math.log(2 * math.pi) + m.q_logvar + eps ** 2))
    return log_w


def plan_iwae_gradient(rng):
    """The learner's d L_K / d log_w against finite differences of L_K, then at extreme log-weights,
    then used to follow the bound's gradient with respect to q's mean on an exactly known model."""
    moderate = rng.standard_normal((6, 4)) * 2 - 10
    cases = {"(finite diff.)": (moderate, _numerical_iwae_weights(moderate))}
    cases.update({label: (w, reference_iwae_weights(w)) for label, w in _extreme_cases(rng).items()})
    m = random_model(rng)
    log_w = _log_w_in_mu(m, rng.standard_normal((16, 8)))             # K = 16 draws for 8 repeats
    calls = [("iwae_weights", (w,)) for w, _ in cases.values()] + [("iwae_weights", (log_w(m.q_mean),))]
    dlog_w = _derivative(log_w, m.q_mean)                             # d log w_k / d mu, (K, B)
    numeric = _derivative(lambda mu: reference_iwae(log_w(mu)), m.q_mean)   # d L_16 / d mu, (B,)
    return calls, {"cases": cases, "dlog_w": dlog_w, "numeric": numeric}


def judge_iwae_gradient(state, replies, file) -> GradeResult:
    rows = []
    for (label, (log_w, want)), reply in zip(state["cases"].items(), replies):
        problem = reply_problem(reply, file)
        if problem:
            return GradeResult("iwae_gradient", rows, problem)
        K = log_w.shape[0]
        slips = {
            "gives every sample 1/K: that is the gradient of the ELBO's estimate, the mean of log w. "
            "L_K is the log of a mean: differentiate log sum_j exp(log w_j)":
                np.full_like(log_w, 1.0 / K),
            "is the weights w_k themselves (exp of log w, perhaps shifted): divide each column by its sum. "
            "d/da_k log sum_j exp(a_j) = exp(a_k) / sum_j exp(a_j)":
                np.exp(log_w - np.max(log_w, axis=0, keepdims=True)),
            "is K times too big: the 1/K of the mean drops out of the log's derivative":
                K * reference_iwae_weights(log_w),
            "is normalized over the examples (axis 1), not over the K samples of each example (axis 0)":
                reference_iwae_weights(log_w.T).T,
        }
        hint = "one weight per log-weight: the same (K, B) shape as log_w"
        row = _array_row(f"weights {label}", reply.value, want, slips, hint)
        if not row.passed and label != "(finite diff.)" and (
                "NaN or inf" in row.message or "does not match" in row.message):
            row.message += (f": at log-weights {label}, exp(log w) overflows or underflows; subtract each "
                            f"column's max before exp (the ratio w_k / sum_j w_j does not change)")
        rows.append(row)
    if all(r.passed for r in rows):
        rows += _iwae_gradient_in_mu(state, replies[-1], file)
    return GradeResult("iwae_gradient", rows, notes=(
        "weights (finite diff.) is your answer against finite differences of L_K itself, the derivation's "
        "check; the extreme rows against a stable reference"))


def _iwae_gradient_in_mu(state, reply, file) -> list:
    """grad_mu L_K = sum_k wtilde_k d log w_k / d mu: the learner's weights against finite differences
    of L_K in mu, and the ELBO's equal weights beside them."""
    dlog_w, numeric = state["dlog_w"], state["numeric"]
    weights = reply.value
    if reply.raised is not None or not (isinstance(weights, np.ndarray) and weights.shape == dlog_w.shape):
        return [GradeRow("grad_mu L_16", None, False, "with K = 16 and 8 examples the answer "
                         + (reply_problem(reply, file) or kind_words(weights) if not isinstance(weights, np.ndarray)
                            else f"has shape {weights.shape}, expected {dlog_w.shape}"), "")]
    weights = weights.astype(np.float64)
    yours = np.sum(weights * dlog_w, axis=0)
    err = float(np.max(np.abs(yours - numeric)) / np.max(np.abs(numeric)))
    elbo_weights = float(np.max(np.abs(np.mean(dlog_w, axis=0) - numeric)) / np.max(np.abs(numeric)))
    sums = float(np.max(np.abs(weights.sum(axis=0) - 1)))
    ok = bool(np.isfinite(err)) and err < 1e-8
    return [GradeRow("columns sum to 1", sums, sums < 1e-12, "" if sums < 1e-12 else
                     "each column of weights must sum to 1", "max gap"),
            GradeRow("grad_mu L_16", err, ok,
                     f"sum_k (your weight) d log w_k / d mu against finite differences of L_16 in q's mean"
                     f" (eps fixed): {err:.1e}; with the ELBO's equal weights 1/K instead: {elbo_weights:.2f}",
                     "error")]


# --- 4. the score-function estimator -----------------------------------------------------------

SCORE_DRAWS = 100_000
Z_LIMIT = 5.0  # standard errors: a right answer that is not the textbook's form fails 1 in 10^5 times


def score_f(z, kind: str, shift):
    """The two functions whose expectation is differentiated, (N, Z) -> (N,): "smooth" is
    sum_j sin(z_j) + shift; "step" counts the z_j above the thresholds ``shift``, a function with
    no derivative where it jumps and 0 everywhere else, so a pathwise gradient sees nothing."""
    if kind == "smooth":
        return np.sum(np.sin(z), axis=-1) + shift
    return np.sum(z > shift, axis=-1).astype(np.float64)


def true_gradient(kind: str, mu, logvar, shift):
    """d/dmu and d/dlogvar of E_{N(mu, exp(logvar))}[f], in closed form."""
    var, std = np.exp(logvar), np.exp(0.5 * logvar)
    if kind == "smooth":  # E[sin z] = sin(mu) exp(-var / 2)
        return np.cos(mu) * np.exp(-var / 2), -0.5 * var * np.sin(mu) * np.exp(-var / 2)
    u = (mu - shift) / std  # E[1(z > t)] = Phi(u); dPhi(u) = phi(u) du
    phi = np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    return phi / std, -0.5 * phi * u


def reference_score(f_z, z, mu, logvar):
    """Per-sample score-function estimates: f(z) * d log q(z) / d(mu, logvar)."""
    var = np.exp(logvar)
    return f_z[:, None] * (z - mu) / var, f_z[:, None] * 0.5 * ((z - mu) ** 2 / var - 1.0)


def plan_score(rng):
    calls, cases = [], []
    for kind in ("smooth", "step"):
        mu, logvar = rng.uniform(-0.5, 0.5, 2), np.log(rng.uniform(0.25, 2.0, 2))
        shift = rng.uniform(1.0, 4.0) if kind == "smooth" else mu + rng.uniform(-0.8, 0.8, 2)
        eps = rng.standard_normal((SCORE_DRAWS, 2))
        z = mu + np.exp(0.5 * logvar) * eps
        f_z = score_f(z, kind, shift)
        calls.append(("score_function_gradient", (f_z, z, mu, logvar)))
        cases.append({"kind": kind, "mu": mu, "logvar": logvar, "eps": eps, "z": z, "f_z": f_z,
                      "truth": true_gradient(kind, mu, logvar, shift)})
    return calls, cases


def _score_slips(c) -> list:
    """(message, (dmu, dlogvar)) of classic wrong estimators, from the same draws (None: not that part)."""
    z, mu, f_z = c["z"], c["mu"], c["f_z"]
    var, std = np.exp(c["logvar"]), np.exp(0.5 * c["logvar"])
    ref = reference_score(f_z, z, mu, c["logvar"])
    pathwise = ("that is the reparameterized (pathwise) estimator, the derivative of f, not f times the "
                "score. Here f is a step function: its derivative is 0 wherever it exists, so the pathwise "
                "gradient misses the whole effect of the jumps. The score function needs no derivative of f: "
                "f(z) times d log q(z) / d(mu, logvar)")
    slips = [
        ("the score of mu is (z - mu) / var: the division by the variance is missing", (f_z[:, None] * (z - mu), None)),
        ("(z - mu) / std: divide by the variance, exp(logvar), not the std", (f_z[:, None] * (z - mu) / std, None)),
        ("d log q / d logvar = 0.5 ((z - mu)^2 / var - 1): the -1 (from the normalizer) is missing",
         (None, f_z[:, None] * 0.5 * (z - mu) ** 2 / var)),
        ("a factor 2: d/dlogvar of -0.5 logvar - 0.5 (z - mu)^2 exp(-logvar) carries a 0.5", (None, 2 * ref[1])),
        ("the wrong sign: the score is the gradient of log q, which rises towards z", (-ref[0], -ref[1])),
    ]
    if c["kind"] == "step":
        slips += [(pathwise, (np.zeros_like(z), np.zeros_like(z))),
                  (pathwise.replace("the derivative of f", "the derivative of a sum of sines, cos(z)"),
                   (np.cos(z), np.cos(z) * 0.5 * std * c["eps"]))]
    return slips


def judge_score(cases, replies, file) -> GradeResult:
    per_case, n = [], SCORE_DRAWS
    for c, reply in zip(cases, replies):
        problem = reply_problem(reply, file)
        if problem:
            return GradeResult("score_function", [], problem)
        got = reply.value
        if not (isinstance(got, tuple) and len(got) == 2):
            return GradeResult("score_function", [], f"returned {kind_words(got) if not isinstance(got, tuple) else f'a tuple of {len(got)}'}; "
                                                     f"expected a tuple (dmu, dlogvar) of per-sample estimates, each (N, Z)")
        ref = reference_score(c["f_z"], c["z"], c["mu"], c["logvar"])
        rows = []
        for i, name in enumerate(("dmu", "dlogvar")):
            est = got[i]
            if not isinstance(est, np.ndarray) or est.shape != c["z"].shape:
                rows.append(GradeRow(name, None, False, f"{name} must be a NumPy array of shape {c['z'].shape} "
                                     f"(one estimate per sample): it {kind_words(est) if not isinstance(est, np.ndarray) else f'has shape {est.shape}'}"))
                continue
            if not np.all(np.isfinite(est)):
                rows.append(GradeRow(name, None, False, f"{name} contains NaN or inf"))
                continue
            est = est.astype(np.float64)
            if np.allclose(est, ref[i], rtol=1e-9, atol=1e-12):  # the textbook's per-sample estimate
                rows.append(GradeRow(name, 0.0, True, label="max |z-score|"))
                continue
            mean, se = est.mean(0), est.std(0) / math.sqrt(n)
            z_score = float(np.max(np.abs(mean - c["truth"][i]) / np.maximum(se, 1e-300)))
            ok = z_score < Z_LIMIT
            msg = "" if ok else f"{name} is biased: its mean is {z_score:.0f} standard errors from the true gradient"
            if not ok:
                for slip, pair in _score_slips(c):
                    if pair[i] is not None and np.allclose(est, pair[i], rtol=1e-6, atol=1e-9):
                        msg += f": {slip}"
                        break
            rows.append(GradeRow(name, z_score, ok, msg, "max |z-score|"))
        per_case.append(rows)
    rows = merge_instances(per_case)
    notes = ""
    if all(r.passed for r in rows):
        c, got = cases[0], replies[0].value
        std = np.exp(0.5 * c["logvar"])
        reparam = (np.cos(c["z"]), np.cos(c["z"]) * 0.5 * std * c["eps"])  # d f(mu + std eps) / d(mu, logvar)
        ratio = [float(np.mean(got[i].astype(np.float64).var(0) / reparam[i].var(0))) for i in range(2)]
        notes = (f"unbiased on a smooth f and on a step function ({n:,} fresh draws each). Variance of one "
                 f"estimate on the smooth f, score-function / reparameterized: {ratio[0]:.1f}x for mu, "
                 f"{ratio[1]:.1f}x for logvar")
    return GradeResult("score_function", rows, notes=notes)

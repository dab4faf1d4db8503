"""Grading the derivation exercises: the ELBO identity, the general Gaussian KL, the importance-weighted
bound and its gradient, and the score-function estimator, each checked by numbers.

Every derivation is checked against an independent computation: quadrature on a fine grid for a
one-dimensional latent (where log p(x) and the true posterior are exact), closed forms, or a
statistical test with a fixed seed. When an answer is wrong, the grader compares it with the
classic wrong answers (a sign slip in the KL, the log inside the integral, the KL the wrong way
round, std for variance, the 1/L or the log K of a mean) and names the one it matches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..bounds import logmeanexp
from ..gradcheck import STENCILS, numerical_gradient
from .backward import call_learner
from .result import GradeResult, GradeRow

VALUE_TOLERANCE = 1e-8  # |yours - reference| / max(1, |reference|)


# --- a model small enough to integrate exactly ---------------------------------------------------

@dataclass
class SmallModel:
    """A VAE with a 1-D latent and 4 binary pixels, and a fixed q(z|x) = N(q_mean, exp(q_logvar)).

    p(z) = N(0, 1);  p(x|z) = prod_d Bernoulli(x_d; sigmoid(w_d * tanh(z) * 3 + b_d)). The tanh makes
    the true posterior p(z|x) non-Gaussian, so q cannot match it and KL(q || p(z|x)) > 0.
    Functions of z take arrays of any shape. ``z`` is a grid on [-15, 15] fine enough that the
    trapezoid rule is exact to about 1e-12 for every integrand here; ``integral(values)`` applies it.
    """
    x: tuple = (1.0, 0.0, 1.0, 1.0)
    w: tuple = (1.2, -0.7, 0.4, 2.0)
    b: tuple = (0.3, 0.1, -0.5, 0.2)
    q_mean: float = 0.6
    q_logvar: float = math.log(0.3)

    def __post_init__(self):
        self.z = np.linspace(-15.0, 15.0, 30001)
        self.dz = float(self.z[1] - self.z[0])

    def integral(self, values) -> float:
        """The trapezoid rule of ``values`` (on ``self.z``) over z."""
        v = np.asarray(values, dtype=np.float64)
        return float(self.dz * (np.sum(v) - 0.5 * (v[0] + v[-1])))

    def log_px_given_z(self, z):
        z = np.asarray(z, dtype=np.float64)
        logits = np.multiply.outer(3 * np.tanh(z), np.array(self.w)) + np.array(self.b)
        x = np.array(self.x)
        return np.sum(x * logits - np.logaddexp(0.0, logits), axis=-1)

    def px_given_z(self, z):
        return np.exp(self.log_px_given_z(z))

    def log_prior(self, z):
        z = np.asarray(z, dtype=np.float64)
        return -0.5 * (math.log(2 * math.pi) + z * z)

    def prior(self, z):
        return np.exp(self.log_prior(z))

    def log_q(self, z):
        z = np.asarray(z, dtype=np.float64)
        return -0.5 * (math.log(2 * math.pi) + self.q_logvar + (z - self.q_mean) ** 2 / math.exp(self.q_logvar))

    def q(self, z):
        return np.exp(self.log_q(z))

    def E_q(self, f) -> float:
        """E_{q(z|x)}[f(z)] by quadrature (``f`` takes the grid)."""
        return self.integral(self.q(self.z) * f(self.z))

    # the exact answers, by quadrature: the derivation chains use them as terms
    def log_px(self) -> float:
        """log p(x) = log of the integral of p(x|z) p(z) over z, computed stably."""
        a = self.log_px_given_z(self.z) + self.log_prior(self.z)
        log_sum = float(logmeanexp(a)) + math.log(len(a))   # log of the sum, without overflow
        return log_sum + math.log(self.dz) + math.log1p(-0.5 * (math.exp(a[0] - log_sum) + math.exp(a[-1] - log_sum)))

    def log_post(self, z):
        """log p(z|x) = log p(x|z) + log p(z) - log p(x) (Bayes)."""
        return self.log_px_given_z(z) + self.log_prior(z) - self.log_px()

    def kl_q_prior(self) -> float:
        """KL(q(z|x) || p(z)) in closed form."""
        var = math.exp(self.q_logvar)
        return 0.5 * (var + self.q_mean ** 2 - 1.0 - self.q_logvar)


def _value_row(name, got, want, variants: dict) -> GradeRow:
    """A row comparing a learner's number with the reference; names a matching classic slip."""
    if got is None:
        return GradeRow(name, None, False, f"{name} is None: write the code between START OF YOUR CODE and "
                                           f"END OF YOUR CODE.")
    try:
        value = float(got)
    except (TypeError, ValueError):
        return GradeRow(name, None, False, f"{name} returned {type(got).__name__}; expected one number (a float)")
    if not math.isfinite(value):
        return GradeRow(name, None, False, f"{name} is {value}: NaN or inf (an exp that overflowed, a log of 0?)")
    err = abs(value - want) / max(1.0, abs(want))
    if getattr(got, "dtype", None) == np.float32:  # blame the row that lost the digits, not a later one
        return GradeRow(name, err, False, f"{name} is a float32 number ({value:.10g}): compute it in "
                                          f"float64. float32 keeps about 7 digits, and a small quantity "
                                          f"computed from it (the KL) inherits the error many times over", "error")
    if err < VALUE_TOLERANCE:
        return GradeRow(name, err, True, label="error")
    for slip, v in variants.items():
        if abs(value - v) / max(1.0, abs(v)) < 1e-6:
            return GradeRow(name, err, False, f"{name} = {value:.10g}, expected {want:.10g}: {slip}", "error")
    if err < 1e-3:
        return GradeRow(name, err, False, f"{name} = {value:.10g}, expected {want:.10g}: close (relative "
                                          f"error {err:.1e}) but not within {VALUE_TOLERANCE:g}: a value "
                                          f"rounded to float32 somewhere, or a coarser grid than the model's?", "error")
    return GradeRow(name, err, False, f"{name} = {value:.10g}, expected {want:.10g}", "error")


# --- 1. the ELBO identity --------------------------------------------------------------------------

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


def grade_elbo_identity(functions: dict) -> GradeResult:
    """``functions`` = {"log_px": f(model), "elbo": f(model), "kl_to_posterior": f(model)}."""
    m = SmallModel()
    ref, slips = reference_elbo_identity(m), _elbo_identity_slips(m)
    rows, values = [], {}
    for name in ("log_px", "elbo", "kl_to_posterior"):
        got, problem = call_learner(functions[name], {}, m)
        if problem:
            rows.append(GradeRow(name, None, False, f"{name} {problem}"))
            continue
        rows.append(_value_row(name, got, ref[name], slips[name]))
        values[name] = got
    if len(values) == 3 and all(isinstance(v, (int, float, np.floating)) for v in values.values()):
        gap = float(values["log_px"]) - float(values["elbo"]) - float(values["kl_to_posterior"])
        ok = math.isfinite(gap) and abs(gap) < VALUE_TOLERANCE
        rows.append(GradeRow("identity", abs(gap), ok, "" if ok else
                             f"log p(x) - ELBO - KL(q || p(z|x)) = {gap:.3g}, not 0", "|gap|"))
    return GradeResult("elbo_identity", rows, notes=(
        f"reference: log p(x) = {ref['log_px']:.10f}, ELBO = {ref['elbo']:.10f}, "
        f"KL(q || p(z|x)) = {ref['kl_to_posterior']:.10f}"))


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


def grade_kl(fn) -> GradeResult:
    g = np.random.default_rng(0)
    mu_q, mu_p = g.standard_normal((5, 4)), g.standard_normal((5, 4))
    logvar_q, logvar_p = 0.8 * g.standard_normal((5, 4)), 0.8 * g.standard_normal((5, 4))
    args = (mu_q, logvar_q, mu_p, logvar_p)
    want = _kl_by_quadrature(*args)
    # Monte Carlo, for the notes: 100k draws from q per row
    eps = g.standard_normal((100_000, 5, 4))
    zs = mu_q + np.exp(0.5 * logvar_q) * eps
    log_ratio = np.sum(-0.5 * (logvar_q + eps ** 2) + 0.5 * (logvar_p + (zs - mu_p) ** 2 / np.exp(logvar_p)), -1)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(eps))
    notes = (f"checked against quadrature (40001 points per dimension); Monte Carlo, 100k draws: row 0 "
             f"{mc[0]:.4f} +- {se[0]:.4f} (quadrature {want[0]:.6f})")
    got, problem = call_learner(fn, {}, *args)
    if problem:
        return GradeResult("kl_general", [], problem, notes=notes)
    slips = {
        "that is KL(p || q), the wrong way round: the expectation is under q, the first argument":
            reference_kl(mu_p, logvar_p, mu_q, logvar_q),
        "that is KL(q || N(0, I)): this exercise is the general p = N(mu_p, exp(logvar_p))":
            reference_kl(mu_q, logvar_q, 0 * mu_p, 0 * logvar_p),
        "exp(0.5 * logvar) is the std; the formula needs the variance exp(logvar)":
            0.5 * np.sum(0.5 * logvar_p - 0.5 * logvar_q + (np.exp(0.5 * logvar_q) + (mu_q - mu_p) ** 2)
                         / np.exp(0.5 * logvar_p) - 1.0, axis=-1),
        "a factor 2: the 0.5 in front is missing": 2 * reference_kl(*args),
        "the -1 per dimension is missing (it makes KL(q || q) = 0)": reference_kl(*args) + 0.5 * 4,
        "the squared mean difference is not divided by p's variance": reference_kl(*args) + 0.5 * np.sum(
            (mu_q - mu_p) ** 2 * (1 - 1 / np.exp(logvar_p)), -1),
        "the log-variance ratio has the wrong sign (logvar_q - logvar_p)": reference_kl(*args) + np.sum(
            logvar_q - logvar_p, -1),
    }
    return GradeResult("kl_general", [_array_row("kl", got, want, slips,
                                                 "sum over the latent dimensions: one KL per row")], notes=notes)


def _array_row(name, got, want, slips: dict, shape_hint: str) -> GradeRow:
    if got is None:
        return GradeRow(name, None, False, f"{name} is None: write the code between START OF YOUR CODE and END OF YOUR CODE.")
    if not isinstance(got, np.ndarray) or isinstance(got, np.matrix):
        return GradeRow(name, None, False, f"{name} is a {type(got).__name__}, not a NumPy array")
    if got.shape != want.shape:
        return GradeRow(name, None, False, f"{name} has shape {got.shape}, expected {want.shape}: {shape_hint}")
    if not np.all(np.isfinite(got)):
        return GradeRow(name, None, False, f"{name} contains NaN or inf: an exp that overflowed, or a log of 0?")
    err = float(np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want))))
    if err < VALUE_TOLERANCE:
        return GradeRow(name, err, True, label="error")
    for slip, v in slips.items():
        if np.allclose(got, v, rtol=1e-6, atol=1e-9):
            return GradeRow(name, err, False, f"{name} {slip}", "error")
    return GradeRow(name, err, False, f"{name} does not match the reference", "error")


# --- 3. the importance-weighted bound ------------------------------------------------------------

def reference_iwae(log_w):
    """L_K per column: log mean_k exp(log_w[k]), the library's stable logmeanexp."""
    return logmeanexp(log_w, axis=0)


def grade_iwae(fn) -> GradeResult:
    g = np.random.default_rng(0)
    rows = []
    cases = {"moderate": g.standard_normal((7, 5)) * 3 - 10,
             "near +1e4": g.standard_normal((7, 5)) * 5 + 1e4,
             "near -1e4": g.standard_normal((7, 5)) * 5 - 1e4,
             # a column whose weights spread by far more than 709 (exp's range): shifting by its
             # minimum overflows, only its maximum works
             "spread 3000": g.uniform(-1500, 1500, (7, 5)),
             # columns on very different scales: one shift for all of them underflows the low ones
             "mixed scales": g.standard_normal((7, 5)) + np.array([1e4, 0.0, -1e4, 5e3, -5e3])}
    for label, log_w in cases.items():
        K = log_w.shape[0]
        got, problem = call_learner(fn, {}, log_w.copy())
        if problem:
            return GradeResult("iwae", rows, problem)
        slips = {
            f"that is log-SUM-exp: it is log K = {math.log(K):.4f} too big; the bound averages the weights":
                reference_iwae(log_w) + math.log(K),
            "that is the mean of log w, the ELBO: the log goes outside the mean, log mean exp(log w)":
                np.mean(log_w, axis=0),
            "that is the max of log w: the shift was taken out but not put back into the sum":
                np.max(log_w, axis=0),
        }
        hint = "one bound per column (per example): reduce over axis 0, the K samples"
        row = _array_row(f"L_K {label}", got, reference_iwae(log_w), slips, hint)
        why = {"near +1e4": " exp(1e4) overflows to inf",
               "near -1e4": " exp(-1e4) underflows to 0, and log(0) = -inf",
               "spread 3000": " this column's weights spread by 3000: shifted by anything but its "
                              "maximum, some exp overflows",
               "mixed scales": " the columns sit near +1e4, 0 and -1e4: shifted by one number for all "
                               "columns, the low ones underflow to exp(-1e4) = 0"}
        if not row.passed and label in why and ("NaN or inf" in row.message or "does not match" in row.message):
            row.message += why[label] + ": subtract the max of each column before exp, and add it back after the log."
        rows.append(row)
    if all(r.passed for r in rows):
        rows += _iwae_properties(fn)
    return GradeResult("iwae", rows)


def _iwae_properties(fn) -> list:
    """L_1 equals the single log-weight (the ELBO's estimate), and E[L_k] rises with k towards log p(x)."""
    m = SmallModel()
    g = np.random.default_rng(1)
    std = math.exp(0.5 * m.q_logvar)
    log_w1 = g.standard_normal((1, 6))
    l1 = np.asarray(fn(log_w1.copy()))
    rows = [GradeRow("L_1 = log w", float(np.max(np.abs(l1 - log_w1[0]))),
                     bool(np.allclose(l1, log_w1[0], rtol=0, atol=1e-12)), label="max gap")]
    means, ses = {}, {}
    for k in (1, 4, 16, 64, 256):
        z = m.q_mean + std * g.standard_normal((k, 2000))
        log_w = m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z)          # (k, 2000)
        lk = np.asarray(fn(log_w), dtype=np.float64)
        means[k], ses[k] = float(lk.mean()), float(lk.std() / math.sqrt(lk.size))
    ks = sorted(means)
    rising = all(means[a] < means[b] for a, b in zip(ks, ks[1:]))
    below = means[ks[-1]] <= m.log_px() + 4 * ses[ks[-1]]
    table = ", ".join(f"L_{k} {means[k]:.4f}" for k in ks)
    rows.append(GradeRow("L_k rises", None, rising and below,
                         f"E[L_k] over 2000 draws: {table}; log p(x) = {m.log_px():.4f}"
                         + ("" if rising and below else ": it should rise with k and stay below log p(x)"),
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


def grade_iwae_gradient(fn) -> GradeResult:
    """The learner's d L_K / d log_w against finite differences of L_K, then at extreme log-weights,
    then used to follow the bound's gradient with respect to q's mean on an exactly known model."""
    g = np.random.default_rng(2)
    moderate = g.standard_normal((6, 4)) * 2 - 10
    cases = {"(finite diff.)": (moderate, _numerical_iwae_weights(moderate)),
             "near +1e4": (g.standard_normal((7, 5)) * 5 + 1e4, None),
             "near -1e4": (g.standard_normal((7, 5)) * 5 - 1e4, None),
             "spread 3000": (g.uniform(-1500, 1500, (7, 5)), None),
             "mixed scales": (g.standard_normal((7, 5)) + np.array([1e4, 0.0, -1e4, 5e3, -5e3]), None)}
    rows = []
    for label, (log_w, want) in cases.items():
        want = reference_iwae_weights(log_w) if want is None else want
        got, problem = call_learner(fn, {}, log_w.copy())
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
        row = _array_row(f"weights {label}", got, want, slips, hint)
        if not row.passed and label != "(finite diff.)" and (
                "NaN or inf" in row.message or "does not match" in row.message):
            row.message += (f": at log-weights {label}, exp(log w) overflows or underflows; subtract each "
                            f"column's max before exp (the ratio w_k / sum_j w_j does not change)")
        rows.append(row)
    if all(r.passed for r in rows):
        rows += _iwae_gradient_in_mu(fn)
    return GradeResult("iwae_gradient", rows, notes=(
        "weights (finite diff.) is your answer against finite differences of L_K itself, the derivation's "
        "check; the extreme rows against a stable reference"))


def _iwae_gradient_in_mu(fn) -> list:
    """grad_mu L_K = sum_k wtilde_k d log w_k / d mu with z_k = mu + sigma eps_k (eps fixed): the learner's
    weights against finite differences of L_K in mu, and the ELBO's equal weights beside them."""
    m = SmallModel()
    std = math.exp(0.5 * m.q_logvar)
    eps = np.random.default_rng(3).standard_normal((16, 8))          # K = 16 draws for 8 repeats

    def log_w(mu):
        z = mu + std * eps   # log q(z|x) at z = mu + std eps does not depend on mu
        return m.log_px_given_z(z) + m.log_prior(z) - (-0.5 * (math.log(2 * math.pi) + m.q_logvar + eps ** 2))

    dlog_w = _derivative(log_w, m.q_mean)                             # d log w_k / d mu, (K, B)
    weights = np.asarray(fn(log_w(m.q_mean)), dtype=np.float64)
    yours = np.sum(weights * dlog_w, axis=0)
    numeric = _derivative(lambda mu: reference_iwae(log_w(mu)), m.q_mean)   # d L_16 / d mu, (B,)
    err = float(np.max(np.abs(yours - numeric)) / np.max(np.abs(numeric)))
    elbo_weights = float(np.max(np.abs(np.mean(dlog_w, axis=0) - numeric)) / np.max(np.abs(numeric)))
    sums = float(np.max(np.abs(weights.sum(axis=0) - 1)))
    return [GradeRow("columns sum to 1", sums, sums < 1e-12, "" if sums < 1e-12 else
                     "each column of weights must sum to 1", "max gap"),
            GradeRow("grad_mu L_16", err, err < 1e-8,
                     f"sum_k (your weight) d log w_k / d mu against finite differences of L_16 in q's mean"
                     f" (eps fixed): {err:.1e}; with the ELBO's equal weights 1/K instead: {elbo_weights:.2f}",
                     "error")]


# --- 4. the score-function estimator -----------------------------------------------------------

SCORE_MU = np.array([0.3, -0.5])
SCORE_LOGVAR = np.log(np.array([0.25, 2.0]))


def score_f(z):
    """The function whose expectation is differentiated: f(z) = sum_j sin(z_j) + 3, (N, Z) -> (N,)."""
    return np.sum(np.sin(z), axis=-1) + 3.0


def true_gradient():
    """d/dmu and d/dlogvar of E_{N(mu, exp(logvar))}[f]: E[sin z] = sin(mu) exp(-var / 2)."""
    var = np.exp(SCORE_LOGVAR)
    return (np.cos(SCORE_MU) * np.exp(-var / 2),
            -0.5 * var * np.sin(SCORE_MU) * np.exp(-var / 2))


def reference_score(f_z, z, mu, logvar):
    """Per-sample score-function estimates: f(z) * d log q(z) / d(mu, logvar)."""
    var = np.exp(logvar)
    return f_z[:, None] * (z - mu) / var, f_z[:, None] * 0.5 * ((z - mu) ** 2 / var - 1.0)


def grade_score_function(fn, n: int = 200_000) -> GradeResult:
    g = np.random.default_rng(0)
    eps = g.standard_normal((n, 2))
    z = SCORE_MU + np.exp(0.5 * SCORE_LOGVAR) * eps
    f_z = score_f(z)
    got, problem = call_learner(fn, {}, f_z.copy(), z.copy(), SCORE_MU.copy(), SCORE_LOGVAR.copy())
    if problem:
        return GradeResult("score_function", [], problem)
    if not (isinstance(got, tuple) and len(got) == 2):
        return GradeResult("score_function", [], f"returned {type(got).__name__}; expected a tuple "
                                                 f"(dmu, dlogvar) of per-sample estimates, each (N, Z)")
    var, std = np.exp(SCORE_LOGVAR), np.exp(0.5 * SCORE_LOGVAR)
    ref = reference_score(f_z, z, SCORE_MU, SCORE_LOGVAR)
    slips = [  # (dmu, dlogvar) of classic wrong estimators, from the same draws
        ("the score of mu is (z - mu) / var: the division by the variance is missing",
         (f_z[:, None] * (z - SCORE_MU), None)),
        ("(z - mu) / std: divide by the variance, exp(logvar), not the std",
         (f_z[:, None] * (z - SCORE_MU) / std, None)),
        ("d log q / d logvar = 0.5 ((z - mu)^2 / var - 1): the -1 (from the normalizer) is missing",
         (None, f_z[:, None] * 0.5 * (z - SCORE_MU) ** 2 / var)),
        ("a factor 2: d/dlogvar of -0.5 logvar - 0.5 (z - mu)^2 exp(-logvar) carries a 0.5",
         (None, 2 * ref[1])),
        ("the wrong sign: the score is the gradient of log q, which rises towards z",
         (-ref[0], -ref[1])),
        ("that is the reparameterized estimator's derivative of f, not f times the score",
         (np.cos(z), None)),
    ]
    truth = true_gradient()
    rows = []
    for i, name in enumerate(("dmu", "dlogvar")):
        est = got[i]
        if est is None:
            rows.append(GradeRow(name, None, False, f"{name} is None: write the code between START OF YOUR "
                                                   f"CODE and END OF YOUR CODE."))
            continue
        if not isinstance(est, np.ndarray) or est.shape != z.shape:
            rows.append(GradeRow(name, None, False, f"{name} must be a NumPy array of shape {z.shape} "
                                 f"(one estimate per sample), got {getattr(est, 'shape', type(est).__name__)}"))
            continue
        if not np.all(np.isfinite(est)):
            rows.append(GradeRow(name, None, False, f"{name} contains NaN or inf"))
            continue
        mean, se = est.mean(0), est.std(0) / math.sqrt(n)
        z_score = float(np.max(np.abs(mean - truth[i]) / se))
        ok = z_score < 4.0
        msg = "" if ok else (f"{name}: mean {np.round(mean, 4)} +- {np.round(se, 4)}, true gradient "
                             f"{np.round(truth[i], 4)}: biased")
        if not ok:
            for slip, pair in slips:
                if pair[i] is not None and np.allclose(est, pair[i], rtol=1e-6, atol=1e-9):
                    msg += f": {slip}"
                    break
        rows.append(GradeRow(name, z_score, ok, msg, "max |z-score|"))
    notes = ""
    if all(r.passed for r in rows):
        reparam = (np.cos(z), np.cos(z) * 0.5 * std * eps)  # d f(mu + std eps) / d(mu, logvar)
        ratio = [float(np.mean(got[i].var(0) / reparam[i].var(0))) for i in range(2)]
        notes = (f"unbiased at 4 standard errors ({n:,} draws, seed 0). Variance of one estimate, "
                 f"score-function / reparameterized: {ratio[0]:.1f}x for mu, {ratio[1]:.1f}x for logvar")
    return GradeResult("score_function", rows, notes=notes)

"""Grading the backward-pass exercises: a learner's gradient against centred finite differences.

The grader runs the library's forward pass on fixed float64 inputs, calls the learner's backward
with a fixed, nonconstant upstream gradient, and compares every gradient with the numerical one at
the library's bar (max|analytic - numeric| / max|numeric| < 1e-8). A wrong answer gets a diagnosis
of how it relates to the right one, and the hint for that gradient. Sizes are chosen so that the
usual slips give distinct factors: L = 3 samples, B = 5 examples, and the 1/2 of std versus
variance, so "off by 1/3" (the mean over samples) can never be mistaken for "off by 1/2".
"""

from __future__ import annotations

import copy
import dataclasses
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import distributions as D
from .. import layers
from ..config import VAEConfig
from ..gradcheck import TOLERANCE, numerical_gradient, rel_error
from ..vae import backward as vae_backward_reference
from ..vae import forward as vae_forward
from ..vae import init_params
from .result import GradeResult, GradeRow

L, B = 3, 5  # samples and examples in every graded input: 1/L, 1/B and 1/2 are distinct factors
FACTORS = {
    2.0: "a factor 2 too big: a missing 1/2 (std versus variance, the 0.5 in the KL or the Gaussian)?",
    0.5: "a factor 1/2: an extra 0.5 (std versus variance, the 0.5 in the KL or the Gaussian)?",
    float(L): f"a factor L = {L} too big: summed over the L samples where the loss averages them (the 1/L)?",
    1 / L: f"a factor 1/L = 1/{L}: averaged over the L samples where each sample's gradient adds up?",
    float(B): f"a factor B = {B} too big: summed over the batch where the loss averages it (the 1/B)?",
    1 / B: f"a factor 1/B = 1/{B}: divided by the batch size where the upstream gradient already has it?",
    -1.0: "the wrong sign everywhere.",
}


@dataclass
class Exercise:
    """A backward-pass exercise: its file, the function the learner writes, and how to check it."""
    name: str
    function: str
    forward: object          # forward(**inputs) -> (out, cache)
    inputs: object           # rng -> dict of float64 arrays
    wrt: tuple               # the inputs the backward returns gradients for, in order
    hints: dict = field(default_factory=dict)   # gradient name -> hint shown when it fails
    reference: str = ""      # where the library implements it


def _r(rng, *shape):
    return rng.standard_normal(shape)


EXERCISES = {e.name: e for e in [
    Exercise("linear", "linear_backward", layers.linear_forward,
             lambda g: {"x": _r(g, B, 4), "W": _r(g, 4, 3), "b": _r(g, 3)}, ("x", "W", "b"),
             {"x": "y = x @ W + b: which matrix multiplies dy, and from which side, gives shape (N, D)?",
              "W": "dW must have W's shape (D, M); only one product of x and dy does.",
              "b": "b is added to every row of y: its gradient collects dy from every row."},
             "minivae/layers.py: linear_backward"),
    Exercise("tanh", "tanh_backward", layers.tanh_forward, lambda g: {"a": 2 * _r(g, B, 6)}, ("a",),
             {"a": "d tanh(a)/da is written with h = tanh(a) itself; check the power of h."},
             "minivae/layers.py: tanh_backward"),
    Exercise("softplus", "softplus_backward", layers.softplus_forward, lambda g: {"a": 3 * _r(g, B, 6)},
             ("a",),
             {"a": "d/da log(1 + exp(a)) = exp(a) / (1 + exp(a)): which named function is that, at a or at -a?"},
             "minivae/layers.py: softplus_backward"),
    Exercise("reparameterize", "reparameterize_backward", D.reparameterize_forward,
             lambda g: {"mu": _r(g, B, 4), "logvar": _r(g, B, 4), "eps": _r(g, L, B, 4)}, ("mu", "logvar"),
             {"mu": "mu is used by all L samples: its gradient has shape (B, Z), collecting every sample's.",
              "logvar": "std = exp(0.5 * logvar), not exp(logvar): differentiate the exponent's factor too."},
             "minivae/distributions.py: reparameterize_backward"),
    Exercise("kl", "gaussian_kl_backward", D.gaussian_kl_forward,
             lambda g: {"mu": _r(g, B, 4), "logvar": _r(g, B, 4)}, ("mu", "logvar"),
             {"mu": "KL = 0.5 * sum(exp(logvar) + mu^2 - 1 - logvar): mind the 0.5 and the upstream dkl.",
              "logvar": "d/dlogvar of exp(logvar) - logvar, times the 0.5 in front; check the sign."},
             "minivae/distributions.py: gaussian_kl_backward"),
    Exercise("bernoulli", "bernoulli_log_prob_backward", D.bernoulli_log_prob_forward,
             lambda g: {"x": g.random((B, 6)), "logits": 3 * _r(g, L, B, 6)}, ("logits",),
             {"logits": "log p = x * logits - softplus(logits); the derivative of softplus is a sigmoid. "
                        "Which way round is the difference?"},
             "minivae/distributions.py: bernoulli_log_prob_backward"),
    Exercise("gaussian", "gaussian_log_prob_backward", D.gaussian_log_prob_forward,
             lambda g: {"x": g.random((B, 6)), "mean": _r(g, L, B, 6), "logvar": _r(g, L, B, 6)},
             ("mean", "logvar"),
             {"mean": "-(x - mean)^2 / (2 var): differentiate with respect to mean, not x; var = exp(logvar).",
              "logvar": "Two terms depend on logvar: 0.5 * logvar and 0.5 * (x - mean)^2 * exp(-logvar)."},
             "minivae/distributions.py: gaussian_log_prob_backward"),
    Exercise("vae", "vae_backward", None, None, (), {}, "minivae/vae.py: backward"),
]}

VAE_CFG = VAEConfig(x_dim=5, hidden=(4,), z_dim=2, n_samples=L)
# The VAE's parameters in the order the backward pass reaches them, and what each block is.
VAE_BLOCKS = [
    ("likelihood head", ("dec.W_out", "dec.b_out"),
     "the likelihood's gradient with respect to the logits (bernoulli_log_prob_backward with "
     "dlogp = -1/(L B) for every sample), then the output layer's linear_backward."),
    ("decoder trunk", ("dec.W0", "dec.b0"),
     "the decoder's tanh_backward and linear_backward, fed the output layer's dh."),
    ("encoder heads (reparameterization and KL)", ("enc.W_mu", "enc.b_mu", "enc.W_logvar", "enc.b_logvar"),
     "dz (reshaped to (L, B, Z)) through reparameterize_backward, plus the KL's gradient with dkl = "
     "1/B: mu and logvar feed both, so their gradients add (+=)."),
    ("encoder trunk", ("enc.W0", "enc.b0"),
     "h feeds both heads: dh = dh_mu + dh_logvar, then tanh_backward and linear_backward."),
]


def diagnose(analytic, numeric, unit=None) -> str:
    """How a wrong gradient relates to the right one (``numeric``), without giving the answer.

    ``unit``, if given, is the right gradient for an upstream gradient of ones: matching it means
    the chain rule's upstream factor was left out.
    """
    if analytic is None:
        return "is None: write the code between START OF YOUR CODE and END OF YOUR CODE."
    if isinstance(analytic, (list, tuple)):
        return f"is a {type(analytic).__name__}, not an array: build it with NumPy operations."
    shape = getattr(analytic, "shape", None)
    if shape is None:
        return f"is a {type(analytic).__name__}, not an array."
    want = numeric.shape
    if tuple(shape) != tuple(want):
        if len(shape) == 2 and tuple(shape) == tuple(want)[::-1]:
            return f"has shape {tuple(shape)}, expected {tuple(want)}: transposed? Check the order of the product."
        return (f"has shape {tuple(shape)}, expected {tuple(want)}: summed over the wrong axis, or not "
                f"summed where a value is used many times (broadcast)?")
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = numeric.ravel()
    if not np.all(np.isfinite(a)):
        return "contains NaN or inf."
    if unit is not None and rel_error(a, unit.ravel()) < 1e-6:
        return ("is the right gradient for an upstream gradient of 1: multiply by the upstream "
                "gradient (the chain rule), the part that is missing.")
    err = rel_error(a, n)
    if err < 1e-3:  # right to a few digits: a precision or a small term, never "a factor"
        if getattr(analytic, "dtype", None) == np.float32:
            return (f"is float32, right to {err:.1e} relative but not to the bar of 1e-8: compute in "
                    f"float64 (an array made with dtype=np.float32, or .astype(np.float32)?).")
        return (f"is close (relative error {err:.1e}) but not within the bar of 1e-8: a small term "
                f"missing, a rounded constant (3.14 for pi?), or a step done in float32?")
    nn = float(n @ n)
    if nn > 0:
        s = float(a @ n) / nn
        if np.max(np.abs(a - s * n)) <= 1e-6 * np.max(np.abs(n)):
            for factor, meaning in FACTORS.items():
                if abs(s - factor) < 1e-6 * abs(factor):
                    return f"is {s:.4g} times the right gradient: {meaning}"
            return f"is {s:.4g} times the right gradient everywhere: a constant factor is off."
    return "does not match the numerical gradient."


def rows_for(analytic: dict, numeric: dict, hints: dict, units: dict | None = None) -> list:
    """One GradeRow per gradient; ``units`` maps a name to a function giving its dout = 1 gradient."""
    rows = []
    for name, num in numeric.items():
        a = analytic.get(name)
        arrayish = isinstance(a, np.ndarray) or (hasattr(a, "shape") and not isinstance(a, (list, tuple)))
        ok_shape = arrayish and tuple(a.shape) == tuple(num.shape)
        err = rel_error(np.asarray(a, dtype=np.float64), num) if ok_shape else None
        passed = err is not None and bool(np.isfinite(err)) and err < TOLERANCE
        msg = ""
        if not passed:
            unit = units[name]() if units and ok_shape and np.all(np.isfinite(np.asarray(a, float))) else None
            msg = f"d{name} {diagnose(a, num, unit)}" + (f" Hint: {hints[name]}" if name in hints else "")
        rows.append(GradeRow(f"d{name}", err, passed, msg))
    return rows


_ASSIGNED = re.compile(r"^\s*d(\w+)\b[^=]*?[+\-*/]?=(?!=)")


def call_learner(fn, hints: dict, *args):
    """``(result, "")``, or ``(None, problem)`` when the learner's code raised: the problem names the
    exception and the line, with the hint of the gradient that line computes (``dW = ...``)."""
    try:
        return fn(*args), ""
    except Exception as e:  # a learner's bug is a failure to report, never a crash
        frames = traceback.extract_tb(e.__traceback__)
        tb = frames[-1]
        learner = [f for f in frames if Path(f.filename).resolve() == Path(fn.__code__.co_filename).resolve()] \
            if hasattr(fn, "__code__") else []
        if not learner and isinstance(e, TypeError) and hasattr(fn, "__code__"):  # never entered: its signature
            code = fn.__code__
            given = ", ".join(code.co_varnames[:code.co_argcount])
            return None, (f"could not be called with {len(args)} argument(s): {e}. It is defined as "
                          f"{fn.__name__}({given}) at line {code.co_firstlineno} of "
                          f"{Path(code.co_filename).name}; keep the signature the exercise gives.")
        at = learner[-1] if learner else tb
        problem = f"raised {type(e).__name__}: {e} (line {at.lineno} of {Path(at.filename).name})"
        match = _ASSIGNED.match(at.line or "")
        if match and match.group(1) in hints:
            problem += f" Hint for d{match.group(1)}: {hints[match.group(1)]}"
        return None, problem


def grade(name: str, backward) -> GradeResult:
    """Grade a learner's backward function for backward-pass exercise ``name``."""
    if name == "vae":
        return _grade_vae(backward)
    ex = EXERCISES[name]
    inputs = ex.inputs(np.random.default_rng(0))
    out, cache = ex.forward(**inputs)
    dout = np.cos(3.0 * out + 1.0)  # fixed, nonconstant upstream gradient
    given = copy.deepcopy((dout, cache))  # the learner works on copies; the reference on the originals
    got, problem = call_learner(backward, ex.hints, *given)
    if problem:
        return GradeResult(name, [], problem)
    changed = _changed_in_place(("dout", "cache"), (dout, cache), given)
    got = got if isinstance(got, tuple) else (got,)
    if len(got) != len(ex.wrt):
        return GradeResult(name, [], f"returned {len(got)} value(s); expected {len(ex.wrt)}: "
                                     f"gradients of {', '.join(ex.wrt)} in that order")

    def numeric_for(upstream, key):
        f = lambda: float(np.sum(ex.forward(**inputs)[0] * upstream))  # noqa: E731
        return numerical_gradient(f, inputs[key])[0]

    numeric = {k: numeric_for(dout, k) for k in ex.wrt}
    units = {k: (lambda k=k: numeric_for(np.ones_like(out), k)) for k in ex.wrt}
    rows = rows_for(dict(zip(ex.wrt, got)), numeric, ex.hints, units)
    if changed:
        rows.append(_in_place_row(backward, changed))
    if name in LARGE_INPUTS and all(r.passed for r in rows):
        rows.append(_large_input_row(ex, backward))
    return GradeResult(name, rows)


def _changed_in_place(names, originals, given) -> list[str]:
    """The names of the arguments (or their parts) the learner's code wrote into."""
    def same(a, b):
        if isinstance(a, np.ndarray):
            return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
        if isinstance(a, (tuple, list)):
            return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(same, a, b))
        return True
    return [n for n, a, b in zip(names, originals, given) if not same(a, b)]


def _in_place_row(fn, changed) -> GradeRow:
    return GradeRow("inputs", None, False,
                    f"{getattr(fn, '__name__', 'your function')} wrote into its input {' and '.join(changed)} "
                    f"in place (e.g. `da = dh; da *= ...` changes the caller's dh: an alias, not a copy). "
                    f"Other layers read the same arrays, so a backward pass must leave them as it got "
                    f"them: compute into a new array, da = dh * (...).", label="")


# Inputs far out in the tails, where a naive formula overflows: exp(800) is inf in float64.
LARGE_INPUTS = {"softplus": {"a": np.array([[-800.0, -40.0, 0.0, 40.0, 800.0]])},
                "bernoulli": {"x": np.array([[0.0, 1.0, 0.5, 1.0, 0.0]]),
                              "logits": np.array([[[-800.0, -40.0, 0.0, 40.0, 800.0]]])}}


def _large_input_row(ex: Exercise, fn) -> GradeRow:
    """The learner's backward at inputs of +-800, against the library's (which is stable there)."""
    inputs = LARGE_INPUTS[ex.name]
    out, cache = ex.forward(**inputs)
    dout = np.ones_like(out)
    got, problem = call_learner(fn, ex.hints, dout.copy(), copy.deepcopy(cache))
    want = getattr(layers if ex.name == "softplus" else D, ex.function)(dout, cache)
    got, want = (got if isinstance(got, tuple) else (got,)), (want if isinstance(want, tuple) else (want,))
    ok = not problem and all(np.shape(g) == np.shape(w) and np.all(np.isfinite(np.asarray(g, float)))
                             and np.allclose(g, w, rtol=1e-12, atol=0) for g, w in zip(got, want))
    return GradeRow("inputs +-800", None, ok, "" if ok else
                    f"at inputs of -800 ... 800 the result is {problem or np.asarray(got[-1]).ravel()}: "
                    f"exp(800) overflows to inf (and inf/inf is NaN). Write it with a function that "
                    f"never exponentiates a large positive number: sigmoid as the library writes it, or "
                    f"exp(-|a|).", label="")


def _vae_inputs():
    cfg = VAE_CFG
    params = init_params(cfg, seed=0, dtype="float64", init="uniform")
    g = np.random.default_rng(1)
    x, eps = g.random((B, cfg.x_dim)), g.standard_normal((cfg.n_samples, B, cfg.z_dim))
    return cfg, params, x, eps


def _grade_vae(backward) -> GradeResult:
    cfg, params, x, eps = _vae_inputs()
    _, cache, _ = vae_forward(params, x, eps, cfg)
    got, problem = call_learner(backward, {}, cache, cfg)
    if problem:
        return GradeResult("vae", [], problem)
    if not isinstance(got, dict):
        return GradeResult("vae", [], f"returned {type(got).__name__}; expected a dict with the keys of params")
    f = lambda: float(vae_forward(params, x, eps, cfg, validate=False)[0])  # noqa: E731
    numeric = {k: numerical_gradient(f, v)[0] for k, v in params.items()}
    rows = rows_for(got, numeric, {})
    failed = {r.name[1:] for r in rows if not r.passed}  # rows are named d<param>
    for block, names, what in VAE_BLOCKS:  # the first wrong block, in backward order
        if failed & set(names):
            first = "d" + sorted(failed & set(names), key=names.index)[0]
            next(r for r in rows if r.name == first).message += (
                f"\n        The first wrong block, walking backwards: the {block}. It needs {what}"
                + _encoder_head_slip(got, cache, cfg, names))
            break
    return GradeResult("vae", rows)


def _encoder_head_slip(got, cache, cfg, names) -> str:
    """For the encoder heads: is exactly the KL's part, or exactly the sample's part, missing?"""
    if "enc.W_mu" not in names:
        return ""
    recon_only = vae_backward_reference(cache, dataclasses.replace(cfg, beta=0.0))
    full = vae_backward_reference(cache, cfg)
    for part, ref in (("the KL's gradient is missing", recon_only),
                      ("only the KL's gradient is there: the part through the sample z is missing",
                       {k: full[k] - recon_only[k] for k in full})):
        if all(isinstance(got.get(k), np.ndarray) and got[k].shape == ref[k].shape
               and rel_error(got[k], ref[k]) < 1e-6 for k in names):
            return f" Here {part}."
    return ""

"""Grading the backward-pass exercises: a learner's gradient against centred finite differences.

For each exercise the grader draws fresh float64 inputs (two instances, of different sizes), runs
the library's forward pass, and asks the learner's backward for the gradients with a random
upstream gradient. It compares every gradient with the numerical one it computed itself, at the
library's bar (max|analytic - numeric| / max|numeric| < 1e-8). A wrong answer gets a diagnosis of
how it relates to the right one, and the hint for that gradient. The first instance has L = 3
samples and B = 5 examples and the second L = 4, B = 7, so that the usual slips give distinct
factors: "off by 1/3" (the mean over samples) can never be mistaken for "off by 1/2".

``plan(name, rng)`` makes the calls and what judging needs; ``judge(name, state, outcome, file)``
reads the answers (plain data, see ``wire``). Neither runs the learner's code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..core import distributions as D
from ..core import layers
from ..config import VAEConfig
from ..core.gradcheck import TOLERANCE, numerical_gradient, rel_error
from ..core.model import backward as vae_backward_reference
from ..core.model import forward as vae_forward
from ..core.model import init_params
from .answers import changed_in_place, kind_words, reply_problem
from .result import GradeResult, GradeRow
from .wire import ConfigSpec

SIZES = ((3, 5), (4, 7))  # (L samples, B examples) of each graded instance; 1/L, 1/B, 1/2 all distinct


def factors(L: int, B: int) -> dict:
    """The constant factors a classic slip gives, for an instance with L samples and B examples."""
    return {
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
    inputs: object           # (rng, L, B) -> dict of float64 arrays
    wrt: tuple               # the inputs the backward returns gradients for, in order
    hints: dict = field(default_factory=dict)   # gradient name -> hint shown when it fails
    reference: str = ""      # where the library implements it
    library: tuple = ()      # the library's implementations: an answer that calls one is reported


def _r(rng, *shape):
    return rng.standard_normal(shape)


EXERCISES = {e.name: e for e in [
    Exercise("linear", "linear_backward", layers.linear_forward,
             lambda g, L, B: {"x": _r(g, B, 4), "W": _r(g, 4, 3), "b": _r(g, 3)}, ("x", "W", "b"),
             {"x": "y = x @ W + b: which matrix multiplies dy, and from which side, gives shape (N, D)?",
              "W": "dW must have W's shape (D, M); only one product of x and dy does.",
              "b": "b is added to every row of y: its gradient collects dy from every row."},
             "minivae/core/layers.py: linear_backward", ("minivae.core.layers.linear_backward",)),
    Exercise("tanh", "tanh_backward", layers.tanh_forward, lambda g, L, B: {"a": 2 * _r(g, B, 6)}, ("a",),
             {"a": "d tanh(a)/da is written with h = tanh(a) itself; check the power of h."},
             "minivae/core/layers.py: tanh_backward", ("minivae.core.layers.tanh_backward",)),
    Exercise("softplus", "softplus_backward", layers.softplus_forward, lambda g, L, B: {"a": 3 * _r(g, B, 6)},
             ("a",),
             {"a": "d/da log(1 + exp(a)) = exp(a) / (1 + exp(a)): which named function is that, at a or at -a?"},
             "minivae/core/layers.py: softplus_backward", ("minivae.core.layers.softplus_backward",)),
    Exercise("reparameterize", "reparameterize_backward", D.reparameterize_forward,
             lambda g, L, B: {"mu": _r(g, B, 4), "logvar": _r(g, B, 4), "eps": _r(g, L, B, 4)}, ("mu", "logvar"),
             {"mu": "mu is used by all L samples: its gradient has shape (B, Z), collecting every sample's.",
              "logvar": "std = exp(0.5 * logvar), not exp(logvar): differentiate the exponent's factor too."},
             "minivae/core/distributions.py: reparameterize_backward",
             ("minivae.core.distributions.reparameterize_backward",)),
    Exercise("kl", "gaussian_kl_backward", D.gaussian_kl_forward,
             lambda g, L, B: {"mu": _r(g, B, 4), "logvar": _r(g, B, 4)}, ("mu", "logvar"),
             {"mu": "KL = 0.5 * sum(exp(logvar) + mu^2 - 1 - logvar): mind the 0.5 and the upstream dkl.",
              "logvar": "d/dlogvar of exp(logvar) - logvar, times the 0.5 in front; check the sign."},
             "minivae/core/distributions.py: gaussian_kl_backward", ("minivae.core.distributions.gaussian_kl_backward",)),
    Exercise("bernoulli", "bernoulli_log_prob_backward", D.bernoulli_log_prob_forward,
             lambda g, L, B: {"x": g.random((B, 6)), "logits": 3 * _r(g, L, B, 6)}, ("logits",),
             {"logits": "log p = x * logits - softplus(logits); the derivative of softplus is a sigmoid. "
                        "Which way round is the difference?"},
             "minivae/core/distributions.py: bernoulli_log_prob_backward",
             ("minivae.core.distributions.bernoulli_log_prob_backward",)),
    Exercise("gaussian", "gaussian_log_prob_backward", D.gaussian_log_prob_forward,
             lambda g, L, B: {"x": g.random((B, 6)), "mean": _r(g, L, B, 6), "logvar": _r(g, L, B, 6)},
             ("mean", "logvar"),
             {"mean": "-(x - mean)^2 / (2 var): differentiate with respect to mean, not x; var = exp(logvar).",
              "logvar": "Two terms depend on logvar: 0.5 * logvar and 0.5 * (x - mean)^2 * exp(-logvar)."},
             "minivae/core/distributions.py: gaussian_log_prob_backward",
             ("minivae.core.distributions.gaussian_log_prob_backward",)),
    Exercise("vae", "vae_backward", None, None, (), {}, "minivae/core/model.py: backward",
             ("minivae.core.model.backward", "minivae.vae.backward")),
]}

VAE_CFG = VAEConfig(x_dim=5, hidden=(4,), z_dim=2, n_samples=3)
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


def diagnose(analytic, numeric, unit=None, L: int = SIZES[0][0], B: int = SIZES[0][1]) -> str:
    """How a wrong gradient relates to the right one (``numeric``), without giving the answer.

    ``unit``, if given, is the right gradient for an upstream gradient of ones: matching it means
    the chain rule's upstream factor was left out.
    """
    if not isinstance(analytic, np.ndarray):
        return kind_words(analytic)
    shape, want = analytic.shape, numeric.shape
    if tuple(shape) != tuple(want):
        if len(shape) == 2 and tuple(shape) == tuple(want)[::-1]:
            return f"has shape {tuple(shape)}, expected {tuple(want)}: transposed? Check the order of the product."
        return (f"has shape {tuple(shape)}, expected {tuple(want)}: summed over the wrong axis, or not "
                f"summed where a value is used many times (broadcast)?")
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = numeric.ravel()
    if not np.all(np.isfinite(a)):
        return "contains NaN or inf."
    if not np.any(a):
        return "is 0 everywhere: nothing of the upstream gradient reaches it?"
    if unit is not None and rel_error(a, unit.ravel()) < 1e-6:
        return ("is the right gradient for an upstream gradient of 1: multiply by the upstream "
                "gradient (the chain rule), the part that is missing.")
    err = rel_error(a, n)
    if err < 1e-3:  # right to a few digits: a precision or a small term, never "a factor"
        if analytic.dtype in (np.float32, np.float16):
            return (f"is {analytic.dtype}, right to {err:.1e} relative but not to the bar of 1e-8: compute "
                    f"in float64 (an array made with dtype=np.float32, or .astype(np.float32)?).")
        return (f"is close (relative error {err:.1e}) but not within the bar of 1e-8: a small term "
                f"missing, a rounded constant (3.14 for pi?), or a step done in float32?")
    nn = float(n @ n)
    if nn > 0:
        s = float(a @ n) / nn
        if np.max(np.abs(a - s * n)) <= 1e-6 * np.max(np.abs(n)):
            for factor, meaning in factors(L, B).items():
                if abs(s - factor) < 1e-6 * abs(factor):
                    return f"is {s:.4g} times the right gradient: {meaning}"
            return f"is {s:.4g} times the right gradient everywhere: a constant factor is off."
    return "does not match the numerical gradient."


def rows_for(analytic: dict, numeric: dict, hints: dict, units: dict | None = None, size=SIZES[0]) -> list:
    """One GradeRow per gradient; ``units`` maps a name to a function giving its dout = 1 gradient."""
    rows = []
    for name, num in numeric.items():
        a = analytic.get(name) if isinstance(analytic, dict) else None
        ok_shape = isinstance(a, np.ndarray) and a.shape == num.shape
        err = rel_error(a.astype(np.float64), num) if ok_shape else None
        passed = err is not None and bool(np.isfinite(err)) and err < TOLERANCE
        msg = ""
        if not passed:
            unit = units[name]() if units and ok_shape and np.all(np.isfinite(a)) else None
            msg = f"d{name} {diagnose(a, num, unit, *size)}" + (f" Hint: {hints[name]}" if name in hints else "")
        rows.append(GradeRow(f"d{name}", err, passed, msg))
    return rows


def merge_instances(per_instance: list[list]) -> list:
    """One row per quantity over every instance: passed if it passed in all, its largest error, and
    the message of the first instance where it failed."""
    merged = []
    for rows in zip(*per_instance):
        errors = [r.error for r in rows]
        failed = [r for r in rows if not r.passed]
        error = None if any(e is None for e in errors) else max(errors)
        merged.append(dataclasses.replace(failed[0] if failed else rows[0], error=error, passed=not failed))
    return merged


# --- the plan: the calls to make and what judging needs ---------------------------------------------

def plan(name: str, rng):
    """``(calls, state)`` for exercise ``name``: fresh inputs, as plain arrays."""
    if name == "vae":
        return _plan_vae(rng)
    ex = EXERCISES[name]
    calls, instances = [], []
    for L, B in SIZES:
        inputs = ex.inputs(rng, L, B)
        out, cache = ex.forward(**inputs)
        dout = rng.standard_normal(np.shape(out))   # a random upstream gradient: no 1 to hide behind
        calls.append((ex.function, (dout, cache)))
        instances.append({"inputs": inputs, "out": out, "dout": dout, "cache": cache, "size": (L, B)})
    large = None
    if name in LARGE_INPUTS:
        out, cache = ex.forward(**LARGE_INPUTS[name])
        calls.append((ex.function, (np.ones_like(out), cache)))
        large = (np.ones_like(out), cache)
    return calls, {"instances": instances, "large": large}


def judge(name: str, state: dict, replies: list, file: str) -> GradeResult:
    """The grade of exercise ``name`` from the answers to ``plan``'s calls."""
    if name == "vae":
        return _judge_vae(state, replies, file)
    ex = EXERCISES[name]
    per_instance, changed = [], []
    for inst, reply in zip(state["instances"], replies):
        problem = reply_problem(reply, file, ex.hints, n_args=2)
        if problem:
            return GradeResult(name, [], problem)
        got = reply.value if isinstance(reply.value, tuple) else (reply.value,)
        if len(got) != len(ex.wrt):
            return GradeResult(name, [], f"returned {len(got)} value(s); expected {len(ex.wrt)}: "
                                         f"gradients of {', '.join(ex.wrt)} in that order")
        numeric = {k: _numeric(ex, inst["inputs"], inst["dout"], k) for k in ex.wrt}
        units = {k: (lambda k=k, inst=inst: _numeric(ex, inst["inputs"], np.ones_like(inst["out"]), k))
                 for k in ex.wrt}
        per_instance.append(rows_for(dict(zip(ex.wrt, got)), numeric, ex.hints, units, inst["size"]))
        changed += [c for c in changed_in_place(("dout", "cache"), (inst["dout"], inst["cache"]), reply.after)
                    if c not in changed]
    rows = merge_instances(per_instance)
    if changed:
        rows.append(in_place_row(ex.function, changed))
    if state["large"] is not None and all(r.passed for r in rows):
        rows.append(_large_input_row(ex, state["large"], replies[-1], file))
    return GradeResult(name, rows)


def _numeric(ex: Exercise, inputs: dict, upstream, key: str):
    """d sum(forward(inputs) * upstream) / d inputs[key], by the library's centred stencil."""
    f = lambda: float(np.sum(ex.forward(**inputs)[0] * upstream))  # noqa: E731
    return numerical_gradient(f, inputs[key])[0]


def in_place_row(function: str, changed) -> GradeRow:
    return GradeRow("inputs", None, False,
                    f"{function} wrote into its input {' and '.join(changed)} "
                    f"in place (e.g. `da = dh; da *= ...` changes the caller's dh: an alias, not a copy). "
                    f"Other layers read the same arrays, so a backward pass must leave them as it got "
                    f"them: compute into a new array, da = dh * (...).", label="")


# Inputs far out in the tails, where a naive formula overflows: exp(800) is inf in float64.
LARGE_INPUTS = {"softplus": {"a": np.array([[-800.0, -40.0, 0.0, 40.0, 800.0]])},
                "bernoulli": {"x": np.array([[0.0, 1.0, 0.5, 1.0, 0.0]]),
                              "logits": np.array([[[-800.0, -40.0, 0.0, 40.0, 800.0]]])}}


def _large_input_row(ex: Exercise, large, reply, file: str) -> GradeRow:
    """The learner's backward at inputs of +-800, against the library's (which is stable there)."""
    dout, cache = large
    want = getattr(layers if ex.name == "softplus" else D, ex.function)(dout, cache)
    problem = reply_problem(reply, file, ex.hints, n_args=2)
    got = reply.value if isinstance(reply.value, tuple) else (reply.value,)
    want = want if isinstance(want, tuple) else (want,)
    ok = not problem and len(got) == len(want) and all(
        isinstance(g, np.ndarray) and g.shape == w.shape and np.all(np.isfinite(g))
        and rel_error(g.astype(np.float64), w) < TOLERANCE for g, w in zip(got, want))
    shown = problem or (np.round(got[-1], 6).ravel() if isinstance(got[-1], np.ndarray) else kind_words(got[-1]))
    return GradeRow("inputs +-800", None, ok, "" if ok else
                    f"at inputs of -800 ... 800 the result is {shown}: "
                    f"exp(800) overflows to inf (and inf/inf is NaN). Write it with a function that "
                    f"never exponentiates a large positive number: sigmoid as the library writes it, or "
                    f"exp(-|a|).", label="")


# --- the whole VAE ----------------------------------------------------------------------------------

def _plan_vae(rng):
    cfg, calls, instances = VAE_CFG, [], []
    for _ in range(2):
        params = init_params(cfg, seed=int(rng.integers(2 ** 31)), dtype="float64", init="uniform")
        B = 5
        x, eps = rng.random((B, cfg.x_dim)), rng.standard_normal((cfg.n_samples, B, cfg.z_dim))
        _, cache, _ = vae_forward(params, x, eps, cfg)
        cache = tuple(cache)  # plain data for the wire, as a learner's own forward would make it
        calls.append(("vae_backward", (cache, ConfigSpec(dataclasses.asdict(cfg)))))
        instances.append({"params": params, "x": x, "eps": eps, "cache": cache})
    return calls, {"instances": instances}


def _judge_vae(state, replies, file) -> GradeResult:
    cfg, per_instance, changed = VAE_CFG, [], []
    for inst, reply in zip(state["instances"], replies):
        problem = reply_problem(reply, file, n_args=2)
        if problem:
            return GradeResult("vae", [], problem)
        got = reply.value
        if not isinstance(got, dict):
            return GradeResult("vae", [], f"returned {type(got).__name__}; expected a dict with the keys of params")
        params, x, eps = inst["params"], inst["x"], inst["eps"]
        f = lambda: float(vae_forward(params, x, eps, cfg)[0])  # noqa: E731
        numeric = {k: numerical_gradient(f, v)[0] for k, v in params.items()}
        rows = rows_for(got, numeric, {}, size=(cfg.n_samples, 5))
        _name_the_first_wrong_block(rows, got, inst["cache"])
        per_instance.append(rows)
        after = reply.after[0] if isinstance(reply.after, tuple) and reply.after else None
        if not changed and changed_in_place(("cache",), (inst["cache"],), (after,)):
            changed = ["cache"]
    rows = merge_instances(per_instance)
    if changed:
        rows.append(in_place_row("vae_backward", changed))
    return GradeResult("vae", rows)


def _name_the_first_wrong_block(rows, got, cache) -> None:
    failed = {r.name[1:] for r in rows if not r.passed}  # rows are named d<param>
    for block, names, what in VAE_BLOCKS:  # the first wrong block, in backward order
        if failed & set(names):
            first = "d" + sorted(failed & set(names), key=names.index)[0]
            next(r for r in rows if r.name == first).message += (
                f"\n        The first wrong block, walking backwards: the {block}. It needs {what}"
                + _encoder_head_slip(got, cache, VAE_CFG, names))
            return


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
               and rel_error(got[k].astype(np.float64), ref[k]) < 1e-6 for k in names):
            return f" Here {part}."
    return ""

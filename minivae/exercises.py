"""The grader of the gradient-check exercises in ``tutorials/exercises/``.

    python -m minivae.exercises list
    python -m minivae.exercises check linear        # one exercise
    python -m minivae.exercises check all           # every exercise; exit code 1 if any fails

Each exercise file holds one backward function with a ``# START OF YOUR CODE`` / ``# END OF YOUR
CODE`` region. The grader runs the library's forward pass on fixed float64 inputs, calls the
learner's backward, and compares every gradient with centred finite differences (the same bar as
the library: max|analytic - numeric| / max|numeric| < 1e-8). It never crashes on a learner's
mistake: an exception, a wrong shape or ``None`` is reported as a failure, with a hint that points
at the usual mistake without giving the answer.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import distributions as D
from . import layers
from .config import VAEConfig
from .gradcheck import TOLERANCE, numerical_gradient, rel_error
from .vae import forward as vae_forward
from .vae import init_params


@dataclass
class Exercise:
    """One exercise: its file, the function the learner writes, and how to check it."""
    name: str
    function: str
    forward: object          # forward(**inputs) -> (out, cache)
    inputs: object           # rng -> dict of float64 arrays
    wrt: tuple               # the inputs the backward returns gradients for, in order
    hints: dict = field(default_factory=dict)   # gradient name -> hint shown when it fails


def _r(rng, *shape):
    return rng.standard_normal(shape)


EXERCISES = {e.name: e for e in [
    Exercise("linear", "linear_backward", layers.linear_forward,
             lambda g: {"x": _r(g, 5, 4), "W": _r(g, 4, 3), "b": _r(g, 3)}, ("x", "W", "b"),
             {"x": "y = x @ W + b: which matrix multiplies dy, and from which side, gives shape (N, D)?",
              "W": "dW must have W's shape (D, M); only one product of x and dy does.",
              "b": "b is added to every row of y: its gradient collects dy from every row."}),
    Exercise("tanh", "tanh_backward", layers.tanh_forward, lambda g: {"a": 2 * _r(g, 6, 5)}, ("a",),
             {"a": "d tanh(a)/da is written with h = tanh(a) itself; check the power of h."}),
    Exercise("softplus", "softplus_backward", layers.softplus_forward, lambda g: {"a": 3 * _r(g, 6, 5)}, ("a",),
             {"a": "d/da log(1 + exp(a)) = exp(a) / (1 + exp(a)): which named function is that, at a or at -a?"}),
    Exercise("reparameterize", "reparameterize_backward", D.reparameterize_forward,
             lambda g: {"mu": _r(g, 4, 3), "logvar": _r(g, 4, 3), "eps": _r(g, 2, 4, 3)}, ("mu", "logvar"),
             {"mu": "mu is used by all L samples: its gradient has shape (B, Z), collecting every sample's.",
              "logvar": "std = exp(0.5 * logvar), not exp(logvar): differentiate the exponent's factor too."}),
    Exercise("kl", "gaussian_kl_backward", D.gaussian_kl_forward,
             lambda g: {"mu": _r(g, 4, 3), "logvar": _r(g, 4, 3)}, ("mu", "logvar"),
             {"mu": "KL = 0.5 * sum(exp(logvar) + mu^2 - 1 - logvar): mind the 0.5 and the upstream dkl.",
              "logvar": "d/dlogvar of exp(logvar) - logvar, times the 0.5 in front; check the sign."}),
    Exercise("bernoulli", "bernoulli_log_prob_backward", D.bernoulli_log_prob_forward,
             lambda g: {"x": g.random((2, 4, 5)), "logits": 3 * _r(g, 2, 4, 5)}, ("logits",),
             {"logits": "log p = x * logits - softplus(logits); the derivative of softplus is a sigmoid. "
                        "Which way round is the difference?"}),
    Exercise("gaussian", "gaussian_log_prob_backward", D.gaussian_log_prob_forward,
             lambda g: {"x": g.random((2, 4, 5)), "mean": _r(g, 2, 4, 5), "logvar": _r(g, 2, 4, 5)},
             ("mean", "logvar"),
             {"mean": "-(x - mean)^2 / (2 var): differentiate with respect to mean, not x; var = exp(logvar).",
              "logvar": "Two terms depend on logvar: 0.5 * logvar and 0.5 * (x - mean)^2 * exp(-logvar)."}),
]}

VAE_CFG = VAEConfig(x_dim=5, hidden=(4,), z_dim=2, n_samples=2)
VAE_HINT = ("Walk the forward pass backwards: likelihood -> decoder -> z -> (mu, logvar) <- KL. mu and "
            "logvar feed both the sample and the KL, so their gradients add up (+=); h feeds two heads.")
EXERCISES["vae"] = Exercise("vae", "vae_backward", None, None, (), {})


@dataclass
class GradeRow:
    name: str
    error: float | None
    passed: bool
    message: str = ""


@dataclass
class GradeResult:
    exercise: str
    rows: list
    problem: str = ""   # a failure before any gradient could be compared

    @property
    def passed(self) -> bool:
        return not self.problem and bool(self.rows) and all(r.passed for r in self.rows)

    def __str__(self) -> str:
        lines = [f"exercise {self.exercise}:"]
        if self.problem:
            lines.append(f"  FAIL  {self.problem}")
        for r in self.rows:
            err = "      -   " if r.error is None else f"{r.error:10.2e}"
            lines.append(f"  {'pass' if r.passed else 'FAIL'}  d{r.name:<14}rel error {err}"
                         + (f"\n        {r.message}" if r.message else ""))
        lines.append(f"  => {'passed' if self.passed else 'not yet'}")
        return "\n".join(lines)


def diagnose(analytic, numeric) -> str:
    """A hint from how a wrong gradient relates to the right one, without giving the answer."""
    if analytic is None:
        return "is None: write the code between START OF YOUR CODE and END OF YOUR CODE."
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
    nn = float(n @ n)
    if nn > 0:
        s = float(a @ n) / nn
        if np.max(np.abs(a - s * n)) <= 1e-6 * np.max(np.abs(n)):
            if abs(s + 1) < 1e-6:
                return "has the wrong sign everywhere."
            if abs(s - 2) < 1e-6 or abs(s - 0.5) < 1e-6:
                return (f"is {s:g} times the right gradient: a missing or extra factor 1/2 "
                        f"(std versus variance, the 0.5 in the KL)?")
            return f"is {s:.4g} times the right gradient everywhere: a constant factor is off."
    return "does not match the numerical gradient."


def _rows_for(analytic: dict, numeric: dict, hints: dict) -> list:
    rows = []
    for name, num in numeric.items():
        a = analytic.get(name)
        ok_shape = a is not None and tuple(getattr(a, "shape", ())) == tuple(num.shape) and hasattr(a, "shape")
        err = rel_error(np.asarray(a, dtype=np.float64), num) if ok_shape else None
        passed = err is not None and np.isfinite(err) and err < TOLERANCE
        msg = "" if passed else f"d{name} {diagnose(a, num)}" + (f" Hint: {hints[name]}" if name in hints else "")
        rows.append(GradeRow(name, err, passed, msg))
    return rows


def _call(fn, *args):
    try:
        return fn(*args), ""
    except Exception as e:  # a learner's bug is a failure to report, never a crash
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return None, f"raised {type(e).__name__}: {e} (line {tb.lineno} of {Path(tb.filename).name})"


def grade_function(name: str, backward) -> GradeResult:
    """Grade a learner's backward function for exercise ``name``."""
    if name == "vae":
        return _grade_vae(backward)
    ex = EXERCISES[name]
    inputs = ex.inputs(np.random.default_rng(0))
    out, cache = ex.forward(**inputs)
    dout = np.cos(3.0 * out + 1.0)  # fixed, nonconstant upstream gradient
    got, problem = _call(backward, dout, cache)
    if problem:
        return GradeResult(name, [], problem + f" Hint: {next(iter(ex.hints.values()))}")
    got = got if isinstance(got, tuple) else (got,)
    if len(got) != len(ex.wrt):
        return GradeResult(name, [], f"returned {len(got)} value(s); expected {len(ex.wrt)}: "
                                     f"gradients of {', '.join(ex.wrt)} in that order")
    f = lambda: float(np.sum(ex.forward(**inputs)[0] * dout))  # noqa: E731
    numeric = {k: numerical_gradient(f, inputs[k])[0] for k in ex.wrt}
    return GradeResult(name, _rows_for(dict(zip(ex.wrt, got)), numeric, ex.hints))


def _grade_vae(backward) -> GradeResult:
    cfg = VAE_CFG
    params = init_params(cfg, seed=0, dtype="float64", init="uniform")
    g = np.random.default_rng(1)
    x, eps = g.random((3, cfg.x_dim)), g.standard_normal((cfg.n_samples, 3, cfg.z_dim))
    _, cache, _ = vae_forward(params, x, eps, cfg)
    got, problem = _call(backward, cache, cfg)
    if problem:
        return GradeResult("vae", [], problem + " Hint: " + VAE_HINT)
    if not isinstance(got, dict):
        return GradeResult("vae", [], f"returned {type(got).__name__}; expected a dict with the keys of params. "
                                      "Hint: " + VAE_HINT)
    f = lambda: vae_forward(params, x, eps, cfg, validate=False)[0]  # noqa: E731
    numeric = {k: numerical_gradient(f, v)[0] for k, v in params.items()}
    rows = _rows_for(got, numeric, {})
    if not all(r.passed for r in rows):
        rows[-1].message = (rows[-1].message + "\n        " if rows[-1].message else "") + "Hint: " + VAE_HINT
    return GradeResult("vae", rows)


def exercise_dir(given=None) -> Path:
    """Where the exercise files are: ``--dir``, ``$MINIVAE_EXERCISES``, ./tutorials/exercises, or the repo's."""
    for candidate in (given, os.environ.get("MINIVAE_EXERCISES"), "tutorials/exercises",
                      Path(__file__).resolve().parents[1] / "tutorials" / "exercises"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FileNotFoundError("cannot find the exercises folder: run from the repository root or pass --dir")


def load_learner_function(name: str, directory: Path):
    """Import ``<directory>/<name>.py`` and return its function; ``(None, problem)`` if that fails."""
    path = directory / f"{name}.py"
    if not path.is_file():
        return None, f"{path} not found"
    spec = importlib.util.spec_from_file_location(f"minivae_exercise_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        return None, f"{path.name} does not import: {type(e).__name__}: {e}"
    fn = getattr(module, EXERCISES[name].function, None)
    if fn is None:
        return None, f"{path.name} has no function {EXERCISES[name].function}()"
    return fn, ""


def check(name: str, directory: Path) -> GradeResult:
    fn, problem = load_learner_function(name, directory)
    if fn is None:
        return GradeResult(name, [], problem)
    return grade_function(name, fn)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minivae.exercises", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="grade one exercise, or all")
    c.add_argument("name", choices=[*EXERCISES, "all"])
    c.add_argument("--dir", default=None, help="folder of the exercise files")
    sub.add_parser("list", help="list the exercises")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, ex in EXERCISES.items():
            print(f"{name:<16}{ex.function}()")
        return 0
    directory = exercise_dir(args.dir)
    names = list(EXERCISES) if args.name == "all" else [args.name]
    results = [check(n, directory) for n in names]
    for r in results:
        print(r, end="\n\n")
    passed = sum(r.passed for r in results)
    print(f"{passed} of {len(results)} exercise(s) passed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

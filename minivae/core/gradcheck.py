"""Finite-difference gradient checks: numerical gradients, error measures and a readable report.

The bar (DESIGN.md): in float64, for every parameter tensor, every element compared,

    rel_error = max|analytic - numeric| / max|numeric|  <  1e-8.

This measure is scaled by the tensor's largest gradient, so an element whose true gradient is near
zero does not blow it up. CS231n's elementwise ``|a - n| / max(|a|, |n|)`` does blow up there; it is
shown beside the bar as a diagnostic only.

Numerical gradients use centred stencils. The plain 2-point difference (``order=2``) has a
truncation error of order h^2 and a rounding error of order eps/h; in float64 its best case lands at
1e-9..1e-8 here, too close to the bar. The default 4-point stencil (``order=4``,
``(-f(x+2h) + 8f(x+h) - 8f(x-h) + f(x-2h)) / 12h``) has truncation O(h^4) and reaches 1e-11..1e-10
with ``h = DEFAULT_H``.

ReLU is not differentiable at 0: if a stencil's points put a pre-activation on both sides of the
kink, no stencil can estimate the derivative. ``check_gradients`` takes a ``signature`` callback
(the model's ReLU on/off pattern) and reports such elements as kinks instead of comparing them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from ..backend import Generator, namespace_of
from . import model

TOLERANCE = 1e-8
DEFAULT_H = 1e-3  # near eps^(1/5) for the 4th-order stencil in float64
STENCILS = {
    # order: (offsets in units of h, weights; the derivative is sum(w f(x + o h)) / h)
    2: ((1, -1), (0.5, -0.5)),
    4: ((-2, -1, 1, 2), (1 / 12, -8 / 12, 8 / 12, -1 / 12)),
}


def rel_error(analytic, numeric) -> float:
    """The bar: ``max|analytic - numeric| / max|numeric|`` over a whole tensor.

    When the true gradient is exactly zero everywhere, the absolute error ``max|analytic|`` is
    returned instead (any nonzero analytic gradient is then a failure).
    """
    xp = namespace_of(analytic, numeric)
    err = float(xp.max(xp.abs(analytic - numeric))) if analytic.ndim else float(xp.abs(analytic - numeric))
    scale = float(xp.max(xp.abs(numeric))) if numeric.ndim else float(xp.abs(numeric))
    return err / scale if scale > 0 else err


def elementwise_rel_error(analytic, numeric) -> float:
    """CS231n's diagnostic: ``max |a - n| / max(|a|, |n|)`` elementwise (0/0 counted as 0)."""
    xp = namespace_of(analytic, numeric)
    denom = xp.maximum(xp.abs(analytic), xp.abs(numeric))
    ratio = xp.where(denom > 0, xp.abs(analytic - numeric) / xp.where(denom > 0, denom, 1.0), 0.0)
    return float(xp.max(ratio)) if ratio.ndim else float(ratio)


def numerical_gradient(f, x, h: float = DEFAULT_H, order: int = 4, signature=None,
                       same_signature=None):
    """d f / d x by a centred stencil, one element at a time.

    f: a function of no arguments returning a float; it must read ``x``, which is perturbed in place
    and restored exactly. Returns ``(grad, kinks)``: ``grad`` has the shape of ``x``; ``kinks`` lists
    the multi-indices where ``signature()`` (called after each evaluation of f, if given) differed
    between the stencil's points, i.e. where the function is not smooth inside the stencil.
    """
    offsets, weights = STENCILS[order]
    xp = namespace_of(x)
    grad = xp.zeros(x.shape, dtype=x.dtype, device=x.device)
    kinks = []
    for idx in itertools.product(*(range(n) for n in x.shape)):
        original = float(x[idx])
        total = 0.0
        reference = None
        kink = False
        if signature is not None:
            f()
            reference = signature()
        for offset, weight in zip(offsets, weights):
            x[idx] = original + offset * h
            total += weight * f()
            if signature is not None and not same_signature(reference, signature()):
                kink = True
        x[idx] = original
        grad[idx] = total / h
        if kink:
            kinks.append(idx)
    return grad, kinks


@dataclass
class GradRow:
    """One tensor's result: the bar ``max_rel_error`` and CS231n's ``max_elementwise`` beside it."""
    name: str
    shape: tuple
    compared: int
    max_rel_error: float
    max_elementwise: float
    kinks: int
    passed: bool


@dataclass
class GradcheckReport:
    """Per-tensor results of a gradient check; ``str(report)`` is a table, ``report.passed`` a bool."""
    title: str
    h: float
    order: int
    tolerance: float = TOLERANCE
    rows: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def max_rel_error(self) -> float:
        return max((r.max_rel_error for r in self.rows), default=0.0)

    def __str__(self) -> str:
        head = (f"{self.title}\n  centred {self.order}-point stencil, h = {self.h:g}; pass when "
                f"max|analytic - numeric| / max|numeric| < {self.tolerance:g}")
        cols = f"  {'tensor':<16}{'shape':<12}{'compared':>9}{'rel error':>12}{'cs231n':>11}  result"
        lines = [head, cols]
        for r in self.rows:
            result = "pass" if r.passed else "FAIL"
            if r.kinks:
                result += f" ({r.kinks} element(s) skipped: a ReLU kink lies inside the stencil)"
            lines.append(f"  {r.name:<16}{str(r.shape):<12}{r.compared:>9}{r.max_rel_error:>12.2e}"
                         f"{r.max_elementwise:>11.2e}  {result}")
        lines.append(f"  => {'all pass' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def _arrays_equal(a, b) -> bool:
    return all(bool(namespace_of(u).all(u == v)) for u, v in zip(a, b))


def check_gradients(f, arrays: dict, analytic: dict, title: str = "gradient check",
                    h: float = DEFAULT_H, order: int = 4, tolerance: float = TOLERANCE,
                    signature=None) -> GradcheckReport:
    """Compare ``analytic[name]`` with the numerical gradient of ``f()`` for every ``arrays[name]``.

    f reads the arrays, which are perturbed in place. ``signature``, if given, returns a list of
    boolean arrays (e.g. ReLU on/off masks); elements whose stencil changes it are reported as kinks
    and left out of the comparison. An analytic gradient of the wrong shape, or ``None``, fails.
    """
    report = GradcheckReport(title, h, order, tolerance)
    for name, x in arrays.items():
        a = analytic.get(name)
        shape = tuple(x.shape)
        if a is None or tuple(getattr(a, "shape", ())) != shape:
            got = None if a is None else tuple(getattr(a, "shape", ()))
            report.rows.append(GradRow(f"{name} (shape {got})", shape, 0, float("inf"),
                                       float("inf"), 0, False))
            continue
        numeric, kinks = numerical_gradient(f, x, h, order, signature, _arrays_equal)
        xp = namespace_of(x)
        if kinks:  # compare only the smooth elements
            keep = xp.ones(x.shape, dtype=xp.bool, device=x.device)
            for idx in kinks:
                keep[idx] = False
            a = xp.where(keep, a, 0.0)
            numeric = xp.where(keep, numeric, 0.0)
        err = rel_error(a, numeric)
        count = 1
        for n in shape:
            count *= n
        report.rows.append(GradRow(name, shape, count - len(kinks), err,
                                   elementwise_rel_error(a, numeric), len(kinks),
                                   err < tolerance))
    return report


def check_pair(forward, backward, inputs: dict, wrt: tuple, dout=None, title: str | None = None,
               **kwargs) -> GradcheckReport:
    """Check a layer's forward/backward pair.

    ``forward(**inputs) -> (out, cache)``; ``backward(dout, cache)`` returns the gradients of the
    inputs named in ``wrt``, in that order (one array, or a tuple). The scalar checked is
    ``sum(out * dout)`` for a fixed ``dout`` (default: out's values reversed and scaled, a
    deterministic non-constant weighting), so backward receives exactly ``dout``.
    """
    out, cache = forward(**inputs)
    xp = namespace_of(out)
    if dout is None:
        dout = xp.cos(3.0 * out + 1.0)  # deterministic, nonconstant, depends on nothing random
    grads = backward(dout, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    analytic = dict(zip(wrt, grads))

    def f():
        return float(xp.sum(forward(**inputs)[0] * dout))

    return check_gradients(f, {k: inputs[k] for k in wrt}, analytic,
                           title or getattr(forward, "__name__", "layer"), **kwargs)


def check_direction(f, arrays: dict, analytic: dict, directions, h: float = DEFAULT_H,
                    tolerance: float = TOLERANCE, title: str = "directional check") -> GradcheckReport:
    """For big models: compare ``<grad, v>`` with the stencil derivative of ``f(x + t v)`` at t = 0.

    ``directions``: a list of dicts with the arrays' names and shapes (e.g. random normal draws).
    One row per direction; the error is ``|analytic - numeric| / |numeric|``.
    """
    offsets, weights = STENCILS[4]
    report = GradcheckReport(title, h, 4, tolerance)
    originals = {k: v + 0.0 for k, v in arrays.items()}
    for i, v in enumerate(directions):
        xp = namespace_of(*v.values())
        exact = sum(float(xp.sum(analytic[k] * v[k])) for k in arrays)
        numeric = 0.0
        for offset, weight in zip(offsets, weights):
            for k, x in arrays.items():
                x[...] = originals[k] + (offset * h) * v[k]
            numeric += weight * f()
        for k, x in arrays.items():
            x[...] = originals[k]
        numeric /= h
        err = abs(exact - numeric) / abs(numeric) if numeric != 0 else abs(exact)
        report.rows.append(GradRow(f"direction {i}", (), 1, err, err, 0, err < tolerance))
    return report


def check_model(cfg, backend: str = "numpy", seed: int = 0, batch: int = 3,
                h: float = DEFAULT_H, order: int = 4, tolerance: float = TOLERANCE,
                directions: int = 0) -> GradcheckReport:
    """Check ``loss_and_grads`` for ``cfg`` on every element of every parameter tensor (float64).

    The parameters use the ``"uniform"`` init, large enough that every nonlinearity is exercised
    (the paper's N(0, 0.01) keeps a small model almost linear). ``x`` is uniform on [0, 1] (grayscale
    pixels), ``eps`` standard normal. ``directions > 0`` adds that many random-direction checks.
    """
    params = model.init_params(cfg, seed=seed, backend=backend, dtype="float64", init="uniform")
    rng = Generator((seed, 1), backend)
    x = rng.uniform((batch, cfg.x_dim), "float64")
    eps = rng.normal((cfg.n_samples, batch, cfg.z_dim), "float64")
    _, cache, _ = model.forward(params, x, eps, cfg)
    analytic = model.backward(cache, cfg)
    state = {}

    def f():
        loss, state["cache"], _ = model.forward(params, x, eps, cfg)
        return float(loss)

    signature = (lambda: model.relu_masks(state["cache"])) if cfg.activation == "relu" else None
    depth = ",".join(map(str, cfg.hidden)) or "none"
    variance = f"/{cfg.variance}" if cfg.likelihood == "gaussian" else ""
    title = (f"{cfg.likelihood}{variance}, {cfg.activation}, hidden=({depth}), "
             f"L={cfg.n_samples}, on {backend}")
    report = check_gradients(f, params, analytic, title, h, order, tolerance, signature)
    if directions:
        draws = [{k: rng.normal(tuple(v.shape), "float64") for k, v in params.items()}
                 for _ in range(directions)]
        report.rows += check_direction(f, params, analytic, draws, h, tolerance).rows
    return report

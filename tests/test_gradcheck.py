"""The acceptance bar, and the checker itself: it must pass correct code and catch wrong gradients."""

import itertools

import numpy as np
import pytest

from minivae import VAEConfig, backend as B, vae
from minivae.core import distributions as D, layers, model
from conftest import backend_params
from minivae.core.gradcheck import (
    TOLERANCE, check_direction, check_gradients, check_model, check_pair, elementwise_rel_error,
    numerical_gradient, rel_error,
)

MODES = [("bernoulli", "fixed"), ("continuous_bernoulli", "fixed"), ("gaussian", "fixed"),
         ("gaussian", "shared"), ("gaussian", "per_pixel")]
GRID = list(itertools.product(MODES, ["tanh", "softplus", "relu"], [(), (5,), (5, 4)], [1, 3]))


def _pairs(point):
    """The (factor, value, factor, value) pairs a grid point covers."""
    return {(i, point[i], j, point[j]) for i, j in itertools.combinations(range(len(point)), 2)}


def pairwise_cover(grid):
    """Grid points, in grid order, in which every value of each factor meets every value of each
    other factor at least once (greedy: each next point covers the most pairs not yet covered)."""
    needed, chosen = set().union(*map(_pairs, grid)), []
    while needed:
        best = max(grid, key=lambda p: len(_pairs(p) & needed))
        chosen.append(best)
        needed -= _pairs(best)
    return sorted(chosen, key=grid.index)


PAIRWISE = pairwise_cover(GRID)


def _model_cases():
    """Every grid point on numpy. On a device backend each model is hundreds of host reads a
    stencil (array-api-strict: 1 s a point here, against 0.1 s on numpy): the pairwise cover runs
    by default, the rest of the grid in the slow suite (``pytest -m slow``, which CI runs)."""
    for backend in backend_params():
        name = backend.values[0]
        for point in GRID:
            slow = (pytest.mark.slow,) if name != "numpy" and point not in PAIRWISE else ()
            (likelihood, variance), activation, hidden, n_samples = point
            yield pytest.param(name, *point, marks=(*backend.marks, *slow),
                               id=f"{name}-{likelihood}-{variance}-{activation}-h{len(hidden)}-L{n_samples}")


def test_the_pairwise_cover_meets_every_pair_of_the_grid():
    assert set().union(*map(_pairs, PAIRWISE)) == set().union(*map(_pairs, GRID))
    assert len(PAIRWISE) < len(GRID) / 4


@pytest.mark.parametrize("backend,mode,activation,hidden,n_samples", list(_model_cases()))
def test_every_model_gradient_passes_the_bar(backend, mode, activation, hidden, n_samples):
    cfg = VAEConfig(x_dim=6, hidden=hidden, z_dim=3, activation=activation, likelihood=mode[0],
                    variance=mode[1], n_samples=n_samples)
    report = check_model(cfg, backend)
    assert report.passed, report
    assert report.max_rel_error < TOLERANCE
    compared = sum(r.compared + r.kinks for r in report.rows)
    assert compared == sum(int(np.prod(s)) for s in vae.param_shapes(cfg).values())


@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
def test_the_kl_weight_gradient_passes_the_bar(backend, beta):
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=3, n_samples=2, beta=beta)
    report = check_model(cfg, backend)
    assert report.passed, report


def test_the_kl_weight_scales_only_the_kl_term():
    """loss(beta) = recon + beta * KL exactly, and the gradient is linear in beta."""
    out = {}
    for beta in (0.0, 1.0, 3.0):
        cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=3, beta=beta)
        params = vae.init_params(cfg, dtype="float64", init="uniform")
        g = B.Generator(0)
        x, eps = g.uniform((4, 6), "float64"), g.normal((1, 4, 3), "float64")
        out[beta] = vae.loss_and_grads(params, x, eps, cfg)
    loss3, grads3, stats3 = out[3.0]
    assert loss3 == pytest.approx(stats3["recon"] + 3.0 * stats3["kl"], rel=1e-14)
    for k in grads3:  # g(3) = g(0) + 3 (g(1) - g(0))
        np.testing.assert_allclose(grads3[k], out[0.0][1][k] + 3.0 * (out[1.0][1][k] - out[0.0][1][k]),
                                   rtol=1e-10, atol=1e-14)


def _unit_kls(cfg, seed=0, batch=3):
    """Each unit's batch-mean KL at check_model's own parameters and data."""
    params = vae.init_params(cfg, seed=seed, dtype="float64", init="uniform")
    x = B.Generator((seed, 1)).uniform((batch, cfg.x_dim), "float64")
    mu, logvar = vae.encode(params, x, cfg)
    return np.sort(np.mean(D.gaussian_kl_forward(mu, logvar, per_dim=True)[0], axis=0))


def test_the_free_bits_gradient_passes_the_bar(backend):
    """lambda between two units' KLs: the units below it get no KL gradient, those above the ELBO's."""
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=4, n_samples=2)
    kls = _unit_kls(cfg)
    free_bits = float(kls[1] + kls[2]) / 2            # two units free, two charged
    assert kls[2] - free_bits > 1e-3 and free_bits - kls[1] > 1e-3   # far from the kink for h
    report = check_model(VAEConfig(**{**cfg.to_dict(), "hidden": (5,), "free_bits": free_bits}), backend)
    assert report.passed, report


def test_free_bits_charge_each_unit_at_least_lambda_and_report_the_true_kl():
    base = VAEConfig(x_dim=6, hidden=(5,), z_dim=4)
    params = vae.init_params(base, dtype="float64", init="uniform")
    g = B.Generator(0)
    x, eps = g.uniform((4, 6), "float64"), g.normal((1, 4, 4), "float64")
    mu, logvar = vae.encode(params, x, base)
    kls = np.mean(D.gaussian_kl_forward(mu, logvar, per_dim=True)[0], axis=0)
    elbo = vae.loss_and_grads(params, x, eps, base)
    recon_only = vae.loss_and_grads(params, x, eps, VAEConfig(x_dim=6, hidden=(5,), z_dim=4, beta=0.0))
    for lam in (0.5 * kls.min(), 2 * kls.max(), float(np.median(kls))):
        loss, grads, stats = vae.loss_and_grads(params, x, eps, VAEConfig(x_dim=6, hidden=(5,), z_dim=4,
                                                                         free_bits=lam))
        assert stats["kl"] == elbo[2]["kl"] and stats["recon"] == elbo[2]["recon"]   # the true KL
        assert loss == pytest.approx(stats["recon"] + np.maximum(kls, lam).sum(), rel=1e-13)
        if lam < kls.min():      # every unit charged: the ELBO's gradient
            reference = elbo[1]
        elif lam > kls.max():    # every unit free: no KL gradient at all
            reference = recon_only[1]
        else:
            continue
        for k in grads:
            np.testing.assert_allclose(grads[k], reference[k], rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="free_bits: expected a finite number of nats >= 0"):
        VAEConfig(x_dim=6, free_bits=-1.0)


def test_rel_error_is_scaled_by_the_largest_gradient():
    numeric = np.array([1.0, 1e-12])
    analytic = np.array([1.0, 2e-12])
    assert rel_error(analytic, numeric) == pytest.approx(1e-12)
    assert elementwise_rel_error(analytic, numeric) == pytest.approx(0.5)  # the diagnostic blows up
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.array([1e-3, 0.0]), np.zeros(2)) == 1e-3


def test_numerical_gradient_of_a_known_function(backend):
    x = B.from_numpy([0.3, -1.2, 2.0], backend, "float64")
    xp = B.namespace(backend)
    f = lambda: float(xp.sum(xp.sin(x) * x))  # noqa: E731
    for order in (2, 4):
        grad, kinks = numerical_gradient(f, x, h=1e-3 if order == 4 else 6e-6, order=order)
        want = np.cos(B.to_numpy(x)) * B.to_numpy(x) + np.sin(B.to_numpy(x))
        assert kinks == []
        assert rel_error(B.to_numpy(grad), want) < (1e-10 if order == 4 else 1e-8)
    np.testing.assert_array_equal(B.to_numpy(x), [0.3, -1.2, 2.0])  # restored exactly


def test_the_two_point_stencil_is_not_enough_for_the_bar():
    """Why the default is the 4-point stencil: on the same gradients, the 2-point difference sits
    one to two orders of magnitude closer to 1e-8."""
    errors = {}
    for order, h in ((2, 6e-6), (4, 1e-3)):
        cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=3, likelihood="gaussian", variance="per_pixel")
        errors[order] = check_model(cfg, h=h, order=order).max_rel_error
    assert errors[4] < errors[2] / 10


# --- the checker catches wrong gradients -----------------------------------------------------

def _dropped_transpose(dy, cache, need_dx=True):
    x, W = cache
    xp = B.namespace_of(dy)
    return (dy @ W if need_dx else None), x.T @ dy, xp.sum(dy, axis=0)


def _logvar_as_log_std(dz, cache):
    std, eps = cache  # the forward used std = exp(0.5 logvar); this backward forgets the 0.5
    xp = B.namespace_of(dz)
    return xp.sum(dz, axis=0), std * xp.sum(dz * eps, axis=0)


def _kl_sign_slip(dkl, cache):
    mu, var = cache
    dkl = dkl[..., None]
    return dkl * mu, dkl * 0.5 * (1.0 - var)


def _bce_sign_slip(dlogp, cache):
    x, logits, _ = cache
    return dlogp[..., None] * (layers.sigmoid(logits) - x)


PLANTED = {
    "dropped transpose": ("linear_backward", _dropped_transpose, {"W0", "W1", "W_mu", "W_logvar", "W_out"}),
    "logvar used as log-std": ("reparameterize_backward", _logvar_as_log_std, {"enc."}),
    "sign slip in the KL": ("gaussian_kl_backward", _kl_sign_slip, {"enc.W_logvar", "enc.b_logvar"}),
    "sign slip in the Bernoulli gradient": ("bernoulli_log_prob_backward", _bce_sign_slip, {"dec.", "enc."}),
}


@pytest.mark.parametrize("bug", list(PLANTED))
def test_planted_bugs_are_reported_as_failures(backend, monkeypatch, bug):
    target, replacement, where = PLANTED[bug]
    monkeypatch.setattr(D if target == "bernoulli_log_prob_backward" else model, target, replacement)
    # square layers, so a dropped transpose still has the right shape and nothing crashes
    cfg = VAEConfig(x_dim=4, hidden=(4,), z_dim=4)
    report = check_model(cfg, backend)
    assert not report.passed, report
    failed = [r.name for r in report.rows if not r.passed]
    assert any(any(w in name for w in where) for name in failed), (bug, failed)
    assert "FAIL" in str(report)


def test_layer_bugs_are_caught(backend, rng):
    inputs = {"a": rng.normal((4, 3), "float64")}
    wrong_tanh = lambda dh, h: dh * (1.0 - h)  # noqa: E731  (forgot to square)
    assert not check_pair(layers.tanh_forward, wrong_tanh, inputs, ("a",)).passed
    wrong_softplus = lambda dh, a: dh * layers.sigmoid(-a)  # noqa: E731
    assert not check_pair(layers.softplus_forward, wrong_softplus, inputs, ("a",)).passed
    wrong_half = lambda dz, c: (B.namespace_of(dz).sum(dz, axis=0), c[0] * B.namespace_of(dz).sum(dz * c[1], axis=0))  # noqa: E731
    rep = {"mu": rng.normal((2, 3), "float64"), "logvar": rng.normal((2, 3), "float64"),
           "eps": rng.normal((1, 2, 3), "float64")}
    report = check_pair(D.reparameterize_forward, wrong_half, rep, ("mu", "logvar"))
    assert [r.passed for r in report.rows] == [True, False]


def test_small_errors_are_still_caught(rng):
    """An error of 1e-6 relative to the gradient fails the bar: the check has room to spare."""
    inputs = {"x": rng.normal((5, 4), "float64"), "W": rng.normal((4, 3), "float64"),
              "b": rng.normal((3,), "float64")}

    def slightly_off(dy, cache):
        dx, dW, db = layers.linear_backward(dy, cache)
        return dx, dW * (1 + 1e-6), db

    report = check_pair(layers.linear_forward, slightly_off, inputs, ("x", "W", "b"))
    assert [r.passed for r in report.rows] == [True, False, True]


def test_missing_or_misshapen_gradients_fail(rng):
    x = rng.normal((3,), "float64")
    f = lambda: float(B.namespace_of(x).sum(x * x))  # noqa: E731
    assert not check_gradients(f, {"x": x}, {"x": None}).passed
    assert not check_gradients(f, {"x": x}, {"x": x[:2] * 2.0}).passed
    assert check_gradients(f, {"x": x}, {"x": 2.0 * x}).passed


def test_relu_kinks_are_detected_not_tolerated():
    """Put a pre-activation exactly on the kink: the checker says so and still fails wrong gradients."""
    a = np.array([[0.0, 1.0, -2.0]])
    report = check_pair(layers.relu_forward, layers.relu_backward, {"a": a}, ("a",),
                        dout=np.ones((1, 3)))
    # relu_backward takes the subgradient 0 at a = 0; the stencil sees slope 1/2 there. Without a
    # signature the element is compared, and fails:
    assert not report.passed

    def f():
        return float(np.sum(layers.relu_forward(a)[0]))

    report = check_gradients(f, {"a": a}, {"a": np.array([[0.0, 1.0, 0.0]])},
                             signature=lambda: [a > 0])
    assert report.passed and report.rows[0].kinks == 1 and "ReLU kink" in str(report)
    report = check_gradients(f, {"a": a}, {"a": np.array([[0.0, 0.9, 0.0]])},
                             signature=lambda: [a > 0])
    assert not report.passed


def test_direction_check(backend):
    cfg = VAEConfig(x_dim=8, hidden=(6,), z_dim=3)
    report = check_model(cfg, backend, directions=3)
    assert report.passed, report
    assert sum(r.name.startswith("direction") for r in report.rows) == 3
    params = vae.init_params(cfg, backend=backend, dtype="float64", init="uniform")
    g = B.Generator(0, backend)
    x, eps = g.uniform((3, 8), "float64"), g.normal((1, 3, 3), "float64")
    _, grads, _ = vae.loss_and_grads(params, x, eps, cfg)
    grads["dec.W_out"] = grads["dec.W_out"] * 1.001
    f = lambda: float(vae.forward(params, x, eps, cfg)[0])  # noqa: E731
    dirs = [{k: g.normal(tuple(v.shape), "float64") for k, v in params.items()}]
    assert not check_direction(f, params, grads, dirs).passed

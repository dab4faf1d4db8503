import math

import numpy as np
import pytest

from minivae import VAEConfig, backend as B, decode, encode, init_params, loss_and_grads, param_shapes

MODES = [("bernoulli", "fixed"), ("continuous_bernoulli", "fixed"), ("gaussian", "fixed"),
         ("gaussian", "shared"), ("gaussian", "per_pixel")]


def _setup(backend, cfg, batch=4, dtype="float64", seed=0):
    params = init_params(cfg, seed=seed, backend=backend, dtype=dtype, init="uniform")
    g = B.Generator((seed, 9), backend)
    x = g.uniform((batch, cfg.x_dim), dtype)
    eps = g.normal((cfg.n_samples, batch, cfg.z_dim), dtype)
    return params, x, eps


def test_parameter_names_and_shapes():
    cfg = VAEConfig(x_dim=784, hidden=(500, 200), z_dim=20, likelihood="gaussian", variance="per_pixel")
    shapes = param_shapes(cfg)
    assert shapes == {
        "enc.W0": (784, 500), "enc.b0": (500,), "enc.W1": (500, 200), "enc.b1": (200,),
        "enc.W_mu": (200, 20), "enc.b_mu": (20,), "enc.W_logvar": (200, 20), "enc.b_logvar": (20,),
        "dec.W0": (20, 200), "dec.b0": (200,), "dec.W1": (200, 500), "dec.b1": (500,),
        "dec.W_out": (500, 784), "dec.b_out": (784,),
        "dec.W_logvar": (500, 784), "dec.b_logvar": (784,)}
    shared = param_shapes(VAEConfig(x_dim=4, hidden=(), z_dim=2, likelihood="gaussian", variance="shared"))
    assert shared == {"enc.W_mu": (4, 2), "enc.b_mu": (2,), "enc.W_logvar": (4, 2),
                      "enc.b_logvar": (2,), "dec.W_out": (2, 4), "dec.b_out": (4,), "dec.logvar": ()}


@pytest.mark.parametrize("init", ["normal", "uniform", "glorot"])
def test_init_schemes(init):
    cfg = VAEConfig(x_dim=300, hidden=(200,), z_dim=10, init=init)
    p = init_params(cfg, seed=3)
    W = p["enc.W0"]
    assert W.dtype == np.float32
    if init == "normal":
        assert abs(W.std() - 0.01) < 0.0005 and abs(p["enc.b0"].std() - 0.01) < 0.003
    elif init == "uniform":
        assert abs(np.abs(W).max() - 1 / math.sqrt(300)) < 1e-3
    else:
        assert abs(np.abs(W).max() - math.sqrt(6 / 500)) < 1e-3 and not p["enc.b0"].any()


def test_same_seed_same_model_on_every_backend(backend):
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=2)
    ref = init_params(cfg, seed=11, backend="numpy", dtype="float64")
    got = init_params(cfg, seed=11, backend=backend, dtype="float64")
    for k in ref:
        np.testing.assert_array_equal(B.to_numpy(got[k]), ref[k])


@pytest.mark.parametrize("likelihood,variance", MODES)
@pytest.mark.parametrize("hidden", [(), (5,), (5, 4)])
def test_grads_have_the_keys_and_shapes_of_params(backend, likelihood, variance, hidden):
    cfg = VAEConfig(x_dim=6, hidden=hidden, z_dim=3, likelihood=likelihood, variance=variance, n_samples=2)
    params, x, eps = _setup(backend, cfg)
    loss, grads, stats = loss_and_grads(params, x, eps, cfg)
    assert list(grads) == list(params)
    for k in params:
        assert tuple(grads[k].shape) == tuple(params[k].shape), k
        assert B.backend_of(grads[k]) == backend
    assert math.isclose(loss, stats["recon"] + stats["kl"], rel_tol=1e-12)
    assert stats["kl"] >= 0


@pytest.mark.parametrize("likelihood,variance", MODES)
def test_loss_is_the_negative_elbo_written_out(backend, likelihood, variance):
    """Recompute -ELBO from encode/decode and the textbook formulas, in NumPy, term by term."""
    cfg = VAEConfig(x_dim=5, hidden=(4,), z_dim=2, likelihood=likelihood, variance=variance,
                    sigma=0.7, n_samples=3)
    params, x, eps = _setup(backend, cfg, batch=3)
    loss, _, stats = loss_and_grads(params, x, eps, cfg)
    mu, logvar = (B.to_numpy(a) for a in encode(params, x, cfg))
    e = B.to_numpy(eps)
    z = mu + np.exp(0.5 * logvar) * e
    dist = {k: B.to_numpy(v) for k, v in decode(params, B.from_numpy(z, backend), cfg).items()}
    xn = B.to_numpy(x)
    if likelihood == "gaussian":
        var = np.exp(dist["logvar"])
        if variance == "fixed":
            assert np.allclose(var, 0.49)
        logp = np.sum(-0.5 * np.log(2 * np.pi * var) - (xn - dist["mean"]) ** 2 / (2 * var), axis=-1)
    else:
        y = 1 / (1 + np.exp(-dist["logits"]))
        logp = np.sum(xn * np.log(y) + (1 - xn) * np.log(1 - y), axis=-1)
        if likelihood == "continuous_bernoulli":
            logp += np.sum(np.log(2 * np.arctanh(1 - 2 * y) / (1 - 2 * y)), axis=-1)
    kl = 0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar, axis=-1)
    np.testing.assert_allclose(stats["recon"], -logp.mean(), rtol=1e-12)
    np.testing.assert_allclose(stats["kl"], kl.mean(), rtol=1e-12)
    np.testing.assert_allclose(loss, -logp.mean() + kl.mean(), rtol=1e-12)


def test_backends_agree(backend):
    cfg = VAEConfig(x_dim=7, hidden=(6, 5), z_dim=3, n_samples=2, likelihood="continuous_bernoulli")
    ref_params, ref_x, ref_eps = _setup("numpy", cfg)
    loss_ref, grads_ref, _ = loss_and_grads(ref_params, ref_x, ref_eps, cfg)
    params = {k: B.from_numpy(v, backend) for k, v in ref_params.items()}
    loss, grads, _ = loss_and_grads(params, B.from_numpy(ref_x, backend), B.from_numpy(ref_eps, backend), cfg)
    assert math.isclose(loss, loss_ref, rel_tol=1e-12)
    for k in grads:
        np.testing.assert_allclose(B.to_numpy(grads[k]), grads_ref[k], rtol=1e-10, atol=1e-14)


def test_float32_stays_float32(backend):
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=2, likelihood="gaussian", variance="shared")
    params, x, eps = _setup(backend, cfg, dtype="float32")
    _, grads, _ = loss_and_grads(params, x, eps, cfg)
    assert {B.dtype_name(g) for g in grads.values()} == {"float32"}


def test_decode_shapes(backend):
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=2, likelihood="gaussian", variance="per_pixel")
    params, _, eps = _setup(backend, cfg)
    out = decode(params, eps, cfg)
    assert tuple(out["mean"].shape) == (1, 4, 6) and tuple(out["logvar"].shape) == (1, 4, 6)


# --- bad input: a ValueError that names the argument, what was expected, and what was given ---

def test_bad_config_values():
    with pytest.raises(ValueError, match="likelihood: expected one of"):
        VAEConfig(x_dim=4, likelihood="poisson")
    with pytest.raises(ValueError, match="activation"):
        VAEConfig(x_dim=4, activation="gelu")
    with pytest.raises(ValueError, match="z_dim: expected a positive integer, got 0"):
        VAEConfig(x_dim=4, z_dim=0)
    with pytest.raises(ValueError, match=r"hidden\[1\]"):
        VAEConfig(x_dim=4, hidden=(3, -1))
    with pytest.raises(ValueError, match="variance='shared' applies to likelihood='gaussian' only"):
        VAEConfig(x_dim=4, variance="shared")
    with pytest.raises(ValueError, match="sigma"):
        VAEConfig(x_dim=4, likelihood="gaussian", sigma=0.0)
    with pytest.raises(ValueError, match="n_samples"):
        VAEConfig(x_dim=4, n_samples=1.5)
    with pytest.raises(ValueError, match="init"):
        init_params(VAEConfig(x_dim=4), init="xavier")


def _bad(backend, **override):
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=2, n_samples=2)
    params, x, eps = _setup(backend, cfg)
    args = {"params": params, "x": x, "eps": eps, "cfg": cfg, **override}
    return lambda: loss_and_grads(args["params"], args["x"], args["eps"], args["cfg"])


def test_bad_x_shape(backend):
    x = B.Generator(0, backend).uniform((4, 5), "float64")
    with pytest.raises(ValueError, match=r"x: expected an array of shape \(batch, 6\), got \(4, 5\)"):
        _bad(backend, x=x)()
    x3 = B.Generator(0, backend).uniform((4, 2, 3), "float64")
    with pytest.raises(ValueError, match="flatten"):
        _bad(backend, x=x3)()


def test_bad_x_dtype(backend):
    x = B.Generator(0, backend).uniform((4, 6), "float32")
    with pytest.raises(ValueError, match="x: expected dtype float64 .* got float32"):
        _bad(backend, x=x)()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_x(backend, value):
    a = np.full((4, 6), 0.5)
    a[2, 3] = value
    with pytest.raises(ValueError, match="x: contains NaN or infinite"):
        _bad(backend, x=B.from_numpy(a, backend))()


def test_pixels_outside_unit_interval(backend):
    a = np.full((4, 6), 0.5)
    a[0, 0] = 255.0
    with pytest.raises(ValueError, match=r"needs values in \[0, 1\], got values in \[0.5, 255\]"):
        _bad(backend, x=B.from_numpy(a, backend))()
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=2, likelihood="gaussian")
    params, _, eps = _setup(backend, cfg)
    loss_and_grads(params, B.from_numpy(a * 2 - 3, backend), eps, cfg)  # a Gaussian takes any real x


def test_bad_eps(backend):
    eps = B.Generator(0, backend).normal((4, 2), "float64")
    with pytest.raises(ValueError, match=r"eps: expected shape \(n_samples, batch, z_dim\) = \(2, 4, 2\), got \(4, 2\)"):
        _bad(backend, eps=eps)()


def test_params_from_another_architecture(backend):
    other = init_params(VAEConfig(x_dim=6, hidden=(7,), z_dim=2), backend=backend, dtype="float64")
    with pytest.raises(ValueError, match=r"params\['enc.W0'\]: expected shape \(6, 5\) for this config, got \(6, 7\)"):
        _bad(backend, params=other)()
    other = init_params(VAEConfig(x_dim=6, hidden=(5, 5), z_dim=2), backend=backend, dtype="float64")
    with pytest.raises(ValueError, match="unexpected"):
        _bad(backend, params=other)()


def test_mixed_backends_are_named():
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=2, n_samples=2)
    params, x, eps = _setup("strict", cfg)
    with pytest.raises(ValueError, match="x is a numpy array but the parameters live on 'strict'"):
        loss_and_grads(params, B.to_numpy(x), eps, cfg)


# --- bad input to the public API is a ValueError that says what to do (issue: reliability) --------

def _api_inputs(backend):
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=2)
    params = init_params(cfg, backend=backend, dtype="float64")
    g = B.Generator(0, backend)
    return cfg, params, g.uniform((3, 6), "float64"), g.normal((1, 3, 2), "float64")


def test_bad_api_input_is_a_value_error(backend):
    cfg, p, x, eps = _api_inputs(backend)
    xp = B.namespace(backend)
    nan_b0 = dict(p, **{"enc.b0": p["enc.b0"] * float("nan")})
    cases = [
        (lambda: loss_and_grads(list(p.values()), x, eps, cfg), "params: expected a dict"),
        (lambda: loss_and_grads(p, x, eps, cfg.to_dict()), "cfg: expected a VAEConfig, got dict"),
        (lambda: loss_and_grads(p, x, eps, None), "cfg: expected a VAEConfig, got NoneType"),
        (lambda: loss_and_grads(p, [[0.1] * 6] * 3, eps, cfg), "x: expected an array .* got list"),
        (lambda: loss_and_grads(p, x, [[[0.0, 0.0]] * 3], cfg), "eps: expected an array .* got list"),
        (lambda: loss_and_grads(p, x, eps * float("nan"), cfg), "eps: contains NaN"),
        (lambda: loss_and_grads(nan_b0, x, eps, cfg), "params .*: contains NaN"),
        (lambda: decode(p, [[0.0, 0.0]], cfg), "z: expected an array .* got list"),
        (lambda: decode(p, xp.zeros((2, 3), dtype=xp.float64, device=x.device), cfg),
         r"z: expected a float64 array of shape \(N, 2\)"),
        (lambda: encode(p, [[0.0] * 6], cfg), "x: expected an array .* got list"),
        (lambda: encode({k: v for k, v in list(p.items())[:3]}, x, cfg), "params do not match the config"),
        (lambda: encode(nan_b0, x, cfg), "contains NaN"),
        (lambda: encode(p, x * 2.0, cfg), r"needs values in \[0, 1\]"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_config_takes_any_integral_and_real_type():
    cfg = VAEConfig(x_dim=np.int64(6), hidden=(np.int32(5),), z_dim=np.uint8(2), sigma=np.float32(0.5))
    assert cfg == VAEConfig(x_dim=6, hidden=(5,), z_dim=2, sigma=0.5)
    assert type(cfg.x_dim) is int and type(cfg.hidden[0]) is int and type(cfg.sigma) is float
    with pytest.raises(ValueError, match="x_dim: expected a positive integer, got 6.0"):
        VAEConfig(x_dim=6.0)
    with pytest.raises(ValueError, match="expected a dict, got list"):
        VAEConfig.from_dict([1])

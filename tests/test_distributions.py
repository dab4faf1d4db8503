import math

import numpy as np
import pytest

from minivae import backend as B
from minivae.core import distributions as D
from minivae.core.gradcheck import check_pair


def test_reparameterize_pair(rng):
    inputs = {"mu": rng.normal((4, 3), "float64"), "logvar": rng.normal((4, 3), "float64"),
              "eps": rng.normal((2, 4, 3), "float64")}
    report = check_pair(D.reparameterize_forward, D.reparameterize_backward, inputs, ("mu", "logvar"))
    assert report.passed, report


def test_reparameterized_samples_have_variance_exp_logvar(backend):
    """logvar is log sigma^2: the samples' variance is exp(logvar), not exp(2 logvar) or exp(logvar)^2.

    This is the numpy-ml / early-Keras bug (noise scaled by exp(logvar) while the KL reads the same
    head as a log-variance); with 200k draws the standard error of the variance is ~0.3%.
    """
    mu = B.from_numpy([[0.5, -1.0, 2.0]], backend, "float64")
    logvar = B.from_numpy([[math.log(4.0), 0.0, math.log(0.25)]], backend, "float64")
    eps = B.Generator(0, backend).normal((200_000, 1, 3), "float64")
    z, _ = D.reparameterize_forward(mu, logvar, eps)
    z = B.to_numpy(z)[:, 0, :]
    np.testing.assert_allclose(z.var(axis=0), [4.0, 1.0, 0.25], rtol=0.02)
    np.testing.assert_allclose(z.mean(axis=0), [0.5, -1.0, 2.0], atol=0.02)


def test_kl_pair_and_value(rng, backend):
    mu, logvar = rng.normal((4, 3), "float64"), rng.normal((4, 3), "float64")
    report = check_pair(D.gaussian_kl_forward, D.gaussian_kl_backward,
                        {"mu": mu, "logvar": logvar}, ("mu", "logvar"))
    assert report.passed, report
    kl, _ = D.gaussian_kl_forward(mu, logvar)
    m, lv = B.to_numpy(mu), B.to_numpy(logvar)
    want = 0.5 * np.sum(np.exp(lv) + m**2 - 1 - lv, axis=1)
    np.testing.assert_allclose(B.to_numpy(kl), want, rtol=1e-14)
    zero, _ = D.gaussian_kl_forward(mu * 0.0, logvar * 0.0)
    assert float(B.namespace(backend).max(B.namespace(backend).abs(zero))) == 0.0


def test_analytic_kl_matches_monte_carlo(backend):
    """KL(q || p) = E_q[log q(z) - log p(z)]: the analytic value lies within 4 standard errors."""
    mu = B.from_numpy([[0.3, -1.2]], backend, "float64")
    logvar = B.from_numpy([[-0.5, 0.8]], backend, "float64")
    eps = B.Generator(5, backend).normal((100_000, 1, 2), "float64")
    z, _ = D.reparameterize_forward(mu, logvar, eps)
    log_q, _ = D.gaussian_log_prob_forward(z, mu, logvar)
    xp = B.namespace(backend)
    log_p, _ = D.gaussian_log_prob_forward(z, xp.zeros_like(z), xp.zeros((), dtype=z.dtype, device=z.device))
    diff = B.to_numpy(log_q - log_p)[:, 0]
    analytic = float(B.to_numpy(D.gaussian_kl_forward(mu, logvar)[0])[0])
    assert abs(diff.mean() - analytic) < 4 * diff.std() / math.sqrt(len(diff))


@pytest.mark.parametrize("name", ["bernoulli", "continuous_bernoulli"])
def test_bernoulli_type_pairs(rng, name):
    inputs = {"x": rng.uniform((3, 4, 5), "float64"), "logits": 3.0 * rng.normal((3, 4, 5), "float64")}
    fwd = getattr(D, f"{name}_log_prob_forward")
    bwd = getattr(D, f"{name}_log_prob_backward")
    report = check_pair(fwd, bwd, inputs, ("logits",))
    assert report.passed, report


@pytest.mark.parametrize("logvar_shape", [(), (3, 4, 5)], ids=["scalar", "per_pixel"])
def test_gaussian_pair(rng, logvar_shape):
    inputs = {"x": rng.uniform((3, 4, 5), "float64"), "mean": rng.normal((3, 4, 5), "float64"),
              "logvar": rng.normal(logvar_shape, "float64")}

    def backward(dlogp, cache):
        dmean, dlogvar = D.gaussian_log_prob_backward(dlogp, cache)
        if logvar_shape == ():
            dlogvar = B.namespace_of(dlogvar).sum(dlogvar)
        return dmean, dlogvar

    report = check_pair(D.gaussian_log_prob_forward, backward, inputs, ("mean", "logvar"))
    assert report.passed, report


def test_gaussian_log_prob_value(backend):
    x = np.array([[0.2, 0.9]]); mean = np.array([[0.0, 1.0]]); logvar = np.array([[0.3, -1.0]])
    got, _ = D.gaussian_log_prob_forward(*(B.from_numpy(a, backend) for a in (x, mean, logvar)))
    var = np.exp(logvar)
    want = np.sum(-0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var))
    np.testing.assert_allclose(B.to_numpy(got), [want], rtol=1e-14)


@pytest.mark.parametrize("name", ["bernoulli", "continuous_bernoulli"])
def test_log_likelihoods_are_finite_at_extreme_logits(backend, name):
    logits = B.from_numpy([[-1e4, -30.0, 0.0, 30.0, 1e4]], backend, "float64")
    x = B.from_numpy([[0.0, 0.3, 0.5, 0.7, 1.0]], backend, "float64")
    logp, cache = getattr(D, f"{name}_log_prob_forward")(x, logits)
    dlogits = getattr(D, f"{name}_log_prob_backward")(B.from_numpy([1.0], backend, "float64"), cache)
    assert np.all(np.isfinite(B.to_numpy(logp))) and np.all(np.isfinite(B.to_numpy(dlogits)))
    # x = 0 under logits -1e4 and x = 1 under +1e4 are (nearly) certain: their terms are ~0 (Bernoulli)
    # or log C ~ log 1e4 (continuous Bernoulli): nothing like log(0).
    assert float(B.to_numpy(logp)[0]) > -1e3


def test_gaussian_log_prob_is_stable_for_extreme_logvar(backend):
    x = B.from_numpy([[0.5, 0.5]], backend, "float64")
    mean = B.from_numpy([[0.5, 0.4]], backend, "float64")
    logvar = B.from_numpy([[-30.0, 30.0]], backend, "float64")
    logp, _ = D.gaussian_log_prob_forward(x, mean, logvar)
    assert np.isfinite(B.to_numpy(logp)).all()


def test_continuous_bernoulli_is_a_density():
    """It integrates to 1 over [0, 1] for any lambda; the plain Bernoulli formula integrates to 1/C."""
    x = (np.arange(200_000) + 0.5) / 200_000  # midpoint rule
    for eta in (-20.0, -3.0, -0.05, 0.0, 1e-7, 0.5, 4.0, 25.0):
        logits = np.full((1, x.size), eta)
        logp_cb = D.continuous_bernoulli_log_prob_forward(x[:, None], logits.T)[0]
        logp_b = D.bernoulli_log_prob_forward(x[:, None], logits.T)[0]
        assert abs(np.mean(np.exp(logp_cb)) - 1.0) < 1e-6, eta
        # the plain Bernoulli formula integrates to 1/C(lambda) <= 1/2: not a density on [0, 1]
        inv_c = math.exp(-D.continuous_bernoulli_log_norm(np.array([eta]))[0])
        assert abs(np.mean(np.exp(logp_b)) - inv_c) < 1e-6 and inv_c <= 0.5 + 1e-12


def test_continuous_bernoulli_taylor_branch_is_continuous():
    """Both branches agree at the cutoff, and the log-normalizer and mean match high-precision values."""
    cut = D.CB_TAYLOR_CUTOFF
    for eta in (cut * (1 - 1e-12), cut * (1 + 1e-12), -cut * (1 - 1e-12), -cut * (1 + 1e-12)):
        a = np.array([eta])
        assert abs(D.continuous_bernoulli_log_norm(a)[0]
                   - math.log(eta / math.tanh(eta / 2))) < 1e-15
        assert abs(D.continuous_bernoulli_log_norm_grad(a)[0] - (1 / eta - 1 / math.sinh(eta))) < 1e-13
        mean = 0.5 + 0.5 * (1 / math.tanh(eta / 2) - 2 / eta)
        assert abs(D.continuous_bernoulli_mean(a)[0] - mean) < 1e-13
    assert D.continuous_bernoulli_log_norm(np.array([0.0]))[0] == math.log(2.0)
    assert D.continuous_bernoulli_mean(np.array([0.0]))[0] == 0.5


def test_continuous_bernoulli_mean_is_the_expectation():
    x = (np.arange(100_000) + 0.5) / 100_000
    for eta in (-6.0, -0.03, 0.7, 9.0):
        logp = D.continuous_bernoulli_log_prob_forward(x[:, None], np.full((x.size, 1), eta))[0]
        assert abs(np.mean(x * np.exp(logp)) - D.continuous_bernoulli_mean(np.array([eta]))[0]) < 1e-8

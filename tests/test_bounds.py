import math

import numpy as np

from minivae import VAEConfig, backend as B, init_params
from minivae.core import bounds


def _model(backend, **kw):
    cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=2, **kw)
    params = init_params(cfg, seed=2, backend=backend, dtype="float64", init="uniform")
    x = B.from_numpy((np.random.default_rng(0).random((4, 6)) > 0.5).astype(float), backend)
    return cfg, params, x


def test_logmeanexp_is_exact_and_stable(backend):
    a = B.from_numpy([[1000.0, -1000.0], [1000.0, -1001.0]], backend)
    got = B.to_numpy(bounds.logmeanexp(a, axis=0))
    np.testing.assert_allclose(got, [1000.0, -1000.0 + math.log((1 + math.exp(-1)) / 2)], rtol=1e-15)


def test_iwae_bound_is_above_the_elbo_and_rises_with_k(backend):
    cfg, params, x = _model(backend)
    x = B.namespace(backend).concat([x] * 100, axis=0)  # 100 repeats: averages out the draws
    values = {}
    for k in (1, 10, 100, 1000):
        values[k] = float(np.mean(B.to_numpy(bounds.iwae_bound(params, x, cfg, k, B.Generator(k, backend)))))
    elbo = float(np.mean(B.to_numpy(bounds.elbo(params, x, cfg, B.Generator(0, backend), n_samples=20)[0])))
    assert abs(values[1] - elbo) < 0.5  # L_1 is a one-sample ELBO estimate
    assert elbo < values[10] < values[100] < values[1000]


def test_iwae_combines_chunks_exactly(backend):
    """Feeding fixed log-weights through the chunk combination equals one logmeanexp."""
    cfg, params, x = _model(backend)

    class Fixed:
        def __init__(self):
            self.draws = np.random.default_rng(1).standard_normal((230, 4, 2))
            self.i = 0

        def normal(self, shape, dtype):
            out = self.draws[self.i:self.i + shape[0]]
            self.i += shape[0]
            return B.from_numpy(out, backend, dtype)

    whole = bounds.iwae_bound(params, x, cfg, 230, Fixed(), chunk=230)
    parts = bounds.iwae_bound(params, x, cfg, 230, Fixed(), chunk=60)
    np.testing.assert_allclose(B.to_numpy(parts), B.to_numpy(whole), rtol=1e-13)


def test_active_units():
    mu = np.random.default_rng(0).standard_normal((500, 3)) * np.array([1.0, 0.05, 0.2])
    count, var = bounds.active_units(mu)
    assert count == 2 and var.shape == (3,)


def test_evaluate_reports_every_number(backend):
    cfg, params, x = _model(backend)
    out = bounds.evaluate(params, x, cfg, B.Generator(0, backend), k=50, batch_size=3)
    assert set(out) == {"elbo", "recon", "kl", "iwae_50", "active_units"}
    assert out["iwae_50"] > out["elbo"] - 0.5
    assert math.isclose(out["elbo"], -out["recon"] - out["kl"], rel_tol=1e-12)

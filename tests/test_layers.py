import numpy as np
import pytest

from minivae import backend as B
from minivae.core import layers
from minivae.core.gradcheck import check_pair


def _inputs(rng, **shapes):
    return {k: rng.normal(s, "float64") for k, s in shapes.items()}


def test_linear_pair(rng):
    inputs = _inputs(rng, x=(5, 4), W=(4, 3), b=(3,))
    report = check_pair(layers.linear_forward, layers.linear_backward, inputs, ("x", "W", "b"))
    assert report.passed, report


def test_linear_backward_can_skip_dx(rng):
    inputs = _inputs(rng, x=(5, 4), W=(4, 3), b=(3,))
    out, cache = layers.linear_forward(**inputs)
    dx, dW, db = layers.linear_backward(out, cache, need_dx=False)
    assert dx is None and tuple(dW.shape) == (4, 3) and tuple(db.shape) == (3,)


@pytest.mark.parametrize("name", ["tanh", "softplus", "relu", "sigmoid"])
def test_activation_pairs(rng, name):
    forward = getattr(layers, f"{name}_forward")
    backward = getattr(layers, f"{name}_backward")
    a = 2.0 * rng.normal((6, 5), "float64")
    report = check_pair(forward, backward, {"a": a}, ("a",))
    assert report.passed, report


@pytest.mark.parametrize("fn,expect", [
    (layers.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    (layers.softplus, lambda a: np.logaddexp(0, a)),
])
def test_stable_at_extreme_inputs(backend, fn, expect):
    a = np.array([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4])
    with np.errstate(over="ignore"):
        want = expect(a)
    got = B.to_numpy(fn(B.from_numpy(a, backend)))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_activation_table_matches_the_pairs():
    for name, (fwd, bwd) in layers.ACTIVATIONS.items():
        assert fwd is getattr(layers, f"{name}_forward")
        assert bwd is getattr(layers, f"{name}_backward")

"""Each update rule against its textbook formula, written out in NumPy, over several steps."""

import numpy as np
import pytest

from minivae import backend as B, optim


def _run(rule, backend, steps=4, **hyper):
    g = np.random.default_rng(0)
    w0 = g.standard_normal((3, 2))
    grads = [g.standard_normal((3, 2)) for _ in range(steps)]
    w = B.from_numpy(w0, backend)
    config = dict(hyper)
    for dw in grads:
        w, config = getattr(optim, rule)(w, B.from_numpy(dw, backend), config)
    return w0, grads, B.to_numpy(w), config


def test_sgd(backend):
    w0, grads, w, _ = _run("sgd", backend, lr=0.1, weight_decay=0.01)
    ref = w0.copy()
    for dw in grads:
        ref = ref - 0.1 * (dw + 0.01 * ref)
    np.testing.assert_allclose(w, ref, rtol=1e-14)


def test_momentum(backend):
    w0, grads, w, _ = _run("momentum", backend, lr=0.1, momentum=0.8)
    ref, v = w0.copy(), np.zeros_like(w0)
    for dw in grads:
        v = 0.8 * v - 0.1 * dw
        ref = ref + v
    np.testing.assert_allclose(w, ref, rtol=1e-14)


def test_adagrad(backend):
    w0, grads, w, _ = _run("adagrad", backend, lr=0.05)
    ref, G = w0.copy(), np.zeros_like(w0)
    for dw in grads:
        G += dw * dw
        ref = ref - 0.05 * dw / (np.sqrt(G) + 1e-8)
    np.testing.assert_allclose(w, ref, rtol=1e-14)


def test_adam(backend):
    w0, grads, w, config = _run("adam", backend, lr=0.01, weight_decay=0.1)
    ref, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, dw in enumerate(grads, start=1):
        dw = dw + 0.1 * ref
        m = 0.9 * m + 0.1 * dw
        v = 0.999 * v + 0.001 * dw * dw
        ref = ref - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(w, ref, rtol=1e-13)
    assert config["t"] == 4


def test_state_stays_in_float32(backend):
    w = B.from_numpy(np.ones((2, 2)), backend, "float32")
    for rule in optim.RULES:
        config = {}
        for _ in range(2):
            w2, config = optim.RULES[rule](w, w, config)
        assert B.dtype_name(w2) == "float32"
        assert all(B.dtype_name(v) == "float32" for v in config.values() if hasattr(v, "shape"))


def test_step_updates_every_parameter_and_rejects_unknown_rules(backend):
    params = {"a": B.from_numpy(np.ones(3), backend), "b": B.from_numpy(np.ones((2, 2)), backend)}
    grads = {k: v * 2.0 for k, v in params.items()}
    state = {}
    optim.step(params, grads, state, "sgd", lr=0.5)
    assert np.all(B.to_numpy(params["a"]) == 0.0) and set(state) == {"a", "b"}
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        optim.step(params, grads, state, "rmsprop")

"""Each update rule against its textbook formula, written out in NumPy, over several steps."""

import numpy as np
import pytest

from minivae import backend as B, optim


def _run(rule, backend, steps=4, **hyper):
    g = np.random.default_rng(0)
    w0 = g.standard_normal((3, 2))
    grads = [g.standard_normal((3, 2)) for _ in range(steps)]
    w = B.from_numpy(w0.copy(), backend)
    config = dict(hyper)
    for dw in grads:
        w_next, config = getattr(optim, rule)(w, B.from_numpy(dw, backend), config)
        assert w_next is w  # updated in place, as CS231n's rules do
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


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_chunked_updates_are_bit_identical(monkeypatch, rule):
    """step() cuts big NumPy parameters into pieces; elementwise rules give the same bits, which are
    also those of the core's plain step, tensor by tensor."""
    from minivae.core import optim as core_optim
    g = np.random.default_rng(1)
    shapes = {"W": (13, 11), "b": (11,), "s": ()}
    runs = []
    for step, chunk in ((optim.step, 10**9), (optim.step, 7), (core_optim.step, 7)):
        monkeypatch.setattr(optim, "CHUNK", chunk)
        params = {k: g.standard_normal(s).astype(np.float32) * 0 + np.float32(1.5) for k, s in shapes.items()}
        state = {}
        for i in range(3):
            grads = {k: np.random.default_rng(i).standard_normal(s).astype(np.float32) for k, s in shapes.items()}
            step(params, grads, state, rule, weight_decay=0.01)
        runs.append((params, state))
    for other in runs[1:]:
        for k in shapes:
            np.testing.assert_array_equal(runs[0][0][k], other[0][k])
            for key, value in runs[0][1][k].items():
                np.testing.assert_array_equal(np.asarray(value), np.asarray(other[1][k][key]))


def test_step_updates_every_parameter_and_rejects_unknown_rules(backend):
    params = {"a": B.from_numpy(np.ones(3), backend), "b": B.from_numpy(np.ones((2, 2)), backend)}
    grads = {k: v * 2.0 for k, v in params.items()}
    state = {}
    optim.step(params, grads, state, "sgd", lr=0.5)
    assert np.all(B.to_numpy(params["a"]) == 0.0) and set(state) == {"a", "b"}
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        optim.step(params, grads, state, "rmsprop")


def test_hyperparameters_given_to_step_take_effect_every_call():
    """A learning-rate schedule: the lr passed to step() is the one used, also after the first call."""
    params = {"w": np.ones(3, np.float32)}
    state = {}
    optim.step(params, {"w": np.ones(3, np.float32)}, state, "sgd", lr=0.5)
    optim.step(params, {"w": np.ones(3, np.float32)}, state, "sgd", lr=0.25)
    np.testing.assert_array_equal(params["w"], np.full(3, 0.25, np.float32))
    assert state["w"]["lr"] == 0.25


@pytest.mark.parametrize("rule", ["sgd", "momentum", "adagrad", "adam"])
def test_flat_updates_are_those_of_step_bit_for_bit(backend, rule):
    """optim.Flat (one buffer, a dozen operations a step on a device) against step tensor by tensor,
    from fresh state and from state half-way (as a resumed run has it)."""
    from minivae import VAEConfig, init_params
    from minivae.optim import Flat, step
    cfg = VAEConfig(x_dim=7, hidden=(5,), z_dim=3, likelihood="gaussian", variance="shared")
    a, b = init_params(cfg, seed=1, backend=backend), init_params(cfg, seed=1, backend=backend)
    grads = [{k: v * (0.3 + i) - 0.05 for k, v in init_params(cfg, seed=10 + i, backend=backend).items()}
             for i in range(6)]
    state_a, state_b = {}, {}
    for g in grads[:3]:
        step(a, g, state_a, rule, lr=0.01, weight_decay=0.001)
        step(b, g, state_b, rule, lr=0.01, weight_decay=0.001)
    flat = Flat(b, state_b, rule)                  # takes over b and its state half-way
    for g in grads[3:]:
        step(a, g, state_a, rule, lr=0.01, weight_decay=0.001)
        flat.step(g, lr=0.01, weight_decay=0.001)
    for k in a:
        np.testing.assert_array_equal(B.to_numpy(b[k]), B.to_numpy(a[k]), err_msg=k)
        for key, value in state_a[k].items():
            if key in ("m", "v", "velocity", "sum_sq"):
                np.testing.assert_array_equal(B.to_numpy(state_b[k][key]), B.to_numpy(value))
            else:
                assert state_b[k][key] == value, (k, key)
    if backend != "numpy":  # the device path: params and state are views of the flat buffers
        assert tuple(flat.w.shape) == (sum(int(np.prod(v.shape)) for v in a.values()),)


def test_pieces_cut_big_tensors_and_gather_small_neighbours():
    """The 784-500-20 model's buffer in pieces of at most CHUNK: each big matrix cut on its own, the
    seven tensors between them one piece, the last bias its own; on a device, one piece."""
    sizes = [392000, 500, 10000, 20, 10000, 20, 10000, 500, 392000, 784]
    pieces = optim.plan_pieces(sizes, optim.CHUNK)
    assert pieces[0] == (0, 65536) and (392000, 423040) in pieces and pieces[-1] == (815040, 815824)
    assert len(pieces) == 14
    assert [start for start, _ in pieces[1:]] == [stop for _, stop in pieces[:-1]]   # no gap, no overlap
    assert all(0 < stop - start <= optim.CHUNK for start, stop in pieces)
    assert optim.plan_pieces(sizes, None) == [(0, sum(sizes))]
    assert optim.plan_pieces([3, 3, 3, 3], 7) == [(0, 6), (6, 12)]
    assert optim.plan_pieces([2, 20, 2, 2], 7) == [(0, 2), (2, 9), (9, 16), (16, 22), (22, 26)]


@pytest.mark.parametrize("rule", ["sgd", "momentum", "adagrad", "adam"])
def test_flat_in_pieces_updates_are_those_of_step_bit_for_bit(monkeypatch, rule):
    """On NumPy, Flat runs the rule over pieces of its buffer: pieces inside one tensor (its gradient
    a view), and pieces gathering several small tensors' gradients. Same bits as step tensor by
    tensor, and every tensor's state and scalars as step leaves them."""
    from minivae import VAEConfig, init_params
    from minivae.optim import Flat, step
    monkeypatch.setattr(optim, "CHUNK", 8)
    cfg = VAEConfig(x_dim=7, hidden=(5,), z_dim=3, likelihood="gaussian", variance="shared")
    a, b = init_params(cfg, seed=1), init_params(cfg, seed=1)
    state_a, state_b = {}, {}
    flat = Flat(b, state_b, rule)
    kinds = {(lo is None, len(parts)) for _, _, parts in flat.pieces for _, lo, _ in parts[:1]}
    assert (False, 1) in kinds and any(len(parts) > 1 for _, _, parts in flat.pieces)   # cut, and gathered
    for i in range(4):
        g = {k: v * (0.3 + i) - 0.05 for k, v in init_params(cfg, seed=10 + i).items()}
        step(a, g, state_a, rule, lr=0.01, weight_decay=0.001)
        flat.step(g, lr=0.01, weight_decay=0.001)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
        assert state_b[k].keys() == state_a[k].keys()
        for key, value in state_a[k].items():
            np.testing.assert_array_equal(np.asarray(state_b[k][key]), np.asarray(value), err_msg=(k, key))

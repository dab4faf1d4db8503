import numpy as np
import pytest

from minivae import backend as B


def test_round_trip_keeps_values_and_dtype(backend):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = B.from_numpy(a, backend)
    assert B.backend_of(x) == backend
    assert B.dtype_name(x) == "float32"
    np.testing.assert_array_equal(B.to_numpy(x), a)
    y = B.from_numpy(a, backend, dtype="float64")
    assert B.dtype_name(y) == "float64"


def test_strict_lives_on_its_emulated_device():
    x = B.from_numpy([1.0, 2.0], "strict")
    assert str(x.device) == str(B.device("strict"))
    with pytest.raises(Exception):
        np.asarray(x)  # no silent conversion to NumPy: that is what to_numpy is for
    np.testing.assert_array_equal(B.to_numpy(x), [1.0, 2.0])


def test_generator_is_seeded_and_identical_on_the_host_backends():
    draws = {}
    for name in ("numpy", "strict"):
        g = B.Generator((7, 0, 3), name)
        draws[name] = [B.to_numpy(g.normal((4, 3))), B.to_numpy(g.uniform((5,))),
                       B.to_numpy(g.permutation(10))]
    for a, b in zip(draws["numpy"], draws["strict"]):
        np.testing.assert_array_equal(a, b)
    again = B.Generator((7, 0, 3), "numpy").normal((4, 3))
    np.testing.assert_array_equal(again, draws["numpy"][0])
    other = B.Generator((7, 0, 4), "numpy").normal((4, 3))
    assert not np.array_equal(other, draws["numpy"][0])


def test_generator_dtype_and_ranges(backend):
    g = B.Generator(0, backend)
    u = B.to_numpy(g.uniform((1000,), "float64"))
    assert u.dtype == np.float64 and u.min() >= 0 and u.max() < 1
    n = B.to_numpy(g.normal((20000,), "float32"))
    assert n.dtype == np.float32 and abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05
    p = B.to_numpy(g.permutation(50))
    assert sorted(p.tolist()) == list(range(50))


def test_unknown_backend_and_dtype_are_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        B.namespace("torch")
    with pytest.raises(ValueError, match="dtype must be one of"):
        B.dtype_of("float16")


def test_cupy_unavailable_says_how_to_fix():
    if B.is_available("cupy"):
        pytest.skip("CuPy works here")
    with pytest.raises(B.BackendUnavailable, match="cupy"):
        B.namespace("cupy")

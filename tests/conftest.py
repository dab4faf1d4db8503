"""Every core test runs on each backend: numpy, strict (array-api-strict on its emulated device),
and cupy when a CUDA device is present."""

import pytest

from minivae import backend as B


def pytest_configure(config):
    """The strict backend refuses, besides what the standard leaves out, the operations whose
    output shape depends on the data (boolean masks, nonzero, unique_*): on a GPU each of those
    waits for the device to learn the shape, so none may appear in minivae's code."""
    try:
        import array_api_strict
    except ImportError:
        return
    array_api_strict.set_array_api_strict_flags(data_dependent_shapes=False, boolean_indexing=False)


def _backend_params():
    usable, why = B.cupy_status()
    marks = {"cupy": pytest.mark.skipif(not usable, reason=f"would run this test on CuPy, on a CUDA "
                                        f"GPU; here {why}")}
    return [pytest.param(name, marks=marks.get(name, ())) for name in B.BACKENDS]


@pytest.fixture(params=_backend_params())
def backend(request):
    return request.param


@pytest.fixture
def xp(backend):
    return B.namespace(backend)


@pytest.fixture
def rng(backend):
    return B.Generator(1234, backend)

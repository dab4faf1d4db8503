"""The CuPy path, checked against the real CuPy package on a machine without a GPU.

CuPy installs and imports without a device (creating an array is what fails). So: run the library's
work on the strict backend (a training step, an evaluation with the importance-weighted bound, a
gradient check, a checkpoint round trip, every optimizer) while recording every array-namespace
function it calls (with the keyword arguments it passes) and every array attribute, method and
operator it uses; then check each one against ``array_api_compat.cupy`` and ``cupy.ndarray`` of the
installed CuPy. The Generator's CuPy branch is run against autospecced CuPy classes, which check
method names and arguments against the real signatures.

backend.py is left out of the recording: it is the one module with a branch per backend (its strict
branch uses ``to_device``, its CuPy branch ``.get()``), and its CuPy branch is checked on its own.
CI installs the ``gpu`` extra and sets MINIVAE_REQUIRE_CUPY=1, so there these tests cannot skip.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import minivae
from minivae import VAEConfig, backend as B

if os.environ.get("MINIVAE_REQUIRE_CUPY") == "1":
    import cupy  # noqa: F401  (must be installed: CI installs the gpu extra)
cupy = pytest.importorskip("cupy", reason="the CuPy package is not installed (pip install -e '.[gpu]'): "
                                          "would check every namespace function and array method the "
                                          "library uses against it")
compat_cupy = pytest.importorskip("array_api_compat.cupy")
array_api_strict = pytest.importorskip("array_api_strict")

PACKAGE = Path(minivae.__file__).parent
EXCLUDED = {PACKAGE / "backend.py"}
StrictArray = type(array_api_strict.asarray([0.0]))


@functools.lru_cache(maxsize=None)
def _library_file(filename: str) -> bool:
    path = Path(filename)
    return path.parent in (PACKAGE, PACKAGE / "core") and path not in EXCLUDED


def _from_library(frame) -> bool:
    # asked at every attribute of every strict array: a Path per call made the test take 34 s
    return _library_file(frame.f_code.co_filename)


class Recorder:
    """Records namespace calls ``{name: set of keyword sets}`` and array attributes ``{name}`` used by
    code for which ``include(frame)`` is true."""

    def __init__(self, include=_from_library):
        self.include = include
        self.functions: dict[str, set[frozenset]] = {}
        self.attributes: set[str] = set()

    def namespace(self, module):
        recorder = self

        class RecordingNamespace:
            def __getattr__(self, name):
                value = getattr(module, name)
                if not recorder.include(sys._getframe(1)):
                    return value
                recorder.functions.setdefault(name, set())
                if not callable(value) or isinstance(value, type):
                    return value

                def call(*args, **kwargs):
                    recorder.functions[name].add(frozenset(kwargs))
                    return value(*args, **kwargs)
                return call
        return RecordingNamespace()

    def install(self, monkeypatch):
        """Wrap the strict namespace and the strict array type for the duration of a test."""
        monkeypatch.setitem(B._NAMESPACE_OF_TYPE, StrictArray, self.namespace(array_api_strict))
        recorder = self
        plain_getattribute = StrictArray.__getattribute__

        def getattribute(obj, name):
            if not name.startswith("_") and recorder.include(sys._getframe(1)):
                recorder.attributes.add(name)
            return plain_getattribute(obj, name)

        monkeypatch.setattr(StrictArray, "__getattribute__", getattribute)
        for name in dir(StrictArray):
            # operators are looked up on the type, not through __getattribute__: wrap each one
            if not (name.startswith("__") and name.endswith("__")) or name in _NOT_OPERATORS:
                continue
            method = getattr(StrictArray, name)
            if not callable(method):
                continue

            def wrapper(*args, __name=name, __method=method, **kwargs):
                if recorder.include(sys._getframe(1)):
                    recorder.attributes.add(__name)
                return __method(*args, **kwargs)
            monkeypatch.setattr(StrictArray, name, wrapper)


_NOT_OPERATORS = {"__getattribute__", "__class__", "__init__", "__new__", "__init_subclass__",
                  "__subclasshook__", "__setattr__", "__delattr__", "__dir__", "__reduce__",
                  "__reduce_ex__", "__getstate__", "__sizeof__", "__doc__", "__module__", "__slots__",
                  "__annotations__", "__weakref__", "__hash__", "__repr__", "__str__", "__format__",
                  "__array_namespace__"}


def problems(recorder: Recorder) -> list[str]:
    """What the recorded uses need that the installed CuPy does not have."""
    found = []
    for name, kwarg_sets in sorted(recorder.functions.items()):
        target = getattr(compat_cupy, name, None)
        if target is None:
            found.append(f"array_api_compat.cupy has no {name!r}")
            continue
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):  # a CuPy ufunc or a dtype: no Python signature to read
            continue
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            continue
        accepted = {k for k, p in parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        for kwargs in kwarg_sets:
            for kw in sorted(kwargs - accepted):
                found.append(f"array_api_compat.cupy.{name} takes no keyword {kw!r}")
    for name in sorted(recorder.attributes):
        if not hasattr(cupy.ndarray, name):
            found.append(f"cupy.ndarray has no {name!r}")
    return found


def _library_workload(tmp_path):
    """A training run, an evaluation with L_k, gradient checks, a checkpoint round trip, every
    optimizer and likelihood: the library's work on the strict backend."""
    from minivae import checkpoint, optim
    from minivae.core import bounds, gradcheck
    from minivae.data import Dataset, load_digits
    from minivae.train import TrainConfig, train

    digits = load_digits()
    data = Dataset("digits", digits.x_train[:64], digits.y_train[:64], digits.x_test[:16],
                   digits.y_test[:16], (8, 8))
    cfg = VAEConfig(x_dim=64, hidden=(8,), z_dim=2)
    for binarize in ("none", "dynamic"):
        result = train(cfg, TrainConfig(epochs=1, batch_size=16, backend="strict", binarize=binarize,
                                        sync_every=2), tmp_path / binarize, data=data,
                       progress=False, log=lambda *a: None)
    params = result["params"]
    x = B.from_numpy(data.x_test, "strict", "float32")
    bounds.evaluate(params, x, cfg, B.Generator(0, "strict"), k=7, batch_size=8, chunk=3)
    checkpoint.save_checkpoint(tmp_path / "ck", params, cfg, {})
    checkpoint.load_checkpoint(tmp_path / "ck", "strict")
    for rule in optim.RULES:
        state = {}
        optim.step(params, {k: v * 0.1 for k, v in params.items()}, state, rule, weight_decay=0.01)
    for likelihood, variance in [("bernoulli", "fixed"), ("continuous_bernoulli", "fixed"),
                                 ("gaussian", "fixed"), ("gaussian", "shared"), ("gaussian", "per_pixel")]:
        for activation in ("tanh", "softplus", "relu"):
            small = VAEConfig(x_dim=3, hidden=(2,), z_dim=2, likelihood=likelihood, variance=variance,
                              activation=activation, n_samples=2)
            assert gradcheck.check_model(small, "strict", batch=2, directions=1).passed


def test_everything_the_library_uses_exists_in_the_installed_cupy(tmp_path, monkeypatch):
    recorder = Recorder()
    recorder.install(monkeypatch)
    _library_workload(tmp_path)
    # the recording saw the library's real work, not an empty run
    assert {"exp", "tanh", "sum", "stack", "take", "isfinite"} <= set(recorder.functions)
    assert {"shape", "T", "__matmul__", "__isub__", "__float__"} <= recorder.attributes
    assert problems(recorder) == []


def test_a_planted_use_of_something_cupy_lacks_is_caught(monkeypatch):
    here = Path(__file__)
    recorder = Recorder(include=lambda frame: Path(frame.f_code.co_filename) == here)
    recorder.install(monkeypatch)
    x = B.from_numpy(np.ones((2, 2)), "strict")
    xp = B.namespace_of(x)
    xp.sum(x, axis=0)
    x.to_device(x.device)                    # strict has it; cupy.ndarray does not
    y = x + 0.0
    y @= x                                   # in-place matmul: cupy.ndarray has no __imatmul__
    recorder.functions.setdefault("take", set()).add(frozenset({"mode"}))  # a keyword CuPy's take lacks
    found = problems(recorder)
    assert "cupy.ndarray has no 'to_device'" in found
    assert "cupy.ndarray has no '__imatmul__'" in found
    assert "array_api_compat.cupy.take takes no keyword 'mode'" in found
    recorder.functions["no_such_function"] = {frozenset()}
    assert "array_api_compat.cupy has no 'no_such_function'" in problems(recorder)
    assert not any("'sum'" in p or "__add__" in p for p in found)


def test_the_generator_and_host_moves_call_cupy_as_its_signatures_allow(monkeypatch):
    """backend.py's CuPy branch against autospecced CuPy: wrong names or arguments raise."""
    fake = mock.NonCallableMagicMock()
    fake.random.RandomState = mock.create_autospec(cupy.random.RandomState)
    fake.asarray = mock.create_autospec(cupy.asarray)
    fake.concatenate = mock.create_autospec(cupy.concatenate, side_effect=np.concatenate)
    rs = fake.random.RandomState.return_value
    rs.standard_normal.side_effect = lambda shape, dtype: np.zeros(shape, dtype)
    rs.random_sample.side_effect = lambda shape, dtype: np.zeros(shape, dtype)
    monkeypatch.setattr(B, "_cupy", lambda: fake)
    g = B.Generator((1, 2, 3), "cupy")
    fake.random.RandomState.assert_called_once()
    seed = fake.random.RandomState.call_args.args[0]
    assert isinstance(seed, int) and 0 <= seed < 2**63
    assert fake.random.RandomState.call_args.kwargs == {"method": 161}  # Philox4x32-10
    assert g.normal((2, 3), "float32").shape == (2, 3)
    assert g.uniform((2, 3), "float64").shape == (2, 3)
    assert g.normal((B.CUPY_BLOCK, 2), "float32").shape == (B.CUPY_BLOCK, 2)  # three blocks joined
    fake.concatenate.assert_called_once()
    g.permutation(5)
    g.rekey((1, 2, 4))  # a new key: the same device generator, reseeded
    fake.random.RandomState.assert_called_once()
    (new_seed,), _ = rs.seed.call_args
    assert isinstance(new_seed, int) and 0 <= new_seed < 2**63 and new_seed != seed
    assert rs.standard_normal.call_args_list == [mock.call((B.CUPY_BLOCK,), dtype="float32")] * 3
    rs.random_sample.assert_called_once_with((B.CUPY_BLOCK,), dtype="float64")
    rs.permutation.assert_called_once_with(5)
    B.from_numpy(np.zeros(3), "cupy")
    fake.asarray.assert_called_once()
    assert hasattr(cupy.ndarray, "get")  # to_numpy's CuPy branch
    assert hasattr(cupy.cuda, "Device") and hasattr(cupy.cuda.runtime, "getDeviceCount")


def test_what_the_fake_cupy_stands_in_for_exists_in_the_installed_cupy():
    """tests/test_fake_cupy.py's fake offers these; the real CuPy must have them with these names."""
    for path in ("cuda.Event", "cuda.get_elapsed_time", "get_default_memory_pool", "concatenate",
                 "cuda.Device.mem_info", "cuda.runtime.runtimeGetVersion",
                 "cuda.runtime.getDeviceProperties", "cuda.memory.OutOfMemoryError"):
        obj = cupy
        for part in path.split("."):
            obj = getattr(obj, part)
    assert hasattr(cupy.cuda.memory.MemoryPool, "free_bytes")
    assert set(inspect.signature(cupy.cuda.Event.record).parameters) <= {"self", "stream"}


def test_cupys_out_of_memory_error_becomes_one_line():
    from minivae.__main__ import _out_of_memory
    from minivae.memory import doing
    try:
        with doing("training (from epoch 1, step 0)"):
            raise cupy.cuda.memory.OutOfMemoryError(16_000_000_000, 0)
    except MemoryError as e:
        line = _out_of_memory(e, "train")
    assert line.startswith("out of memory on ") and "\n" not in line
    assert "while training (from epoch 1, step 0) (Out of memory allocating 16,000,000,000 bytes" in line

"""The CuPy path's behaviours that only a device shows, on a fake CuPy with no GPU.

The fake holds NumPy arrays (so the math runs on the host) and reproduces what a real device does
differently: a device memory that fills (``mem_info``, a memory pool, ``OutOfMemoryError``), a
normal generator that pads an odd-sized draw by one value (CuPy's ``_generate_normal`` does, for
cuRAND's sake), an old version number, a device name as bytes or as str, CUDA events. Each test
says what the real device would do, and where ``-k cupy`` runs the same claim on a real GPU
(the device check runs the suite's cupy cases).
"""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

import minivae
from minivae import VAEConfig, backend as B
from minivae.core import bounds
from minivae.__main__ import main

SMALL = ["--hidden", "8", "--batch-size", "256", "--no-progress"]


class OutOfMemoryError(MemoryError):
    """CuPy's: cupy.cuda.memory.OutOfMemoryError, a MemoryError."""


OutOfMemoryError.__module__ = "cupy.cuda.memory"


class PaddingRandomState:
    """cupy.random.RandomState as cuRAND runs it: an odd-sized normal draw makes one value more."""

    def __init__(self, seed=0, method=None):
        self.seed(seed)
        self.calls = []

    def seed(self, seed):
        self._g = np.random.default_rng(seed)

    def standard_normal(self, shape, dtype="float64"):
        n = math.prod(shape)
        self.calls.append(n)
        return self._g.standard_normal(n + n % 2, dtype=dtype)[:n].reshape(shape)

    def random_sample(self, shape, dtype="float64"):
        self.calls.append(math.prod(shape))
        return self._g.random(shape, dtype=dtype)

    def permutation(self, n):
        return self._g.permutation(n)


class FakeDevice:
    def __init__(self, fake):
        self.fake, self.id = fake, 0

    @property
    def mem_info(self):
        return self.fake.free_bytes, 80 * 2**30

    def synchronize(self):
        pass


class FakeEvent:
    """cupy.cuda.Event: ``record`` stamps the device's clock (here a number the test sets)."""
    clock = [0.0]
    synchronized = []

    def record(self, stream=None):
        self.at = FakeEvent.clock[0]

    def synchronize(self):
        FakeEvent.synchronized.append(self)


def make_fake(version="14.2.0", name=b"Fake GPU", free_bytes=40 * 2**30, pool_free=0, oom_on_asarray=False):
    fake = types.ModuleType("cupy")
    fake.__version__ = version
    fake.free_bytes = free_bytes
    fake.ndarray = type("ndarray", (), {})  # no NumPy array is one: the math stays NumPy's
    fake.arange, fake.ones, fake.empty, fake.concatenate = np.arange, np.ones, np.empty, np.concatenate
    fake.asarray_calls = 0

    def asarray(a, *args, **kwargs):
        fake.asarray_calls += 1
        if oom_on_asarray:
            raise OutOfMemoryError(f"Out of memory allocating {np.asarray(a).nbytes:,} bytes "
                                   f"(allocated so far: 0 bytes).")
        return np.asarray(a, *args, **kwargs)
    fake.asarray = asarray
    fake.random = types.SimpleNamespace(RandomState=PaddingRandomState)
    fake.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: pool_free)
    fake.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, runtimeGetVersion=lambda: 12080,
                                      getDeviceProperties=lambda i: {"name": name}),
        Device=lambda *a: FakeDevice(fake), Event=FakeEvent,
        get_elapsed_time=lambda a, b: (b.at - a.at) * 1e3)
    return fake


@pytest.fixture
def fake_cupy(monkeypatch):
    def install(**kw):
        fake = make_fake(**kw)
        monkeypatch.setitem(sys.modules, "cupy", fake)
        return fake
    return install


# --- split-invariant draws -------------------------------------------------------------------------

def test_cupy_draws_split_like_one_draw_although_cuRAND_pads_odd_sizes(fake_cupy):
    fake_cupy()
    whole = B.to_numpy(B.Generator(7, "cupy").normal((3 * 7 * 11,), "float32"))
    g = B.Generator(7, "cupy")
    pieces = [B.to_numpy(g.normal((7, 3), "float32")) for _ in range(11)]  # 21 values each: odd
    np.testing.assert_array_equal(np.concatenate([p.ravel() for p in pieces]), whole)
    big = B.Generator(7, "cupy")
    assert big.normal((B.CUPY_BLOCK + 5,), "float64").shape == (B.CUPY_BLOCK + 5,)
    assert set(big._rng.calls) == {B.CUPY_BLOCK}  # every cuRAND call the same even size


def test_the_padding_is_real_in_the_fake_so_the_check_can_fail():
    """Without the blocks, the fake generator's odd-sized pieces are not one draw."""
    whole = PaddingRandomState(7).standard_normal((21 * 11,), "float32")
    rs = PaddingRandomState(7)
    pieces = np.concatenate([rs.standard_normal((7, 3), "float32").ravel() for _ in range(11)])
    assert not np.array_equal(pieces, whole)


def test_rekey_restarts_the_blocks(fake_cupy):
    fake_cupy()
    g = B.Generator(1, "cupy")
    first = B.to_numpy(g.normal((5,)))
    g.normal((3,))
    np.testing.assert_array_equal(B.to_numpy(g.rekey(1).normal((5,))), first)


@pytest.mark.parametrize("blocks", [True, False])
def test_evaluate_does_not_depend_on_the_batch_size_on_cupy(fake_cupy, monkeypatch, blocks):
    """ELBO at batch 7 equals batch 100 (z_dim 3: 7 x 3 values, odd) on the padding generator;
    drawn without the blocks, it does not (the claim is tested, not assumed)."""
    fake_cupy()
    if not blocks:
        monkeypatch.setattr(B.Generator, "_from_blocks", lambda self, kind, shape, dtype: (
            self._rng.standard_normal if kind == "normal" else self._rng.random_sample)(shape, dtype=dtype))
    cfg = VAEConfig(x_dim=16, hidden=(8,), z_dim=3)
    params = minivae.init_params(cfg, seed=0, dtype="float64")  # float64: sums per batch round alike
    x = np.random.default_rng(0).random((100, 16))
    at = {b: bounds.evaluate(params, x, cfg, B.Generator(3, "cupy"), batch_size=b)["elbo"] for b in (7, 100)}
    assert (at[7] == pytest.approx(at[100], rel=1e-13, abs=0)) is blocks, at


def test_evaluate_does_not_depend_on_the_batch_size(backend):
    """The same claim on every real backend (a GPU runs it under ``-k cupy``)."""
    cfg = VAEConfig(x_dim=16, hidden=(8,), z_dim=3)
    params = minivae.init_params(cfg, seed=0, backend=backend, dtype="float64")
    x = B.from_numpy(np.random.default_rng(0).random((100, 16)), backend, "float64")
    at = {b: bounds.evaluate(params, x, cfg, B.Generator(3, backend), k=3, batch_size=b,
                             iwae_rng=B.Generator(4, backend))["elbo"] for b in (7, 100)}
    assert at[7] == pytest.approx(at[100], rel=1e-13, abs=0), at


# --- device memory ---------------------------------------------------------------------------------

def test_training_too_big_for_the_device_is_refused_before_anything_is_copied(fake_cupy, tmp_path, capsys):
    fake = fake_cupy(free_bytes=64 * 2**20)
    assert main(["train", "--backend", "cupy", "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--hidden", "20000", "--batch-size", "256", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "training this model needs about" in err and "64 MiB is free on CUDA device 0 (Fake GPU)" in err
    assert "--batch-size" in err
    assert fake.asarray_calls == 0  # refused before any allocation on the device


def test_the_memory_pools_cached_blocks_count_as_free(fake_cupy):
    from minivae.memory import device_free_bytes, require
    fake_cupy(free_bytes=2**20, pool_free=3 * 2**20)
    assert device_free_bytes() == 4 * 2**20
    require(3.5 * 2**20, "this", "shrink it", backend="cupy")  # fits only with the pool's blocks
    with pytest.raises(ValueError, match=r"needs about 5 MiB of memory and 4 MiB is free on CUDA device 0"):
        require(5 * 2**20, "this", "shrink it", backend="cupy")


def test_the_host_check_is_not_the_device_check(fake_cupy, monkeypatch):
    """A model that fits the host but not the device is refused on CuPy only."""
    from minivae import memory
    fake_cupy(free_bytes=2**20)
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**40)
    cfg = VAEConfig(x_dim=784, hidden=(2000,), z_dim=20)
    minivae.init_params(cfg, backend="numpy")
    with pytest.raises(ValueError, match="is free on CUDA device 0"):
        minivae.init_params(cfg, backend="cupy")


def test_out_of_device_memory_is_one_line_naming_the_device_and_the_work(fake_cupy, tmp_path, capsys):
    fake_cupy(oom_on_asarray=True)
    assert main(["train", "--backend", "cupy", "--epochs", "1", "--out", str(tmp_path / "r"), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("error: out of memory on CUDA device 0 (Fake GPU) while copying the data to "
                          "cupy's device (Out of memory allocating"), err
    assert "choose a smaller --batch-size" in err and "Files already written are intact" in err


def test_out_of_device_memory_mid_run_keeps_the_last_checkpoint(fake_cupy, tmp_path, capsys, monkeypatch):
    from minivae import train as T
    fake_cupy()
    out = tmp_path / "r"
    assert main(["train", "--backend", "cupy", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    before = (out / "checkpoint.safetensors").read_bytes()
    real = T.gradient

    def exhausted(params, xb, mcfg, tcfg, epoch, step, rng=None):
        if step == 2:
            raise OutOfMemoryError("Out of memory allocating 2,000,000,000 bytes")
        return real(params, xb, mcfg, tcfg, epoch, step, rng)
    monkeypatch.setattr(T, "gradient", exhausted)
    capsys.readouterr()
    assert main(["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: out of memory on CUDA device 0 (Fake GPU) while training (from epoch 2, "
                          "step 0)"), err
    assert "continue with --resume" in err and err.count("\n") == 0
    assert (out / "checkpoint.safetensors").read_bytes() == before


# --- versions ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["13.0.0", "13.2.0", "12.3.0"])
def test_an_old_cupy_is_named_before_any_cuda_library_is_blamed(fake_cupy, capsys, version, monkeypatch):
    monkeypatch.setattr(np, "__version__", "2.1.0")
    fake_cupy(version=version)
    usable, why = B.cupy_status()
    assert not usable
    assert why.startswith(f"backend 'cupy': CuPy {version} is installed, and with NumPy 2.1.0 minivae "
                          f"needs CuPy >= 13.3"), why
    assert "CUDA librar" not in why and "cuRAND" not in why.split("(")[0]
    assert B.resolve("auto") == "numpy"
    assert main(["doctor", "--no-tests"]) == 1
    assert f"FAIL: backend 'cupy': CuPy {version} is installed" in capsys.readouterr().out


def test_auto_says_why_it_fell_back(fake_cupy, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(np, "__version__", "2.1.0")
    fake_cupy(version="13.1.0")
    assert main(["train", "--backend", "auto", "--epochs", "1", "--out", str(tmp_path / "r"), *SMALL]) == 0
    assert "backend auto -> numpy (backend 'cupy': CuPy 13.1.0 is installed, and with NumPy 2.1.0" in \
        capsys.readouterr().out


@pytest.mark.parametrize("numpy_version, cupy_version, ok", [
    ("2.1.0", "13.3.0", True), ("2.0.0", "14.0.0rc1", True), ("1.26.4", "13.0.0", True),
    ("2.4.6", "13.2.1", False), ("2.0.0", "12.3.0", False), ("2.0.0", "13", False)])
def test_the_version_rule(numpy_version, cupy_version, ok):
    assert (B.cupy_version_problem(cupy_version, numpy_version) is None) is ok


@pytest.mark.parametrize("name", [b"NVIDIA H200", "NVIDIA H200"])
def test_the_device_name_reads_as_bytes_or_str(fake_cupy, name):
    fake_cupy(name=name)
    assert B.cupy_device_name() == "CUDA device 0 (NVIDIA H200)"
    assert B.cupy_status() == (True, "CuPy 14.2.0 on CUDA device 0 (NVIDIA H200)")


def test_checkpoints_record_the_library_and_generator(fake_cupy, tmp_path):
    from minivae.checkpoint import load_checkpoint
    fake_cupy()
    out = tmp_path / "r"
    assert main(["train", "--backend", "cupy", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    *_, meta = load_checkpoint(out / "checkpoint")
    assert meta["versions"] == {"backend": "cupy", "library": "cupy 14.2.0", "cuda_runtime": "12080",
                                "generator": f"cuRAND Philox4x32-10 in blocks of {B.CUPY_BLOCK}"}


def test_a_resume_under_another_version_says_it_is_not_bit_exact(fake_cupy, tmp_path, capsys):
    out = tmp_path / "r"
    fake = fake_cupy()
    assert main(["train", "--backend", "cupy", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    assert "bit-exactly" not in capsys.readouterr().out  # the same versions: nothing to say
    fake.__version__ = "15.0.0"
    assert main(["train", "--resume", "--epochs", "3", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert ("note: this resume continues the run statistically, not bit-exactly (other draws and "
            "roundings from here on): library 'cupy 14.2.0' -> 'cupy 15.0.0'") in text


def test_a_checkpoint_without_versions_says_so_on_resume(tmp_path, capsys, monkeypatch):
    from minivae import train as T
    out = tmp_path / "r"
    monkeypatch.setattr(T, "stream_versions", lambda backend: None)  # as an older minivae wrote it
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    assert "the checkpoint records no library versions" in capsys.readouterr().out


# --- host reads -------------------------------------------------------------------------------------

def _count_host_reads(monkeypatch, counts):
    """Count every way a strict array reaches the host: to_device (what to_numpy uses) and the
    scalar conversions."""
    array_api_strict = pytest.importorskip("array_api_strict")
    Array = type(array_api_strict.asarray([0.0]))
    for name in ("to_device", "__float__", "__int__", "__bool__", "__index__", "item"):
        if hasattr(Array, name):
            original = getattr(Array, name)

            def counted(self, *a, _original=original, _name=name, **k):
                counts[_name] = counts.get(_name, 0) + 1
                return _original(self, *a, **k)
            monkeypatch.setattr(Array, name, counted)


@pytest.mark.parametrize("k", [0, 5])
def test_evaluate_reads_the_device_once(monkeypatch, k):
    """One host read per evaluation, whatever the number of batches (training already reads once
    per sync_every steps); before, it read 3-4 times per batch."""
    cfg = VAEConfig(x_dim=16, hidden=(8,), z_dim=3)
    params = minivae.init_params(cfg, seed=0, backend="strict")
    x = B.from_numpy(np.random.default_rng(0).random((100, 16)), "strict", "float32")
    counts = {}
    _count_host_reads(monkeypatch, counts)
    stats = bounds.evaluate(params, x, cfg, B.Generator(3, "strict"), k=k, batch_size=10,
                            iwae_rng=B.Generator(4, "strict"))
    assert counts == {"to_device": 1}, counts
    monkeypatch.undo()
    one_batch = bounds.evaluate(params, x, cfg, B.Generator(3, "strict"), k=k, batch_size=100,
                                iwae_rng=B.Generator(4, "strict"))
    assert stats["elbo"] == pytest.approx(one_batch["elbo"], rel=1e-6)
    assert stats["active_units"] == one_batch["active_units"]


def test_the_host_read_counter_sees_a_per_batch_read(monkeypatch):
    counts = {}
    _count_host_reads(monkeypatch, counts)
    x = B.from_numpy(np.ones(3), "strict")
    float(x[0]), B.to_numpy(x)
    assert counts == {"__float__": 1, "to_device": 1}


# --- timings ----------------------------------------------------------------------------------------

def test_the_clock_reads_cuda_events_after_one_wait(fake_cupy, monkeypatch):
    fake_cupy()
    monkeypatch.setattr(FakeEvent, "synchronized", [])
    clock = B.Clock("cupy")
    for t in (1.0, 1.5, 2.25):
        monkeypatch.setattr(FakeEvent, "clock", [t])
        clock.mark()
    assert clock.intervals() == [0.5, 0.75]
    assert FakeEvent.synchronized == [clock._marks[-1]]  # one wait, for the last event only


def test_doctor_times_steps_on_the_device_clock(fake_cupy, monkeypatch):
    """The step time is the events' (the fake device takes 2 ms a step), not the host's."""
    from minivae import doctor, train as T
    fake_cupy()
    real = T.gradient

    def two_ms(*a, **k):
        FakeEvent.clock[0] += 0.002
        return real(*a, **k)
    monkeypatch.setattr(FakeEvent, "clock", [0.0])
    monkeypatch.setattr(T, "gradient", two_ms)
    cfg = VAEConfig(x_dim=16, hidden=(8,), z_dim=3)
    x = np.random.default_rng(0).random((300, 16), dtype=np.float32)
    assert doctor._step_seconds(cfg, "cupy", "float32", x, 100, threads=1) == pytest.approx(0.002)


# --- the same on a real GPU (skipped without one; the device check runs them with -k cupy) ---------

needs_gpu = pytest.mark.skipif(not B.cupy_status()[0], reason=f"needs a CUDA GPU: {B.cupy_status()[1]}")


@needs_gpu
def test_cupy_device_memory_guard_and_out_of_memory_on_the_real_device():
    import cupy
    from minivae.__main__ import _out_of_memory
    from minivae.memory import TooBig, device_free_bytes, require
    free, total = cupy.cuda.Device().mem_info
    assert 0 < device_free_bytes() <= total + cupy.get_default_memory_pool().total_bytes()
    with pytest.raises(TooBig, match=r"is free on CUDA device \d+ \("):
        require(4 * total, "this", "shrink it", backend="cupy")
    with pytest.raises(MemoryError) as caught:
        cupy.empty(4 * total, dtype=cupy.uint8)
    assert _out_of_memory(caught.value, "train").startswith("out of memory on CUDA device ")


@needs_gpu
def test_cupy_clock_times_queued_work_on_the_device():
    import cupy
    a = cupy.ones((2048, 2048), cupy.float32)
    clock = B.Clock("cupy")
    clock.mark()
    for _ in range(20):
        a @ a
    clock.mark()
    clock.mark()
    busy, idle = clock.intervals()
    assert busy > 0 and idle < busy

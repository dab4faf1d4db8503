"""heap.keep_freed_memory: a training step reuses the pages the step before it freed (glibc), and
the memory goes back to the system when training ends. Page faults are counted, not timed."""

import os
import subprocess
import sys
import textwrap

import pytest

from minivae import heap
from minivae.heap import keep_freed_memory

needs_glibc = pytest.mark.skipif(heap._glibc() is None, reason="glibc's malloc only; elsewhere it does nothing")

# Forward and backward of the 784-500-20 model at batch 1000, float32, one BLAS thread: the page
# faults per step over 10 steps after 5 warm ones, with and without keep_freed_memory, each in a fresh
# interpreter (glibc's thresholds, once set, stay set for the process); the two run side by side
# (a page fault is counted per process, so neither disturbs the other's count).
STEPS = textwrap.dedent("""
    import contextlib, resource, sys
    import numpy as np
    from minivae import VAEConfig, init_params
    from minivae.core.model import backward, forward
    from minivae.heap import keep_freed_memory
    cfg = VAEConfig(x_dim=784, hidden=(500,), z_dim=20)
    params = init_params(cfg, seed=0)
    rng = np.random.default_rng(0)
    x = (rng.random((1000, 784)) < 0.3).astype(np.float32)
    eps = rng.standard_normal((1, 1000, 20)).astype(np.float32)
    with (keep_freed_memory() if sys.argv[1] == "keep" else contextlib.nullcontext()):
        for step in range(15):
            if step == 5:
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            backward(forward(params, x, eps, cfg)[1], cfg)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


def _environ() -> dict:
    """This process's environment with glibc's defaults: no malloc settings of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def _faults_per_step(*modes: str) -> list[float]:
    """Page faults per step in each mode, the modes' interpreters running at the same time."""
    procs = [subprocess.Popen([sys.executable, "-c", STEPS, mode], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_environ()) for mode in modes]
    faults = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        faults.append(float(out))
    return faults


@needs_glibc
def test_a_step_reuses_the_pages_its_predecessor_freed():
    plain, kept = _faults_per_step("plain", "keep")
    assert plain > 1000, f"glibc handed the step's memory back only {plain} times a step: is this still needed?"
    assert kept < 50, f"{kept} page faults a step with the freed memory kept (without: {plain})"


RSS = textwrap.dedent("""
    import numpy as np
    from minivae.heap import keep_freed_memory
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    with keep_freed_memory():
        arrays = [np.ones(3 << 18, np.float32) for _ in range(100)]   # 100 blocks of 3 MiB, touched
        del arrays
        kept = rss_mb()
    print(kept, rss_mb())
""")


@needs_glibc
def test_the_memory_goes_back_to_the_system_when_training_ends():
    out = subprocess.run([sys.executable, "-c", RSS], capture_output=True, text=True, env=_environ(), check=True,
                         timeout=120)
    kept, after = map(float, out.stdout.split())
    assert kept - after > 250, f"resident {kept:.0f} MiB inside, {after:.0f} MiB after: not handed back"


class RecordingLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def test_the_thresholds_are_raised_inside_and_lowered_on_exit_even_after_an_error(monkeypatch):
    libc = RecordingLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    with pytest.raises(KeyboardInterrupt), keep_freed_memory():
        assert libc.calls == [("mallopt", heap.M_MMAP_THRESHOLD, heap.FROM_HEAP),
                              ("mallopt", heap.M_TRIM_THRESHOLD, heap.KEEP)]
        raise KeyboardInterrupt
    assert libc.calls[2:] == [("mallopt", heap.M_TRIM_THRESHOLD, heap.AFTER), ("malloc_trim", 0)]


def test_without_glibc_nothing_is_called(monkeypatch):
    """macOS, Windows and musl: the platform check says no C library to tune, and training runs."""
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    assert heap._glibc() is None
    with keep_freed_memory():
        pass


def test_training_keeps_the_freed_memory_for_its_steps(monkeypatch, tmp_path):
    from minivae import VAEConfig
    from minivae.data import load_dataset
    from minivae.train import TrainConfig, train

    libc = RecordingLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    seen = []
    train(VAEConfig(x_dim=64, hidden=(16,), z_dim=2), TrainConfig(dataset="digits", epochs=1, max_steps=2),
          tmp_path / "run", data=load_dataset("digits"), progress=False, log=lambda *a: None,
          callback=lambda *a: seen.append(list(libc.calls)))
    assert seen[0] == [("mallopt", heap.M_MMAP_THRESHOLD, heap.FROM_HEAP), ("mallopt", heap.M_TRIM_THRESHOLD, heap.KEEP)]
    assert libc.calls[-1] == ("malloc_trim", 0)

"""The benchmark scripts still run (they are not tests of speed: those numbers live in their output)."""

import subprocess
import sys
from pathlib import Path

import pytest

from minivae import data

ROOT = Path(__file__).resolve().parents[1]
needs_fashion = pytest.mark.skipif(data.locate("fashion-mnist") is None,
                                   reason="Fashion-MNIST not installed (apt install dataset-fashion-mnist)")


@pytest.mark.slow
@needs_fashion
def test_gpu_benchmark_dry_run():
    proc = subprocess.run([sys.executable, "benchmarks/gpu_speed.py", "--dry-run", "--epochs", "1",
                           "--batch", "100"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "minivae on strict" in proc.stdout and "seconds per epoch" in proc.stdout


def test_gpu_benchmark_says_when_there_is_no_gpu():
    from minivae import backend
    if backend.is_available("cupy"):
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_speed.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "did not run" in proc.stdout

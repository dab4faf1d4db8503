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


# --- the hand-fused NumPy step that train_speed.py times beside minivae's -----------------------

def _fused_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fused_numpy
    finally:
        sys.path.pop(0)
    return fused_numpy


def _small_problem(dtype):
    import numpy as np

    from minivae import VAEConfig, init_params
    cfg = VAEConfig(x_dim=12, hidden=(7,), z_dim=3, activation="tanh", likelihood="bernoulli", n_samples=1)
    params = init_params(cfg, seed=4, dtype=dtype, init="uniform")
    rng = np.random.default_rng(5)
    x = rng.random((6, 12)).astype(dtype)
    eps = rng.standard_normal((1, 6, 3)).astype(dtype)
    return cfg, params, x, eps


def test_fused_step_has_minivae_loss_and_gradient():
    import minivae
    fused_numpy = _fused_module()
    cfg, params, x, eps = _small_problem("float64")
    fused = fused_numpy.FusedStep(params, cfg, batch=6)
    loss = fused.loss_and_grads(x, eps)
    ref_loss, ref_grads, _ = minivae.loss_and_grads(params, x, eps, cfg)
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    assert fused_numpy.max_relative_gap(fused, ref_grads) < 1e-12
    # and the comparison can fail: one wrong element of one tensor is caught
    fused.g["W3"][1, 2] *= 1.001
    assert fused_numpy.max_relative_gap(fused, ref_grads) > 1e-5


def test_fused_step_adam_on_the_flat_buffer_equals_adam_per_tensor():
    import numpy as np

    import minivae
    from minivae import optim
    fused_numpy = _fused_module()
    cfg, params, x, eps = _small_problem("float32")
    fused = fused_numpy.FusedStep(params, cfg, batch=6)
    state = {}
    for _ in range(3):
        fused.loss_and_grads(x, eps)
        fused.adam(lr=1e-2)
        _, grads, _ = minivae.loss_and_grads(params, x, eps, cfg)
        optim.step(params, grads, state, "adam", lr=1e-2)
    for name, value in fused.as_minivae(fused.p).items():
        np.testing.assert_allclose(value, params[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_fused_step_refuses_other_architectures():
    from minivae import VAEConfig, init_params
    fused_numpy = _fused_module()
    cfg = VAEConfig(x_dim=12, hidden=(7, 5), z_dim=3)
    with pytest.raises(ValueError, match="one architecture"):
        fused_numpy.FusedStep(init_params(cfg), cfg, batch=4)


@pytest.mark.slow
def test_the_class_grading_benchmark_runs_on_a_small_class():
    proc = subprocess.run([sys.executable, "benchmarks/grade_class.py", "--students", "6", "--runs", "1",
                           "--timeout", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "class: 6 students x 14 exercises" in proc.stdout and "grades.csv: 6 rows" in proc.stdout


# --- train_speed.py --busy: the thread choice beside 1 and all threads, quiet and busy ----------

def test_a_paired_ratio_is_the_median_of_each_rounds_ratio():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from train_speed import paired_ratio
    finally:
        sys.path.pop(0)
    # round 2 ran in a slow spell for both: each round's ratio is 2, 1 and 3
    assert paired_ratio([2.0, 8.0, 9.0], [1.0, 8.0, 3.0]) == 2.0
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


@pytest.mark.slow
@needs_fashion
@pytest.mark.parametrize("busy, phases", [("1", ["quiet", "busy 1"]), ("0", ["quiet"])])
def test_the_busy_benchmark_runs_and_prints_each_phases_ratios(busy, phases):
    proc = subprocess.run([sys.executable, "benchmarks/train_speed.py", "--busy", busy, "--epochs", "3",
                           "--batch", "100", "--examples", "1000"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ratio_lines = [s.strip() for s in proc.stdout.splitlines() if ": its choice / the faster" in s]
    assert [line.split(":")[0] for line in ratio_lines] == phases, proc.stdout
    assert all(line.count("round by round") == 2 for line in ratio_lines), ratio_lines
    assert "minivae, 1 thread" in proc.stdout and "NumPy, hand-fused step" in proc.stdout

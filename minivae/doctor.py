"""``python -m minivae doctor``: what this machine runs minivae on, and, with a GPU, proof that it works.

On any machine it prints the versions (Python, NumPy, array-api-compat, array-api-strict, CuPy), the
BLAS NumPy calls, and whether CuPy can use a CUDA device, and if not, why: no CuPy, no driver, no
device. Where CuPy can, it also runs the checks of ``device_checks`` on ``"cupy"``:

1. the test suite's cupy cases (when the tests are there, i.e. in a source checkout);
2. the gradient check in float64 on every likelihood mode, and the loss and gradients against
   NumPy's for the same parameters and draws (agreement to 1e-12);
3. one epoch of the default model (``python -m minivae train``'s) on NumPy and on the device, timed;
4. ``benchmarks/gpu_speed.py`` when PyTorch is installed (and the benchmarks are there).

It exits 1 if any check fails, else 0 (a CPU-only machine is not a failure). ``--backend strict``
runs the same checks on array-api-strict's emulated device, which is how they are tested without a GPU.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import backend as B

AGREEMENT = 1e-12
SOURCE_TREE = Path(__file__).resolve().parent.parent  # the checkout, when installed editable


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> list[tuple[str, str]]:
    """(label, value) rows: versions, BLAS, and whether CUDA can be used (and why not)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    rows = [("Python", f"{platform.python_version()} ({sys.executable})"),
            ("minivae", _version("minivae")),
            ("NumPy", np.__version__),
            ("array-api-compat", _version("array-api-compat")),
            ("array-api-strict", _version("array-api-strict")),
            ("CuPy", next((v for p in ("cupy-cuda12x", "cupy-cuda11x", "cupy")
                           if (v := _version(p)) != "not installed"), "not installed"))]
    blas = [f"{i['internal_api']} {i['version']} ({i.get('architecture') or '?'}, {i['num_threads']} threads)"
            for i in threadpool_info() if i["user_api"] == "blas"]
    rows.append(("BLAS", "; ".join(blas) or "none found"))
    usable, why = B.cupy_status()
    rows.append(("CUDA", f"usable: {why}" if usable else f"not usable: {why}"))
    return rows


def _run_tests(backend: str, log) -> Check:
    tests = SOURCE_TREE / "tests"
    if not tests.is_dir():
        return Check(f"test suite on {backend}", True, "skipped: the tests are not installed (run the "
                     "doctor from a source checkout, `pip install -e .[dev,gpu]`, to include them)")
    log(f"running the test suite's {backend} cases ...")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests),
                           "-k", backend], cwd=SOURCE_TREE, capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return Check(f"test suite on {backend}", proc.returncode == 0,
                 f"{summary} ({time.perf_counter() - t0:.0f}s)")


def _gradients(backend: str) -> list[Check]:
    import numpy as np

    from .__main__ import LIKELIHOOD_MODES
    from .config import VAEConfig
    from .gradcheck import check_model
    from .vae import init_params, loss_and_grads

    worst, failed = 0.0, []
    for mode, (likelihood, variance) in LIKELIHOOD_MODES.items():
        cfg = VAEConfig(x_dim=6, hidden=(5,), z_dim=3, likelihood=likelihood, variance=variance,
                        n_samples=2)
        report = check_model(cfg, backend)
        worst = max(worst, report.max_rel_error)
        if not report.passed:
            failed.append(mode)
    checks = [Check(f"gradient check on {backend} (float64, 5 likelihood modes)", not failed,
                    f"max relative error {worst:.2e} (bar 1e-8)"
                    + (f"; FAILED: {', '.join(failed)}" if failed else ""))]

    cfg = VAEConfig(x_dim=64, hidden=(32, 16), z_dim=4, likelihood="continuous_bernoulli", n_samples=2)
    ref = init_params(cfg, seed=0, backend="numpy", dtype="float64")
    g = np.random.default_rng(0)
    x, eps = g.random((16, 64)), g.standard_normal((2, 16, 4))
    loss_np, grads_np, _ = loss_and_grads(ref, x, eps, cfg)
    params = {k: B.from_numpy(v, backend) for k, v in ref.items()}
    loss, grads, _ = loss_and_grads(params, B.from_numpy(x, backend), B.from_numpy(eps, backend), cfg)
    gap = max(float(np.max(np.abs(B.to_numpy(grads[k]) - grads_np[k])) / np.max(np.abs(grads_np[k])))
              for k in grads_np)
    gap = max(gap, abs(loss - loss_np) / abs(loss_np))
    checks.append(Check(f"{backend} against numpy (same parameters and draws, float64)",
                        gap <= AGREEMENT, f"max relative difference {gap:.1e} (bar {AGREEMENT:g})"))
    return checks


def _one_epoch(backend: str, tmp: Path) -> Check:
    """One epoch of ``python -m minivae train``'s default model on numpy and on ``backend``, timed."""
    from .__main__ import build_parser, model_config, train_config
    from .data import load_dataset
    from .train import train

    data = load_dataset("digits")
    results = {}
    for name in ("numpy", backend):
        args = build_parser().parse_args(["train", "--epochs", "1", "--backend", name])
        t0 = time.perf_counter()
        out = train(model_config(args, data.x_dim), train_config(args), tmp / name, data=data,
                    progress=False, log=lambda *a: None)
        results[name] = (time.perf_counter() - t0, out["last"]["test_loss"])
    return Check(f"one epoch of the default model, numpy and {backend}", True,
                 ", ".join(f"{n} {t:.2f}s (test -ELBO {loss:.3f})" for n, (t, loss) in results.items()))


def _gpu_benchmark(backend: str, log) -> Check:
    script = SOURCE_TREE / "benchmarks" / "gpu_speed.py"
    try:
        import torch  # noqa: F401
    except ImportError:
        return Check("benchmarks/gpu_speed.py", True, "skipped: PyTorch is not installed")
    if not script.is_file():
        return Check("benchmarks/gpu_speed.py", True, "skipped: the benchmarks are not installed")
    log("running benchmarks/gpu_speed.py ...")
    args = [] if backend == "cupy" else ["--dry-run"]
    proc = subprocess.run([sys.executable, str(script), *args], cwd=SOURCE_TREE, capture_output=True,
                          text=True)
    log(proc.stdout + proc.stderr)
    return Check("benchmarks/gpu_speed.py" + (" --dry-run" if args else ""), proc.returncode == 0,
                 f"exit code {proc.returncode}")


def device_checks(backend: str, log=print, run_tests: bool = True) -> list[Check]:
    """The checks for a device backend (``"cupy"``; ``"strict"`` to test the checks themselves)."""
    import tempfile

    checks = [_run_tests(backend, log)] if run_tests else []
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in ((f"gradients on {backend}", lambda: _gradients(backend)),
                          (f"one epoch on {backend}", lambda: [_one_epoch(backend, Path(tmp))]),
                          ("benchmarks/gpu_speed.py", lambda: [_gpu_benchmark(backend, log)])):
            try:
                checks += run()
            except Exception as e:  # a crash is a failed check, reported like the others
                checks.append(Check(name, False, f"{type(e).__name__}: {e}"))
    return checks


def main(backend: str | None = None, run_tests: bool = True, log=print) -> int:
    """Print the environment; run ``device_checks`` on CuPy where usable (or on ``backend``)."""
    rows = environment()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        log(f"{label:<{width}}  {value}")
    usable, _ = B.cupy_status()
    target = backend or ("cupy" if usable else None)
    if target is None:
        log("\nNo GPU checks: CuPy cannot use a CUDA device here (see CUDA above). minivae runs on "
            "numpy; `--backend strict` runs the GPU checks on the emulated device instead.")
        return 0
    log(f"\nChecks on {target}:")
    checks = device_checks(target, log, run_tests)
    for c in checks:
        log(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
    failed = [c for c in checks if not c.passed]
    log(f"{len(checks) - len(failed)} of {len(checks)} checks pass" + ("  <-- FAILED" if failed else ""))
    return 1 if failed else 0

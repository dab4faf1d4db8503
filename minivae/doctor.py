"""``python -m minivae doctor``: what this machine runs minivae on, and, with a GPU, a verdict.

On any machine it prints the versions (Python, NumPy, array-api-compat, array-api-strict, CuPy), the
BLAS NumPy calls, and whether CuPy can use a CUDA device, and if not, why: no CuPy, no driver, no
device, or a CUDA library a kernel needs (a device that cannot run a kernel is a failure, exit 1).
Where CuPy can, it runs ``device_checks`` on ``"cupy"``, each stage under a time limit:

1. the test suite's cupy cases (in a source checkout), 180 s;
2. the gradient check in float64 on every likelihood mode, and the loss and gradients against
   NumPy's for the same parameters and draws (agreement to 1e-12), 60 s;
3. speed: after a warm-up run that compiles the kernels, one epoch of the paper's 784-500-20 model
   (Fashion-MNIST when it is on disk, else as many synthetic 784-pixel images) on NumPy and on the
   device, in float32 and float64: the epoch's training steps as ``train()`` times them (without
   the test evaluation and the checkpoint), one step timed on the device's clock (CUDA events) at
   the BLAS thread count the epoch used, the ratio, and whether float32 and float64 and the two
   backends agree on the test -ELBO; a verdict line says which backend to use, 150 s;
4. ``benchmarks/gpu_speed.py`` (PyTorch CUDA beside minivae) when PyTorch, the benchmarks and
   Fashion-MNIST are there, 120 s.

It exits 1 if any check fails or runs out of time, else 0 (a CPU-only machine is not a failure).
``--backend strict`` runs the same checks on array-api-strict's emulated device, which is how they
are tested without a GPU.
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

    rows = [("Python", platform.python_version()),
            ("interpreter", sys.executable),
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


LIMITS = {"tests": 180, "gradients": 60, "speed": 150, "benchmark": 120}  # seconds per stage
SPEED_ROWS = 10_000  # one epoch: 100 steps at batch 100
STEP_WARMUP, STEP_SAMPLE = 3, 30  # steps untimed (kernels compile), then timed one by one
AGREE = 0.02  # test -ELBO after one epoch: float32 vs float64, and device vs numpy (other draws)


def _subprocess(name: str, argv: list[str], limit: float) -> tuple[bool, str]:
    """Run ``argv`` from the source tree; (passed, last line or TIMEOUT)."""
    try:
        proc = subprocess.run(argv, cwd=SOURCE_TREE, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return False, f"TIMEOUT: not done after {limit:.0f} s"
    lines = (proc.stdout + proc.stderr).strip().splitlines() or ["(no output)"]
    return proc.returncode == 0, lines[-1]


def _run_tests(backend: str, log) -> Check:
    tests = SOURCE_TREE / "tests"
    if not tests.is_dir():
        return Check(f"test suite on {backend}", True, "skipped: the tests are not installed (run the "
                     "doctor from a source checkout, `pip install -e .[dev,gpu]`, to include them)")
    log(f"running the test suite's {backend} cases ...")
    t0 = time.perf_counter()
    ok, last = _subprocess("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                     str(tests), "-k", backend], LIMITS["tests"])
    return Check(f"test suite on {backend}", ok, f"{last} ({time.perf_counter() - t0:.0f}s)")


def _gradients(backend: str) -> list[Check]:
    import numpy as np

    from .config import LIKELIHOOD_MODES, VAEConfig
    from .core.gradcheck import check_model
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


def _speed_data():
    """Fashion-MNIST's first SPEED_ROWS images when on disk, else as many uniform random ones."""
    import numpy as np

    from .data import Dataset, load_dataset, locate
    if locate("fashion-mnist"):
        ds = load_dataset("fashion-mnist", progress=False)
        return "Fashion-MNIST", Dataset("x", ds.x_train[:SPEED_ROWS], ds.y_train[:SPEED_ROWS],
                                        ds.x_test[:1000], ds.y_test[:1000], (28, 28))
    g = np.random.default_rng(0)
    return "synthetic 784-pixel images", Dataset(
        "x", g.random((SPEED_ROWS, 784), dtype=np.float32), np.zeros(SPEED_ROWS, np.int64),
        g.random((1000, 784), dtype=np.float32), np.zeros(1000, np.int64), (28, 28))


def _step_seconds(model, backend: str, dtype: str, x_host, batch: int, threads: int) -> float:
    """The median seconds of one training step as ``train()`` runs it (a minibatch, the gradient
    with its draws, the Adam update over one flat buffer), at ``threads`` BLAS threads, timed on
    the device's clock (``backend.Clock``: CUDA events on CuPy) after STEP_WARMUP untimed steps."""
    from statistics import median

    from . import optim
    from .threads import BlasThreads, ThreadChoice
    from .train import TrainConfig, gradient, minibatch
    from .vae import init_params

    tcfg = TrainConfig(batch_size=batch, backend=backend, dtype=dtype)
    params = init_params(model, seed=0, backend=backend, dtype=dtype)
    optimizer = optim.Flat(params, {}, tcfg.optimizer)
    rng, clock = B.Generator((0, 1), backend), B.Clock(backend)
    x = B.from_numpy(x_host, backend, dtype)
    perm = B.from_numpy(B.Generator((0, 0, 0)).permutation(x.shape[0]), backend)
    n_batches = x.shape[0] // batch
    with BlasThreads(ThreadChoice(fixed=threads)):
        for i in range(STEP_WARMUP + STEP_SAMPLE):
            if i >= STEP_WARMUP:
                clock.mark()
            xb = minibatch(x, perm, i % n_batches, tcfg)
            _, grads = gradient(params, xb, model, tcfg, 0, i % n_batches, rng)
            optimizer.step(grads, **tcfg.hyper())
        clock.mark()
    return median(clock.intervals())


def _speed(backend: str, tmp: Path, log) -> list[Check]:
    """The 784-500-20 model on numpy and on ``backend``, float32 and float64: one epoch's training
    steps as ``train()`` times them (without the test evaluation and the checkpoint), after a
    warm-up run that compiles the kernels, and one step on the device's clock at the thread count
    that epoch used; with the test -ELBOs compared."""
    from .config import VAEConfig
    from .train import TrainConfig, train

    model = VAEConfig(x_dim=784, hidden=(500,), z_dim=20)
    source, data = _speed_data()
    seconds, step, elbo = {}, {}, {}
    for name in ("numpy", backend):
        for dtype in ("float32", "float64"):
            def run(tag, **kw):
                tcfg = TrainConfig(epochs=1, batch_size=100, backend=name, dtype=dtype, **kw)
                return train(model, tcfg, tmp / f"{name}-{dtype}-{tag}", data=data, progress=False,
                             log=lambda *a: None)
            run("warm-up", max_steps=3)
            last = run("timed")["last"]
            seconds[name, dtype], elbo[name, dtype] = last["seconds"], last["test_loss"]
            threads = int(last["threads"])
            step[name, dtype] = _step_seconds(model, name, dtype, data.x_train, 100, threads)
            log(f"  {name:<7}{dtype}: one epoch's steps {seconds[name, dtype]:.2f}s, one step "
                f"{1e3 * step[name, dtype]:.2f} ms ({threads} BLAS thread{'s' * (threads > 1)}), "
                f"test -ELBO {elbo[name, dtype]:.3f}")

    def rel(a, b):
        return abs(elbo[a] - elbo[b]) / abs(elbo[b])
    checks = []
    for dtype in ("float32", "float64"):
        ratio = seconds["numpy", dtype] / seconds[backend, dtype]
        checks.append(Check(f"one epoch of 784-500-20 in {dtype} ({source}, batch 100)",
                            rel((backend, dtype), ("numpy", dtype)) <= AGREE,
                            f"training steps: numpy {seconds['numpy', dtype]:.2f}s, {backend} "
                            f"{seconds[backend, dtype]:.2f}s: {ratio:.2f}x; one step "
                            f"{1e3 * step['numpy', dtype]:.2f} vs {1e3 * step[backend, dtype]:.2f} ms; "
                            f"test -ELBO {elbo[backend, dtype]:.3f} vs numpy's "
                            f"{elbo['numpy', dtype]:.3f} (the draws may differ; bar {AGREE:.0%})"))
    gap = rel((backend, "float32"), (backend, "float64"))
    checks.append(Check(f"float32 against float64 on {backend}", gap <= AGREE,
                        f"test -ELBO {elbo[backend, 'float32']:.3f} vs {elbo[backend, 'float64']:.3f}: "
                        f"{gap:.1e} apart (bar {AGREE:.0%})"))
    ratio = seconds["numpy", "float32"] / seconds[backend, "float32"]
    if backend == "strict":
        verdict = "strict is an emulation on the CPU: its times say nothing about a GPU"
    elif ratio > 1:
        verdict = f"use --backend {backend}: {ratio:.1f}x faster than numpy for this model in float32"
    else:
        verdict = (f"numpy is faster for this model here ({1 / ratio:.1f}x); a GPU pays off with "
                   f"larger batches or models (try --batch-size 1000)")
    checks.append(Check("verdict", True, verdict))
    return checks


def _gpu_benchmark(backend: str, log) -> Check:
    from .data import locate
    script = SOURCE_TREE / "benchmarks" / "gpu_speed.py"
    try:
        import torch  # noqa: F401
    except ImportError:
        return Check("benchmarks/gpu_speed.py", True, "skipped: PyTorch is not installed")
    if not script.is_file():
        return Check("benchmarks/gpu_speed.py", True, "skipped: the benchmarks are not installed")
    if not locate("fashion-mnist"):
        return Check("benchmarks/gpu_speed.py", True, "skipped: it times Fashion-MNIST, which is not "
                     "on this machine (python -m minivae fetch fashion-mnist)")
    log("running benchmarks/gpu_speed.py ...")
    args = [] if backend == "cupy" else ["--dry-run"]
    ok, last = _subprocess("benchmark", [sys.executable, str(script), *args], LIMITS["benchmark"])
    return Check("benchmarks/gpu_speed.py" + (" --dry-run" if args else ""), ok, last)


def _limited(stage: str, run, name: str) -> list[Check]:
    """``run()`` in a worker thread, given up after its stage's limit: a hung device is a failed check."""
    import threading

    result = {}

    def work():
        try:
            result["checks"] = run()
        except Exception as e:  # a crash is a failed check, reported like the others
            result["checks"] = [Check(name, False, f"{type(e).__name__}: {e}")]
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(LIMITS[stage])
    if worker.is_alive():
        return [Check(name, False, f"TIMEOUT: not done after {LIMITS[stage]} s")]
    return result["checks"]


def device_checks(backend: str, log=print, run_tests: bool = True) -> list[Check]:
    """The checks for a device backend (``"cupy"``; ``"strict"`` to test the checks themselves)."""
    import tempfile

    checks = [_run_tests(backend, log)] if run_tests else []
    with tempfile.TemporaryDirectory() as tmp:
        checks += _limited("gradients", lambda: _gradients(backend), f"gradients on {backend}")
        checks += _limited("speed", lambda: _speed(backend, Path(tmp), log), f"speed on {backend}")
        checks.append(_gpu_benchmark(backend, log))
    return checks


def main(backend: str | None = None, run_tests: bool = True, log=print) -> int:
    """Print the environment; run ``device_checks`` on CuPy where usable (or on ``backend``)."""
    rows = environment()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        log(f"{label:<{width}}  {value}")
    try:
        B.namespace("cupy")
        usable = True
    except B.BackendBroken as e:
        log(f"\nFAIL: {e}")
        return 1
    except B.BackendUnavailable:
        usable = False
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

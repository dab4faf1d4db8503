"""The training loop: minibatches, the optimizer, metrics, checkpoints, resume, and the NaN guard.

A run lives in one folder::

    run.json         the model and training configs (what ``--resume`` reads back)
    metrics.csv      one row per epoch: the KL weight, train and test -ELBO (always with weight 1),
                     recon, KL, the test set's active units, seconds
    checkpoint.npz   parameters and optimizer state (see checkpoint.py), written every epoch,
    checkpoint.json  on Ctrl-C, and at the end

Every random draw is keyed by the run's seed and its position: the permutation of epoch e by
``(seed, 0, e)``, the noise (and dynamic binarization) of step s of epoch e by ``(seed, 1, e, s)``.
So a run stopped anywhere and resumed draws exactly what an uninterrupted run would have, and
ends with the same parameters, bit for bit.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import optim
from .backend import Generator, from_numpy, namespace_of, resolve, to_numpy
from .bounds import evaluate
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_atomic
from .config import VAEConfig
from .data import BINARIZE, DATASETS, Dataset, binarize_dynamic, binarize_static, load_dataset
from .vae import backward, forward, init_params, validate_data

METRICS = ["epoch", "step", "beta", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon",
           "test_kl", "test_active_units", "seconds", "elapsed"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """How to train. ``lr=None`` takes the optimizer's default (Adam 1e-3, Adagrad/SGD 1e-2).

    ``backend="auto"`` is resolved when the config is made (cupy where usable, else numpy).
    ``sync_every``: the step's loss and statistics stay on the device and are read back to the host
    every this many steps (and before every checkpoint), where the NaN guard looks at them: on a GPU
    each read stalls the pipeline, so a step itself never reads anything back.
    ``kl_warmup``: epochs over which the KL weight rises linearly from 0 to the model's ``beta``
    (Bowman et al. 2016; Sonderby et al. 2016); 0 means no warm-up.
    """
    dataset: str = "digits"
    epochs: int = 50
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float | None = None
    weight_decay: float = 0.0
    opt_eps: float | None = None
    binarize: str = "none"
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float32"
    max_steps: int | None = None
    data_dir: str | None = None
    threads: int | None = None
    sync_every: int = 25
    kl_warmup: float = 0.0

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {DATASETS}, got {self.dataset!r}")
        if self.optimizer not in optim.RULES:
            raise ValueError(f"optimizer: expected one of {sorted(optim.RULES)}, got {self.optimizer!r}")
        if self.binarize not in BINARIZE:
            raise ValueError(f"binarize: expected one of {BINARIZE}, got {self.binarize!r}")
        for name in ("epochs", "batch_size", "sync_every"):
            _check_int(name, getattr(self, name), low=1)
        _check_int("seed", self.seed, low=0)
        for name in ("max_steps", "threads"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low=1)
        if self.lr is not None:
            _check_number("lr", self.lr, "a positive learning rate", positive=True)
        if self.opt_eps is not None:
            _check_number("opt_eps", self.opt_eps, "a positive epsilon such as 1e-8", positive=True)
        _check_number("weight_decay", self.weight_decay, "0 or a positive number (1/N_train is the "
                      "paper's prior)", positive=False)
        _check_number("kl_warmup", self.kl_warmup, "0 (no warm-up) or a number of epochs", positive=False)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir: expected a folder name or None, got {self.data_dir!r}")
        self.backend = resolve(self.backend)

    def hyper(self) -> dict:
        """The optimizer's hyperparameters for ``optim.step``."""
        h = {"weight_decay": self.weight_decay}
        if self.lr is not None:
            h["lr"] = self.lr
        if self.opt_eps is not None:
            h["eps"] = self.opt_eps
        return h


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")


def _check_number(name, value, what, positive):
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > 0 if positive else value >= 0))
    if not ok:
        raise ValueError(f"{name}: expected {what}, got {value!r}")


def prepare_data(data: Dataset, tcfg: TrainConfig):
    """Static binarization (once) and the fixed binarization of the test set for 'dynamic'."""
    x_train, x_test = data.x_train, data.x_test
    if tcfg.binarize == "static":
        x_train, x_test = binarize_static(x_train), binarize_static(x_test)
    elif tcfg.binarize == "dynamic":  # the test set is binarized once, with a fixed draw
        u = np.random.default_rng([tcfg.seed, 2]).random(x_test.shape, dtype=np.float32)
        x_test = (u < x_test).astype(np.float32)
    return x_train, x_test


def _save_run_config(out: Path, mcfg: VAEConfig, tcfg: TrainConfig) -> None:
    record = {"model": mcfg.to_dict(), "train": dataclasses.asdict(tcfg)}
    write_atomic(out / "run.json", json.dumps(record, indent=1).encode())


def load_run_config(out) -> tuple[VAEConfig, TrainConfig]:
    """The configs of the run folder ``out``; ValueError if ``run.json`` is damaged."""
    path = Path(out) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a minivae run folder (no run.json); train one with "
                                f"`python -m minivae train --out {out}`")
    try:
        record = json.loads(path.read_text())
        if not (isinstance(record, dict) and isinstance(record.get("model"), dict)
                and isinstance(record.get("train"), dict)):
            raise ValueError("expected an object with 'model' and 'train' objects")
        unknown = set(record["train"]) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return VAEConfig.from_dict(record["model"]), TrainConfig(**record["train"])
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); restore it, or train a new run") from None


def _read_metrics(path: Path, before_epoch: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) < before_epoch]


def _write_metrics(path: Path, rows: list[dict]) -> None:
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=METRICS, restval="")  # runs from before a column existed
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, text.getvalue().encode())


class _StopFlag:
    """Turns Ctrl-C into a flag checked between steps, so a step is never cut in half.

    A second Ctrl-C stops at once, except while ``saving`` (a checkpoint is being written).
    """

    def __init__(self):
        self.requested = False
        self.saving = False

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C cannot reach us anyway
            self._old = None
        return self

    def _handle(self, signum, frame):
        if self.requested and not self.saving:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# Below this many multiply-adds in a step's largest matrix product, BLAS threads cost more than
# they give (the default digits model is 7x slower with two OpenBLAS threads than with one when
# another process is busy on the second core), so training runs single-threaded.
SMALL_GEMM = 4_000_000


def blas_threads(mcfg: VAEConfig, tcfg: TrainConfig) -> int | None:
    """BLAS threads for training: ``tcfg.threads`` if set, 1 for small models, else the default."""
    if tcfg.threads:
        return tcfg.threads
    widths = (mcfg.x_dim, *mcfg.hidden, mcfg.z_dim)
    biggest = tcfg.batch_size * max(a * b for a, b in zip(widths, widths[1:]))
    return 1 if biggest < SMALL_GEMM else None


def minibatch(x_train, perm, step: int, tcfg: TrainConfig):
    """Rows ``perm[step * B:(step + 1) * B]`` of the (on-device) training data: (B, D)."""
    B = tcfg.batch_size
    idx = from_numpy(perm[step * B:(step + 1) * B], tcfg.backend)
    return namespace_of(x_train).take(x_train, idx, axis=0)


def kl_weight(mcfg: VAEConfig, tcfg: TrainConfig, epoch: int, step: int, n_batches: int) -> float:
    """The KL weight at (epoch, step): ``mcfg.beta``, reached linearly over ``tcfg.kl_warmup`` epochs."""
    if not tcfg.kl_warmup:
        return mcfg.beta
    return mcfg.beta * min(1.0, (epoch * n_batches + step + 1) / (tcfg.kl_warmup * n_batches))


def gradient(params, xb, mcfg: VAEConfig, tcfg: TrainConfig, epoch: int, step: int):
    """One step's gradients, with this step's own random draws (keyed by seed, epoch, step): the
    dynamic binarization of ``xb`` if asked for, then ``eps``. Returns ``(stats, grads)`` with
    ``stats`` = [-ELBO, recon, kl] as one (3,) array left on the device (nothing is read back);
    the gradient is that of ``recon + mcfg.beta * kl``."""
    rng = Generator((tcfg.seed, 1, epoch, step), tcfg.backend)
    if tcfg.binarize == "dynamic":
        xb = binarize_dynamic(xb, rng.uniform(tuple(xb.shape), tcfg.dtype))
    eps = rng.normal((mcfg.n_samples, xb.shape[0], mcfg.z_dim), tcfg.dtype)
    _, cache, stats = forward(params, xb, eps, mcfg, validate=False)
    xp = namespace_of(xb)
    elbo_terms = xp.stack([stats["recon"] + stats["kl"], stats["recon"], stats["kl"]])
    return elbo_terms, backward(cache, mcfg)


def _all_finite(arrays) -> bool:
    """Whether every element of every array is finite, read back from the device once."""
    arrays = list(arrays)
    xp = namespace_of(*arrays)
    return bool(xp.all(xp.stack([xp.all(xp.isfinite(a)) for a in arrays])))


def _resume_meta(meta: dict, ckpt: Path, n_batches: int) -> tuple:
    """Training progress from a checkpoint's ``meta``, checked: (epoch, step, global_step, sums, elapsed)."""
    try:
        epoch, step, global_step = meta["epoch"], meta["step"], meta["global_step"]
        sums, elapsed = meta["sums"], meta["elapsed"]
        ints_ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                      for v in (epoch, step, global_step))
        sums_ok = (isinstance(sums, list) and len(sums) == 4
                   and all(isinstance(v, (int, float)) and math.isfinite(v) for v in sums))
        if not (ints_ok and sums_ok and step < n_batches and isinstance(elapsed, (int, float))):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{ckpt}.json: its training progress is missing or invalid (epoch, "
                              f"step, sums); it was not written by this training loop") from None
    return epoch, step, global_step, sums, float(elapsed)


def train(mcfg: VAEConfig, tcfg: TrainConfig, out, data: Dataset | None = None,
          resume: bool = False, progress: bool = True, callback=None, log=print) -> dict:
    """Train a VAE into the run folder ``out``; returns a summary dict.

    ``resume=True`` continues from ``out``'s checkpoint (its configs must match the ones given).
    ``callback(epoch, step, stats)``, if given, is called after every step with ``stats`` a (3,)
    array on the device: [loss, recon, kl] (reading it, e.g. ``float(stats[0])``, waits for the
    device). Raises ``TrainingDiverged`` when the loss, the parameters or the test loss are not
    finite; no checkpoint is ever written from such a state.
    """
    out = Path(out)
    if data is None:
        data = load_dataset(tcfg.dataset, tcfg.data_dir, progress)
    if data.x_dim != mcfg.x_dim:
        raise ValueError(f"x_dim: the model has x_dim={mcfg.x_dim} but data set {data.name!r} has "
                         f"{data.x_dim} pixels per example")
    x_train_host, x_test_host = prepare_data(data, tcfg)
    x_train = from_numpy(x_train_host, tcfg.backend, tcfg.dtype)
    x_test = from_numpy(x_test_host, tcfg.backend, tcfg.dtype)
    validate_data(x_train, mcfg, tcfg.dtype, name=f"{data.name} training data")
    validate_data(x_test, mcfg, tcfg.dtype, name=f"{data.name} test data")
    xp = namespace_of(x_train)
    N = x_train.shape[0]
    n_batches = math.ceil(N / tcfg.batch_size)

    ckpt = out / "checkpoint"
    if resume:
        params, _, opt_state, meta = load_checkpoint(ckpt, tcfg.backend, tcfg.dtype, expect=mcfg)
        epoch0, step0, global_step, sums, elapsed = _resume_meta(meta, ckpt, n_batches)
        if epoch0 >= tcfg.epochs:
            raise ValueError(f"{out} has already trained {epoch0} epoch(s) of {tcfg.epochs}; to train "
                             f"more, resume with --epochs N for some N > {epoch0}")
        log(f"resuming {out} at epoch {epoch0 + 1}, step {step0} (global step {global_step})")
    else:
        params = init_params(mcfg, seed=tcfg.seed, backend=tcfg.backend, dtype=tcfg.dtype)
        opt_state, epoch0, step0, global_step, elapsed = {}, 0, 0, 0, 0.0
        sums = [0.0, 0.0, 0.0, 0]
    out.mkdir(parents=True, exist_ok=True)
    _save_run_config(out, mcfg, tcfg)
    rows = _read_metrics(out / "metrics.csv", before_epoch=epoch0 + 1)  # the completed epochs
    _write_metrics(out / "metrics.csv", rows)

    def kept():
        return (f"the last good checkpoint is {ckpt}.npz/.json" if ckpt.with_suffix(".json").is_file()
                else "no checkpoint had been written yet")

    # Each step's [loss, recon, kl] stays on the device in `pending` until read_pending() copies
    # them to the host in one transfer: every sync_every steps and before every checkpoint.
    pending = []  # (epoch, step, global_step, batch size, (3,) device array)

    def read_pending():
        nonlocal sums
        if not pending:
            return
        values = to_numpy(xp.stack([v for *_, v in pending]))                 # (n, 3)
        bad = [i for i, row in enumerate(values) if not math.isfinite(row[0])]
        if bad:
            (epoch, step, g, _, _), value = pending[bad[0]], values[bad[0], 0]
            later = (f", and at {len(bad) - 1} later step(s) up to step {pending[bad[-1]][1] + 1}"
                     if len(bad) > 1 else "")
            raise TrainingDiverged(
                f"the loss became {value} at epoch {epoch + 1}, step {step + 1} (global step "
                f"{g + 1}){later}; {kept()}. Try a smaller --lr, or float64.")
        for (*_, B, _), (loss, recon, kl) in zip(pending, values):
            sums = [sums[0] + float(loss) * B, sums[1] + float(recon) * B, sums[2] + float(kl) * B,
                    sums[3] + B]
        pending.clear()

    def check_finite():
        """Every loss so far, then the parameters: before anything is evaluated or saved."""
        read_pending()
        if not _all_finite(params.values()):
            raise TrainingDiverged(f"the parameters are no longer finite after global step {global_step} "
                                   f"although every loss was; not saved; {kept()}. "
                                   f"Try a smaller --lr, or float64.")

    def checkpoint(epoch, step, stop):
        meta = {"epoch": epoch, "step": step, "global_step": global_step, "sums": sums,
                "elapsed": elapsed, "train": dataclasses.asdict(tcfg)}
        stop.saving = True
        try:
            save_checkpoint(ckpt, params, mcfg, opt_state, meta)
        finally:
            stop.saving = False

    def eval_test():
        # x_test was checked once above, and check_finite() has just checked the parameters
        stats = evaluate(params, x_test, mcfg, Generator((tcfg.seed, 3), tcfg.backend), validate=False)
        return {"test_loss": -stats["elbo"], "test_recon": stats["recon"], "test_kl": stats["kl"],
                "test_active_units": stats["active_units"]}

    from threadpoolctl import threadpool_limits
    from tqdm import tqdm
    status = "finished"
    hyper = tcfg.hyper()
    with _StopFlag() as stop, threadpool_limits(limits=blas_threads(mcfg, tcfg), user_api="blas"):
        for epoch in range(epoch0, tcfg.epochs):
            perm = Generator((tcfg.seed, 0, epoch), "numpy").permutation(N)
            start = time.perf_counter()
            first = step0 if epoch == epoch0 else 0
            if first == 0:
                sums = [0.0, 0.0, 0.0, 0]
            bar = tqdm(total=n_batches, initial=first, desc=f"epoch {epoch + 1}/{tcfg.epochs}",
                       disable=not progress, leave=False, file=sys.stderr)
            try:
                for step in range(first, n_batches):
                    xb = minibatch(x_train, perm, step, tcfg)
                    beta = kl_weight(mcfg, tcfg, epoch, step, n_batches)
                    step_cfg = mcfg if beta == mcfg.beta else dataclasses.replace(mcfg, beta=beta)
                    stats, grads = gradient(params, xb, step_cfg, tcfg, epoch, step)
                    optim.step(params, grads, opt_state, tcfg.optimizer, **hyper)
                    pending.append((epoch, step, global_step, xb.shape[0], stats))
                    global_step += 1
                    bar.update(1)
                    if callback is not None:
                        callback(epoch, step, stats)
                    if len(pending) >= tcfg.sync_every:
                        read_pending()
                        bar.set_postfix_str(f"-ELBO {sums[0] / sums[3]:.3f}")
                    hit_max = tcfg.max_steps is not None and global_step >= tcfg.max_steps
                    if (stop.requested or hit_max) and step + 1 < n_batches:
                        elapsed += time.perf_counter() - start
                        check_finite()
                        checkpoint(epoch, step + 1, stop)
                        status = "interrupted" if stop.requested else "max_steps"
                        break
                else:
                    check_finite()
                    seconds = time.perf_counter() - start
                    elapsed += seconds
                    row = {"epoch": epoch + 1, "step": global_step, "beta": beta, "train_loss": sums[0] / sums[3],
                           "train_recon": sums[1] / sums[3], "train_kl": sums[2] / sums[3],
                           **eval_test(), "seconds": seconds, "elapsed": elapsed}
                    if not math.isfinite(row["test_loss"]):
                        raise TrainingDiverged(
                            f"the test -ELBO became {row['test_loss']} after epoch {epoch + 1} "
                            f"(global step {global_step}); not saved; {kept()}. Try a smaller --lr.")
                    rows.append(row)
                    _write_metrics(out / "metrics.csv", rows)  # before the checkpoint: a resume
                    checkpoint(epoch + 1, 0, stop)            # drops rows past the checkpoint
                    log(f"epoch {epoch + 1:>4}  train -ELBO {row['train_loss']:.4f}  test -ELBO "
                        f"{row['test_loss']:.4f} (recon {row['test_recon']:.4f}, KL {row['test_kl']:.4f})"
                        f"  {seconds:.2f}s")
                    if stop.requested or (tcfg.max_steps is not None and global_step >= tcfg.max_steps):
                        status = "interrupted" if stop.requested else "max_steps"
                        break
                    continue
                break
            finally:
                bar.close()
    if status == "interrupted":
        log(f"stopped by Ctrl-C; saved {ckpt}.npz/.json. Continue with: "
            f"python -m minivae train --resume --out {out}")
    last = {k: float(v) for k, v in rows[-1].items() if v != ""} if rows else {}
    return {"status": status, "out": str(out), "global_step": global_step, "elapsed": elapsed,
            "last": last, "params": params}

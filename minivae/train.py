"""The training loop: minibatches, the optimizer, metrics, checkpoints, resume, and the NaN guard.

A run lives in one folder (see run.py)::

    run.json                 the model and training configs, the data, the run id (what --resume reads)
    metrics.csv              one row per epoch: the KL weight, train and test -ELBO (always with
                             weight 1), recon, KL, the test set's active units, seconds, and the
                             BLAS threads most of its steps ran with
    checkpoint.safetensors   parameters, optimizer state and progress (see checkpoint.py), written
                             every epoch, on Ctrl-C, SIGTERM or SIGHUP and at max_steps; the
                             ``keep - 1`` before it stay as checkpoint-1.safetensors, ...

``train`` sets the run up (data onto the device, a new run or a resumed one) and ``_loop`` is the
algorithm: epochs of ``_Trainer.run_epoch`` (its ``step``s) and ``_Trainer.end_epoch``. Each
guarantee lives in one named place: ``DeferredLosses`` (a step never reads back from the device;
the NaN guard), ``_Trainer.guard`` (nothing non-finite is ever saved), ``_Trainer.stopping``,
``save_checkpoint`` (one atomic rename), ``RunLock`` (one trainer per run folder), ``_StopFlag``
(a stop signal ends the run at a step boundary, saved), ``BlasThreads`` (the BLAS thread count,
chosen from the steps' own times; threads.py), ``keep_freed_memory`` (a step reuses the pages
the one before it freed; heap.py).

Every random draw is keyed by the run's seed and its position: the permutation of epoch e by
``(seed, 0, e)``, the noise (and dynamic binarization) of step s of epoch e by ``(seed, 1, e, s)``.
So a run stopped anywhere and resumed draws exactly what an uninterrupted run would have, and
ends with the same parameters, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import optim
from .backend import Generator, from_numpy, namespace_of, stream_versions, to_numpy
from .core.bounds import evaluate
from .checkpoint import (SUFFIX, CheckpointError, checkpoint_files, load_checkpoint,
                         save_checkpoint)
from .checks import all_finite, validate_data
from .config import TrainConfig, VAEConfig
from .memory import batch_bytes, doing, itemsize, require_on
from .heap import keep_freed_memory
from .data import (DATASETS, IDX_SOURCES, Dataset, binarize_dynamic, binarize_static,
                   fingerprint, load_dataset, locate)
from .run import (RunLock, check_same_data, clear_for_new_run, load_run, new_run_id, read_metrics,
                  save_run_config, write_metrics)
from .threads import BlasThreads, ThreadChoice, usable_cores
from .core.model import backward, forward, init_params, n_parameters

METRICS = ["epoch", "step", "beta", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon",
           "test_kl", "test_active_units", "seconds", "elapsed", "threads"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def prepare_data(data: Dataset, tcfg: TrainConfig):
    """Static binarization (once) and the fixed binarization of the test set for 'dynamic'."""
    x_train, x_test = data.x_train, data.x_test
    if tcfg.binarize == "static":
        x_train, x_test = binarize_static(x_train), binarize_static(x_test)
    elif tcfg.binarize == "dynamic":  # the test set is binarized once, with a fixed draw
        u = np.random.default_rng([tcfg.seed, 2]).random(x_test.shape, dtype=np.float32)
        x_test = (u < x_test).astype(np.float32)
    return x_train, x_test


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _StopFlag:
    """Turns Ctrl-C (SIGINT), SIGTERM (``timeout``, ``kill``, Slurm, ``docker stop``) and SIGHUP (a
    closed terminal) into a flag checked between steps, so a step is never cut in half and the
    position is saved. ``signum`` is the signal that asked.

    A second signal stops at once, except while ``saving`` (a checkpoint is being written).
    """

    def __init__(self):
        self.signum = None
        self.saving = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        self._old = {}
        for signum in STOP_SIGNALS:
            try:
                self._old[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: no signal can reach us anyway
                break
        return self

    def _handle(self, signum, frame):
        if self.requested and not self.saving:  # a second signal stops at once
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for signum, old in self._old.items():
            signal.signal(signum, old)


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


# Below this many multiply-adds in a step's largest matrix product, BLAS threads cost more than
# they give (the default digits model is 7x slower with two OpenBLAS threads than with one when
# another process is busy on the second core), so training runs single-threaded without measuring.
SMALL_GEMM = 4_000_000


def blas_threads(mcfg: VAEConfig, tcfg: TrainConfig) -> int | None:
    """A fixed BLAS thread count for training, or None: chosen from the steps' times (threads.py).

    ``tcfg.threads`` if set; 1 for small models, on one usable core, and on CuPy (whose math runs on
    the device; the host's BLAS is idle); otherwise None."""
    if tcfg.threads:
        return tcfg.threads
    widths = (mcfg.x_dim, *mcfg.hidden, mcfg.z_dim)
    biggest = tcfg.batch_size * max(a * b for a, b in zip(widths, widths[1:]))
    return 1 if biggest < SMALL_GEMM or usable_cores() == 1 or tcfg.backend == "cupy" else None


def minibatch(x_train, perm, step: int, tcfg: TrainConfig):
    """Rows ``perm[step * B:(step + 1) * B]`` of the training data: (B, D). ``perm`` is on the
    data's device (copied there once per epoch), so a step copies nothing from the host."""
    B = tcfg.batch_size
    if isinstance(perm, np.ndarray) and tcfg.backend != "numpy":
        perm = from_numpy(perm, tcfg.backend)
    return namespace_of(x_train).take(x_train, perm[step * B:min((step + 1) * B, perm.shape[0])], axis=0)


def kl_weight(mcfg: VAEConfig, tcfg: TrainConfig, epoch: int, step: int, n_batches: int) -> float:
    """The KL weight at (epoch, step): ``mcfg.beta``, reached linearly over ``tcfg.kl_warmup`` epochs."""
    if not tcfg.kl_warmup:
        return mcfg.beta
    return mcfg.beta * min(1.0, (epoch * n_batches + step + 1) / (tcfg.kl_warmup * n_batches))


def gradient(params, xb, mcfg: VAEConfig, tcfg: TrainConfig, epoch: int, step: int, rng=None):
    """One step's gradients, with this step's own random draws (keyed by seed, epoch, step): the
    dynamic binarization of ``xb`` if asked for, then ``eps``. Returns ``(stats, grads)`` with
    ``stats`` = [-ELBO, recon, kl] as one (3,) array left on the device (nothing is read back);
    the gradient is that of ``recon + mcfg.beta * kl``. ``rng``: the run's Generator, rekeyed here
    (training passes one, so that a step creates no device generator); None makes one."""
    key = (tcfg.seed, 1, epoch, step)
    rng = Generator(key, tcfg.backend) if rng is None else rng.rekey(key)
    if tcfg.binarize == "dynamic":
        xb = binarize_dynamic(xb, rng.uniform(tuple(xb.shape), tcfg.dtype))
    eps = rng.normal((mcfg.n_samples, xb.shape[0], mcfg.z_dim), tcfg.dtype)
    _, cache, stats = forward(params, xb, eps, mcfg)
    xp = namespace_of(xb)
    elbo_terms = xp.stack([stats["recon"] + stats["kl"], stats["recon"], stats["kl"]])
    return elbo_terms, backward(cache, mcfg)


@dataclass
class Progress:
    """Where training stands: what a checkpoint records besides the arrays, and what resume reads.

    ``sums`` = [sum of -ELBO, of recon, of KL, examples] over the current epoch's steps so far."""
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    sums: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0, 0])
    elapsed: float = 0.0
    blas: dict | None = None  # the ThreadChoice's state: the BLAS threads in use and their timings

    @classmethod
    def from_meta(cls, meta: dict, n_batches: int) -> "Progress":
        """The progress recorded in a checkpoint's ``meta``, checked; CheckpointError if invalid."""
        try:
            p = cls(meta["epoch"], meta["step"], meta["global_step"], list(meta["sums"]), meta["elapsed"],
                    ThreadChoice.check_state(meta.get("blas")))
            counts_ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                            for v in (p.epoch, p.step, p.global_step, p.sums[3]))
            sums_ok = len(p.sums) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) for v in p.sums)
            time_ok = isinstance(p.elapsed, (int, float)) and math.isfinite(p.elapsed) and p.elapsed >= 0
            if not (counts_ok and sums_ok and time_ok and p.step < n_batches
                    and (p.step == 0 or p.sums[3] > 0)):
                raise ValueError
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError("its training progress (epoch, step, sums, elapsed) is missing or "
                                  "invalid; it was not written by this training loop") from None
        p.elapsed = float(p.elapsed)
        return p

    def add(self, values, batch_sizes) -> None:
        """Add steps' [-ELBO, recon, KL] (host floats) weighted by their batch sizes."""
        for (loss, recon, kl), B in zip(values, batch_sizes):
            self.sums = [self.sums[0] + float(loss) * B, self.sums[1] + float(recon) * B,
                         self.sums[2] + float(kl) * B, self.sums[3] + B]

    def mean(self, i: int) -> float:
        return self.sums[i] / self.sums[3]


class DeferredLosses:
    """Each step's [-ELBO, recon, KL] stays on the device until ``read`` copies all of them to the
    host in one transfer (every ``sync_every`` steps and before anything is evaluated or saved):
    on a GPU a read waits for the device, so a step itself never reads. ``read`` is the NaN guard.
    """

    def __init__(self, sync_every: int, advice: str = "Try a smaller --lr, or float64."):
        self.sync_every, self.advice = sync_every, advice
        self.pending = []  # (epoch, step, global step, batch size, (3,) device array)

    def add(self, epoch, step, global_step, batch_size, stats) -> bool:
        """Keep a step's stats; True when it is time to read."""
        self.pending.append((epoch, step, global_step, batch_size, stats))
        return len(self.pending) >= self.sync_every

    def read(self, progress: Progress, kept) -> None:
        """Add the pending losses to ``progress``; TrainingDiverged naming the first bad step and
        ``kept()``, which says what checkpoint is left (asked only then: it lists the run folder)."""
        if not self.pending:
            return
        xp = namespace_of(self.pending[0][4])
        values = to_numpy(xp.stack([v for *_, v in self.pending]))                 # (n, 3)
        bad = [i for i, row in enumerate(values) if not math.isfinite(row[0])]
        if bad:
            (epoch, step, g, _, _), value = self.pending[bad[0]], values[bad[0], 0]
            later = (f", and at {len(bad) - 1} later step(s) up to step {self.pending[bad[-1]][1] + 1}"
                     if len(bad) > 1 else "")
            raise TrainingDiverged(f"the loss became {value} at epoch {epoch + 1}, step {step + 1} "
                                   f"(global step {g + 1}){later}; {kept()}. {self.advice}")
        progress.add(values, [B for _, _, _, B, _ in self.pending])
        self.pending.clear()


def divergence_advice(mcfg: VAEConfig, tcfg: TrainConfig) -> str:
    """What to change when a run diverges, naming the setting most likely to blame."""
    if mcfg.likelihood == "gaussian" and mcfg.variance == "fixed" and mcfg.sigma < 1e-3:
        return (f"--sigma {mcfg.sigma:g} scales the reconstruction term by 1/sigma^2: try a --sigma of "
                f"0.01 or more, or a learned variance (--likelihood gaussian_shared)")
    if mcfg.init == "normal" and mcfg.init_std > 1:
        return f"--init-std {mcfg.init_std:g} starts the network saturated: try the paper's 0.01"
    if tcfg.lr is not None and tcfg.lr > 0.1:
        return f"--lr {tcfg.lr:g} is large. Try a smaller --lr (Adam's default is 1e-3), or float64."
    return "Try a smaller --lr, or float64."


def data_record(data: Dataset, data_dir: str | None = None) -> dict:
    """What run.json says about the data a run was trained on: its sizes, its fingerprint (checked
    by --resume and evaluate), and for an IDX data set the folder its files were found in."""
    record = {"name": data.name, "n_train": len(data.x_train), "n_test": len(data.x_test),
              "x_dim": data.x_dim, "image_shape": list(data.image_shape), "fingerprint": fingerprint(data)}
    if data.name in IDX_SOURCES:
        found = locate(data.name, data_dir)
        if found:
            record["data_dir"] = str(Path(found["train_images"]).resolve().parent)
    return record


def train(mcfg: VAEConfig, tcfg: TrainConfig, out, data: Dataset | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool = True, callback=None,
          log=print) -> dict:
    """Train a VAE into the run folder ``out``; returns a summary dict.

    ``resume=True`` continues the run in ``out`` from its newest checkpoint (written by this run).
    Otherwise ``out`` must not hold a run already, unless ``overwrite=True`` replaces it.
    ``callback(epoch, step, stats)``, if given, is called after every step with ``stats`` a (3,)
    array on the device: [loss, recon, kl] (reading it, e.g. ``float(stats[0])``, waits for the
    device). Raises ``TrainingDiverged`` when the loss, the parameters or the test loss are not
    finite; no checkpoint is ever written from such a state. Raises ``RunBusy`` when another
    process is training ``out``.
    """
    out = Path(out)
    if data is None:
        data = load_dataset(tcfg.dataset, tcfg.data_dir, progress)
    if resume:
        check_same_data(out, data, log)  # before anything in the run folder changes
    if data.name in DATASETS and data.name != tcfg.dataset:  # run.json names the data trained on
        tcfg = dataclasses.replace(tcfg, dataset=data.name)
    if data.x_dim != mcfg.x_dim:
        raise ValueError(f"x_dim: the model has x_dim={mcfg.x_dim} but data set {data.name!r} has "
                         f"{data.x_dim} pixels per example")
    _require_memory(mcfg, tcfg, data)
    x_train_host, x_test_host = prepare_data(data, tcfg)
    with doing(f"copying the data to {tcfg.backend}'s device" if tcfg.backend != "numpy"
               else "preparing the data"):
        x_train = from_numpy(x_train_host, tcfg.backend, tcfg.dtype)
        x_test = from_numpy(x_test_host, tcfg.backend, tcfg.dtype)
    validate_data(x_train, mcfg, tcfg.dtype, name=f"{data.name} training data")
    validate_data(x_test, mcfg, tcfg.dtype, name=f"{data.name} test data")
    N = x_train.shape[0]
    n_batches = math.ceil(N / tcfg.batch_size)
    ckpt = out / "checkpoint"

    with RunLock(out), _StopFlag() as stop:
        params, opt_state, at, run_id = _start(out, mcfg, tcfg, resume, overwrite, n_batches, log)
        save_run_config(out, mcfg, tcfg, run_id, data_record(data, tcfg.data_dir))
        rows = read_metrics(out / "metrics.csv", METRICS, before_epoch=at.epoch + 1, log=log)
        write_metrics(out / "metrics.csv", METRICS, rows)  # only the epochs the checkpoint holds
        trainer = _Trainer(params, opt_state, at, rows, mcfg, tcfg, out, run_id, progress, callback, log, stop)
        with doing(f"training (from epoch {at.epoch + 1}, step {at.step})"):
            status = _loop(trainer, x_train, x_test)
    if status == "interrupted":
        log(f"stopped by {signal_name(stop.signum)}; saved {ckpt}{SUFFIX}. Continue with: "
            f"python -m minivae train --resume --out {out}")
    last = {k: float(v) for k, v in rows[-1].items() if v != ""} if rows else {}
    return {"status": status, "out": str(out), "global_step": at.global_step, "elapsed": at.elapsed,
            "last": last, "params": params, "signal": stop.signum}


def _say_if_not_bit_exact(recorded, now: dict, log) -> None:
    """A resume continues bit-exactly only under the array library, version and generator that
    wrote the checkpoint; under others its draws and roundings differ: it continues statistically."""
    if recorded == now:
        return
    if not isinstance(recorded, dict):
        log("note: the checkpoint records no library versions (an older minivae wrote it); if NumPy "
            "or CuPy changed since, this resume continues the run statistically, not bit-exactly")
        return
    changed = [f"{k} {recorded.get(k)!r} -> {now.get(k)!r}" for k in sorted({*recorded, *now})
               if recorded.get(k) != now.get(k)]
    log(f"note: this resume continues the run statistically, not bit-exactly (other draws and "
        f"roundings from here on): {'; '.join(changed)}")


def _require_memory(mcfg: VAEConfig, tcfg: TrainConfig, data) -> None:
    """TooBig unless training fits: the parameters, their gradients and two optimizer states, a
    batch's arrays, and the data, on the host (numpy, strict) or on the GPU with a host copy (cupy)."""
    size = itemsize(tcfg.dtype)
    data_bytes = (data.x_train.size + data.x_test.size) * size
    model_bytes = 4 * n_parameters(mcfg) * size + batch_bytes(mcfg, tcfg.batch_size, mcfg.n_samples, size)
    require_on(tcfg.backend, data_bytes, model_bytes + data_bytes, "training this model",
               "choose a smaller --batch-size, --n-samples or --hidden")


def _start(out: Path, mcfg, tcfg, resume: bool, overwrite: bool, n_batches: int, log):
    """``(params, opt_state, progress, run_id)`` to start from: the run's newest checkpoint
    (``resume``), or fresh parameters for a new run, or for a resumed one killed before it saved."""
    ckpt = out / "checkpoint"
    if resume:
        _, _, run_id = load_run(out)
        if any(p.exists() for p in checkpoint_files(ckpt)) or ckpt.with_suffix(".npz").exists():
            params, _, opt_state, meta = load_checkpoint(ckpt, tcfg.backend, tcfg.dtype, expect=mcfg,
                                                         run_id=run_id)
            at = Progress.from_meta(meta, n_batches)
            _say_if_not_bit_exact(meta.get("versions"), stream_versions(tcfg.backend), log)
            if at.epoch >= tcfg.epochs:
                raise ValueError(f"{out} has already trained {at.epoch} epoch(s) of {tcfg.epochs}; to "
                                 f"train more, resume with --epochs N for some N > {at.epoch}")
            log(f"resuming {out} at epoch {at.epoch + 1}, step {at.step} (global step {at.global_step})")
            return params, opt_state, at, run_id
        log(f"{out} was stopped before its first checkpoint: starting it from the beginning")
    else:
        clear_for_new_run(out, overwrite)
        run_id = new_run_id()
    return init_params(mcfg, seed=tcfg.seed, backend=tcfg.backend, dtype=tcfg.dtype), {}, Progress(), run_id


class _Trainer:
    """One run's training state between steps, and the guarantees around the algorithm, each a method
    with one job: ``guard`` (nothing non-finite is ever evaluated or saved), ``save`` (the checkpoint,
    which a second Ctrl-C cannot cut in half) and ``stopping`` (a stop signal, or max_steps)."""

    def __init__(self, params, opt_state, at: Progress, rows, mcfg: VAEConfig, tcfg: TrainConfig, out,
                 run_id, progress, callback, log, stop: _StopFlag):
        self.params, self.opt_state, self.at, self.rows = params, opt_state, at, rows
        self.mcfg, self.tcfg, self.out, self.run_id = mcfg, tcfg, Path(out), run_id
        self.progress, self.callback, self.log, self.stop = progress, callback, log, stop
        self.losses = DeferredLosses(tcfg.sync_every, divergence_advice(mcfg, tcfg))
        self.hyper, self.ckpt = tcfg.hyper(), self.out / "checkpoint"
        self.optimizer = optim.Flat(params, opt_state, tcfg.optimizer)  # params become views of one buffer
        self.rng = Generator((tcfg.seed, 1), tcfg.backend)  # rekeyed by every step: one device generator
        self.versions = stream_versions(tcfg.backend)

    def kept(self) -> str:
        """What checkpoint a diverged run leaves, for its error message."""
        files = [p for p in checkpoint_files(self.ckpt) if p.exists()]
        return f"the last good checkpoint is {files[0]}" if files else "no checkpoint had been written yet"

    def guard(self) -> None:
        """Every loss so far, then the parameters, must be finite before anything is evaluated or
        saved: no checkpoint is ever written from a diverged model."""
        self.losses.read(self.at, self.kept)
        if not all_finite([self.optimizer.w]):
            raise TrainingDiverged(f"the parameters are no longer finite after global step "
                                   f"{self.at.global_step} although every loss was; not saved; "
                                   f"{self.kept()}. {self.losses.advice}")

    def save(self) -> None:
        """Write the checkpoint (after ``guard``); a second Ctrl-C cannot cut it in half."""
        meta = {**dataclasses.asdict(self.at), "train": dataclasses.asdict(self.tcfg),
                "run_id": self.run_id, "versions": self.versions}
        self.stop.saving = True
        try:
            save_checkpoint(self.ckpt, self.params, self.mcfg, self.opt_state, meta, keep=self.tcfg.keep)
        finally:
            self.stop.saving = False

    def stopping(self) -> str | None:
        """Why training stops here, or None: a stop signal, or max_steps reached."""
        if self.stop.requested:
            return "interrupted"
        if self.tcfg.max_steps is not None and self.at.global_step >= self.tcfg.max_steps:
            return "max_steps"
        return None

    def step(self, x_train, perm, epoch: int, step: int, n_batches: int, blas) -> bool:
        """One minibatch: draw, forward, backward, update. Returns whether its losses were read."""
        t0 = time.perf_counter()
        xb = minibatch(x_train, perm, step, self.tcfg)
        beta = kl_weight(self.mcfg, self.tcfg, epoch, step, n_batches)
        step_cfg = self.mcfg if beta == self.mcfg.beta else dataclasses.replace(self.mcfg, beta=beta)
        stats, grads = gradient(self.params, xb, step_cfg, self.tcfg, epoch, step, self.rng)
        self.optimizer.step(grads, **self.hyper)
        due = self.losses.add(epoch, step, self.at.global_step, xb.shape[0], stats)
        self.at.global_step += 1
        blas.step_done(time.perf_counter() - t0)  # may change the count for the next step
        if self.callback is not None:
            self.callback(epoch, step, stats)
        if due:
            self.losses.read(self.at, self.kept)
        return due

    def run_epoch(self, epoch: int, x_train, blas) -> int:
        """The epoch's minibatches from the saved position; returns the steps done by its end (fewer
        than the epoch's batches when a stop came first)."""
        from tqdm import tqdm

        N = x_train.shape[0]
        n_batches = math.ceil(N / self.tcfg.batch_size)
        perm = from_numpy(Generator((self.tcfg.seed, 0, epoch), "numpy").permutation(N), self.tcfg.backend)
        first = self.at.step if epoch == self.at.epoch else 0
        if first == 0:
            self.at.sums = [0.0, 0.0, 0.0, 0]
        with tqdm(total=n_batches, initial=first, desc=f"epoch {epoch + 1}/{self.tcfg.epochs}",
                  disable=not self.progress, leave=False, file=sys.stderr) as bar:
            for step in range(first, n_batches):
                if self.step(x_train, perm, epoch, step, n_batches, blas):
                    bar.set_postfix_str(f"-ELBO {self.at.mean(0):.3f}", refresh=False)
                bar.update(1)
                if self.stopping():
                    return step + 1
        return n_batches

    def end_epoch(self, epoch: int, x_test, seconds: float, n_batches: int, threads: int) -> None:
        """Evaluate the test set, record the epoch's row in metrics.csv, then save the checkpoint."""
        at = self.at
        at.epoch, at.step, at.elapsed = epoch + 1, 0, at.elapsed + seconds
        row = {"epoch": epoch + 1, "step": at.global_step,
               "beta": kl_weight(self.mcfg, self.tcfg, epoch, n_batches - 1, n_batches),
               "train_loss": at.mean(0), "train_recon": at.mean(1), "train_kl": at.mean(2),
               **_evaluate_test(self.params, x_test, self.mcfg, self.tcfg), "seconds": seconds,
               "elapsed": at.elapsed, "threads": threads}
        if not math.isfinite(row["test_loss"]):
            raise TrainingDiverged(f"the test -ELBO became {row['test_loss']} after epoch {epoch + 1} "
                                   f"(global step {at.global_step}); not saved; {self.kept()}. "
                                   f"{self.losses.advice}")
        self.rows.append(row)
        write_metrics(self.out / "metrics.csv", METRICS, self.rows)  # before the checkpoint: a resume
        self.save()                                                  # drops rows past the checkpoint
        self.log(f"epoch {epoch + 1:>4}  train -ELBO {row['train_loss']:.4f}  test -ELBO "
                 f"{row['test_loss']:.4f} (recon {row['test_recon']:.4f}, KL {row['test_kl']:.4f})"
                 f"  {seconds:.2f}s")


def _loop(trainer: _Trainer, x_train, x_test) -> str:
    """The training algorithm: for each epoch, for each minibatch: draw, forward, backward, update;
    at the end of an epoch: evaluate, record, save. Returns "finished", "interrupted" or "max_steps".
    Mid-epoch stops (a signal, max_steps) save where they are, so a resume continues there."""
    at, tcfg = trainer.at, trainer.tcfg
    n_batches = math.ceil(x_train.shape[0] / tcfg.batch_size)
    choice = ThreadChoice.from_state(at.blas, fixed=blas_threads(trainer.mcfg, tcfg))
    with BlasThreads(choice) as blas, keep_freed_memory():
        for epoch in range(at.epoch, tcfg.epochs):
            start = time.perf_counter()
            done = trainer.run_epoch(epoch, x_train, blas)
            at.blas = choice.state()
            if done < n_batches:  # stopped mid-epoch: save the position, to resume there
                at.epoch, at.step = epoch, done
                at.elapsed += time.perf_counter() - start
                trainer.guard()
                trainer.save()
                return trainer.stopping()
            trainer.guard()
            trainer.end_epoch(epoch, x_test, time.perf_counter() - start, n_batches, blas.mostly())
            if trainer.stopping():
                return trainer.stopping()
    return "finished"


def _evaluate_test(params, x_test, mcfg: VAEConfig, tcfg: TrainConfig) -> dict:
    """The epoch's test-set columns. x_test was checked once, and the parameters just now."""
    with doing("evaluating the test set after an epoch"):
        stats = evaluate(params, x_test, mcfg, Generator((tcfg.seed, 3), tcfg.backend))
    return {"test_loss": -stats["elbo"], "test_recon": stats["recon"], "test_kl": stats["kl"],
            "test_active_units": stats["active_units"]}


def load_run_config(out) -> tuple[VAEConfig, TrainConfig]:
    """The configs of the run folder ``out``; ValueError if ``run.json`` is damaged."""
    mcfg, tcfg, _ = load_run(out)
    return mcfg, tcfg

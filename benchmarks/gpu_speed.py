"""Seconds per epoch on a CUDA GPU: minivae on CuPy against the same model in PyTorch CUDA.

    python benchmarks/gpu_speed.py                  # needs CuPy (pip install -e '.[gpu]') and a GPU
    python benchmarks/gpu_speed.py --dry-run        # the same code on the CPU stand-ins, a few steps

Same workload as train_speed.py (784-500-20, Bernoulli, Adam 1e-3, float32, Fashion-MNIST), batch
100 and 1000, epochs interleaved, medians printed. The data set is copied to the device once, as
minivae's trainer does, and so are the optimizer's flat buffer and the generator. Each epoch is
timed on the device's own clock, between two CUDA events (``minivae.backend.Clock``; PyTorch's
events for PyTorch), after a warm-up epoch that compiles the kernels. Without a CUDA device
the script says so and exits 0. ``--dry-run`` runs the identical code with minivae on the `strict`
backend (array-api-strict's emulated device) and PyTorch on the CPU, for 20 steps, so the script
itself is exercised where no GPU exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL, load_workload, median  # noqa: E402

import minivae  # noqa: E402
from minivae import backend as B, optim  # noqa: E402
from minivae.backend import Generator  # noqa: E402
from minivae.train import TrainConfig, gradient, minibatch  # noqa: E402


def minivae_epoch(params, optimizer, rng, x_dev, batch, epoch, backend, steps):
    """An epoch as minivae's trainer runs it: the permutation copied to the device once, the
    run's one generator rekeyed per step, Adam over one flat buffer (both made once per run)."""
    tcfg = TrainConfig(batch_size=batch, backend=backend)
    perm = B.from_numpy(Generator((0, 0, epoch)).permutation(x_dev.shape[0]), backend)
    for step in range(steps):
        xb = minibatch(x_dev, perm, step, tcfg)
        _, grads = gradient(params, xb, MODEL, tcfg, epoch, step, rng)
        optimizer.step(grads, lr=1e-3)


def torch_epoch(model, opt, x_dev, batch, epoch, steps):
    import torch
    perm = torch.from_numpy(Generator((0, 0, epoch)).permutation(x_dev.shape[0])).to(x_dev.device)
    for step in range(steps):
        xb = x_dev[perm[step * batch:(step + 1) * batch]]
        loss = model(xb, torch.randn(xb.shape[0], 20, device=x_dev.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


class TorchClock:
    """B.Clock's twin for PyTorch: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device):
        import torch
        self.torch, self.cuda, self.marks = torch, device == "cuda", []

    def mark(self):
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals(self):
        if not self.cuda:
            return [b - a for a, b in zip(self.marks, self.marks[1:])]
        self.marks[-1].synchronize()
        return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--dry-run", action="store_true", help="strict + PyTorch CPU, 20 steps per epoch")
    args = ap.parse_args(argv)

    backend = "strict" if args.dry_run else "cupy"
    if not args.dry_run and not B.is_available("cupy"):
        print("No CUDA device with CuPy here: the GPU benchmark did not run. Install the extra "
              "(`pip install -e '.[gpu]'`) on a machine with an NVIDIA GPU, or use --dry-run.")
        return 0
    try:
        import torch
        from train_speed import torch_model
        device = "cpu" if args.dry_run else "cuda"
        have_torch = args.dry_run or torch.cuda.is_available()
    except ImportError:
        have_torch = False
    ds = load_workload()
    x_dev = B.from_numpy(ds.x_train, backend, "float32")
    if backend == "cupy":
        print(f"device: {B.cupy_device_name()}")
    print(f"minivae on {backend}; PyTorch {'on ' + device if have_torch else 'not available'}")
    for batch in args.batch:
        steps = 20 if args.dry_run else ds.x_train.shape[0] // batch
        params = minivae.init_params(MODEL, seed=0, backend=backend, dtype="float32")
        optimizer, rng = optim.Flat(params, {}, "adam"), Generator((0, 1), backend)
        runs = {"minivae": lambda e: minivae_epoch(params, optimizer, rng, x_dev, batch, e, backend, steps)}
        clocks = {"minivae": lambda: B.Clock(backend)}
        if have_torch:
            x_t = torch.from_numpy(ds.x_train).to(device)
            for fused in (False, True):
                model, opt = torch_model(0, fused)
                model.to(device)
                opt = type(opt)(model.parameters(), lr=1e-3, fused=fused or None)
                name = f"PyTorch ({'fused' if fused else 'default'} Adam)"
                runs[name] = lambda e, m=model, o=opt: torch_epoch(m, o, x_t, batch, e, steps)
                clocks[name] = lambda: TorchClock(device)
        for name, run in runs.items():  # warm-up: CUDA kernels compile and caches fill
            run(0)
        marks = {name: clocks[name]() for name in runs}
        for epoch in range(args.epochs):  # interleaved; each epoch between two device-clock marks
            for name, run in runs.items():
                marks[name].mark()
                run(epoch + 1)
                marks[name].mark()
        times = {name: clock.intervals()[::2] for name, clock in marks.items()}
        print(f"batch {batch}, {steps} steps per epoch: seconds per epoch (median of {args.epochs})")
        for name, ts in times.items():
            print(f"  {name:<24}{median(ts):8.3f}")
        for name in times:
            if name != "minivae":
                print(f"  minivae / {name} = {median(times['minivae']) / median(times[name]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

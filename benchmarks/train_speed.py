"""Seconds per training epoch: minivae against the same model in plain PyTorch, in one process.

    python benchmarks/train_speed.py                 # batch 100 and 1000, 3 epochs each
    python benchmarks/train_speed.py --epochs 5 --batch 100
    python benchmarks/train_speed.py --busy 1        # quiet, then with 1 spinning competitor
    python benchmarks/train_speed.py --busy 0 --epochs 12   # the same rows, quiet only

The workload is the paper's MNIST model on grayscale Fashion-MNIST: 784-500-20 (tanh), Bernoulli
likelihood, L = 1, Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8), float32, every parameter initialized
from N(0, 0.01^2), one epoch = 60,000 examples. Epochs of minivae, of the same step hand-fused in
NumPy (``fused_numpy.py``: what restructuring the step could buy), of PyTorch with its default Adam
and of PyTorch with fused Adam are interleaved, so a slow spell of this shared machine hits them
all; the medians and their ratios are printed last. PyTorch is optional (``pip install torch==2.13.0``, a
CPU build); without it only minivae's numbers are printed.

Also printed: the GEMM floor (the epoch's matrix products alone, same BLAS and shapes) and what
fraction of minivae's epoch it is; where the rest of minivae's time goes, by phase; the test
-ELBO of every trained model (same model, data and optimizer: they must agree within the spread
between two minivae seeds); peak memory (RSS) of a training run and of a k = 5000 importance-
weighted evaluation; the thread count and the BLAS in use.

``--busy N`` measures instead what a learner's laptop sees: each batch size quiet, then with N
processes spinning on the CPU for the whole phase (stopped after). Side by side: minivae with its own
thread choice (``threads.ThreadChoice``, as ``train`` makes it: each count tried on two windows of
its own steps, alternating, again soon after a new choice that was close, every 20 s once confirmed
(one window each when clear-cut; every 80 s while it holds every core), or on drift), minivae at 1
thread and at every usable core, the
hand-fused step at the count minivae mostly ran with in its latest epoch, and PyTorch (default and fused
Adam) at its own default threads. Each ratio is printed twice: of the medians, and round by round
(``paired_ratio``: the median of each round's own ratio, which a slow spell of the machine that
lasts a round or two moves less). ``--busy 0`` runs the quiet phase alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL, describe_machine, load_workload, median  # noqa: E402
from fused_numpy import FusedStep, max_relative_gap  # noqa: E402

import minivae  # noqa: E402
from minivae import optim  # noqa: E402
from minivae.backend import Generator  # noqa: E402
from minivae.core import model as core_model  # noqa: E402
from minivae.heap import keep_freed_memory  # noqa: E402
from minivae.train import TrainConfig, gradient, minibatch  # noqa: E402


# --- minivae -------------------------------------------------------------------------------------

def minivae_model(seed):
    """Parameters and the optimizer ``train`` runs: ``optim.Flat`` (Adam over one flat buffer, on the
    CPU in cache-sized pieces), which leaves ``params`` holding views of that buffer."""
    params = minivae.init_params(MODEL, seed=seed, dtype="float32")
    return params, optim.Flat(params, {}, "adam")


def minivae_epoch(model, x_train, batch, epoch, seed=0, blas=None):
    """One epoch of minivae's training step, or of the hand-fused one (a ``FusedStep``) on the same
    batches and the same noise. ``blas``: a ``threads.BlasThreads`` told every step's time, as in
    ``train``, which may switch the thread count between steps. Freed memory is kept for the next
    step, as in ``train`` (heap.py); the thresholds it leaves behind hold for the PyTorch epochs too."""
    tcfg = TrainConfig(batch_size=batch, seed=seed)
    perm = Generator((seed, 0, epoch)).permutation(len(x_train))
    with keep_freed_memory():  # as train does (heap.py)
        for step in range(len(x_train) // batch):
            t0 = time.perf_counter()
            xb = minibatch(x_train, perm, step, tcfg)
            if isinstance(model, FusedStep):
                model.loss_and_grads(xb, Generator((seed, 1, epoch, step)).normal((1, batch, MODEL.z_dim), "float32"))
                model.adam(lr=1e-3)
            else:
                params, adam = model
                _, grads = gradient(params, xb, MODEL, tcfg, epoch, step)
                adam.step(grads, lr=1e-3)
            if blas is not None:
                blas.step_done(time.perf_counter() - t0)


def fused_gradient_gap(x_train, batch):
    """max relative gap between the fused step's gradient and minivae's, in float64."""
    params = minivae.init_params(MODEL, seed=3, dtype="float64")
    x = x_train[:batch].astype(np.float64)
    eps = Generator((3,)).normal((1, batch, MODEL.z_dim), "float64")
    fused = FusedStep(params, MODEL, batch)
    fused.loss_and_grads(x, eps)
    return max_relative_gap(fused, minivae.loss_and_grads(params, x, eps, MODEL)[1])


def minivae_phases(x_train, batch, steps=200):
    """Median seconds per step of each phase of minivae's training step."""
    params, adam = minivae_model(5)
    tcfg = TrainConfig(batch_size=batch)
    perm = Generator((5, 0, 0)).permutation(len(x_train))
    times = {k: [] for k in ("minibatch", "random draws", "forward", "backward", "optimizer")}
    with keep_freed_memory():  # as train does (heap.py)
        for step in range(steps):
            t0 = time.perf_counter()
            xb = minibatch(x_train, perm, step % (len(x_train) // batch), tcfg)
            t1 = time.perf_counter()
            eps = Generator((0, 1, 0, step)).normal((1, batch, MODEL.z_dim), "float32")
            t2 = time.perf_counter()
            _, cache, _ = core_model.forward(params, xb, eps, MODEL)
            t3 = time.perf_counter()
            grads = minivae.backward(cache, MODEL)
            t4 = time.perf_counter()
            adam.step(grads, lr=1e-3)
            t5 = time.perf_counter()
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                times[k].append(dt)
    return {k: median(v[10:]) for k, v in times.items()}


def gemm_epoch(batch, n_examples, lib="numpy"):
    """The matrix products of one epoch of the model, alone: 14 per step, same shapes.

    ``lib="numpy"`` times them with NumPy's BLAS (minivae's floor); ``lib="torch"`` with PyTorch's.
    """
    g = np.random.default_rng(0)
    if lib == "torch":
        import torch
        f = lambda *s: torch.from_numpy(g.random(s, dtype=np.float32))  # noqa: E731
    else:
        f = lambda *s: g.random(s, dtype=np.float32)  # noqa: E731
    x, W0, h, Wh = f(batch, 784), f(784, 500), f(batch, 500), f(500, 20)
    z, Wd, hd, Wo = f(batch, 20), f(20, 500), f(batch, 500), f(500, 784)
    dlogits, dad, dmu, da = f(batch, 784), f(batch, 500), f(batch, 20), f(batch, 500)
    t0 = time.perf_counter()
    for _ in range(n_examples // batch):
        x @ W0; h @ Wh; h @ Wh; z @ Wd; hd @ Wo                                   # forward (5)
        hd.T @ dlogits; dlogits @ Wo.T; z.T @ dad; dad @ Wd.T                       # decoder (4)
        h.T @ dmu; h.T @ dmu; dmu @ Wh.T; dmu @ Wh.T; x.T @ da                      # encoder (5)
    return time.perf_counter() - t0


def minivae_test_loss(params, x_test):
    eps = np.random.default_rng(123).standard_normal((1, len(x_test), MODEL.z_dim)).astype(np.float32)
    return float(core_model.forward(params, x_test, eps, MODEL)[0])


# --- PyTorch: the identical model -------------------------------------------------------------------

def torch_model(seed, fused):
    import torch

    class VAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Linear(784, 500)
            self.mu = torch.nn.Linear(500, 20)
            self.logvar = torch.nn.Linear(500, 20)
            self.dec = torch.nn.Linear(20, 500)
            self.out = torch.nn.Linear(500, 784)
            for p in self.parameters():  # the paper's init, as minivae's "normal"
                torch.nn.init.normal_(p, 0.0, 0.01)

        def forward(self, x, eps):
            h = torch.tanh(self.enc(x))
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + torch.exp(0.5 * logvar) * eps
            logits = self.out(torch.tanh(self.dec(z)))
            recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
            kl = 0.5 * torch.sum(logvar.exp() + mu * mu - 1.0 - logvar)
            return (recon + kl) / x.shape[0]

    torch.manual_seed(seed)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)
    return model, opt


def torch_epoch(model_opt, x_train_t, batch, epoch, seed=0):
    import torch
    model, opt = model_opt
    perm = torch.from_numpy(Generator((seed, 0, epoch)).permutation(len(x_train_t)))
    for step in range(len(x_train_t) // batch):
        xb = x_train_t[perm[step * batch:(step + 1) * batch]]
        eps = torch.randn(batch, 20)
        loss = model(xb, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def torch_test_loss(model_opt, x_test):
    import torch
    eps = np.random.default_rng(123).standard_normal((len(x_test), MODEL.z_dim)).astype(np.float32)
    with torch.no_grad():
        return float(model_opt[0](torch.from_numpy(x_test), torch.from_numpy(eps)))


# --- memory ----------------------------------------------------------------------------------------

RSS_SCRIPT = """
import json, sys, threading, time
sys.path.insert(0, {bench!r})
from common import MODEL, load_workload
import minivae
from minivae import train
from minivae.core import bounds
from minivae.backend import Generator

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

ds = load_workload()
base, peak, done = rss_mib(), [0.0], [False]
def watch():  # sample the resident set every 5 ms while the measured work runs
    while not done[0]:
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.005)
watcher = threading.Thread(target=watch)
watcher.start()
if {what!r} == "train":
    train.train(MODEL, train.TrainConfig(dataset="fashion-mnist", epochs=1, batch_size={batch}),
                {out!r}, data=ds, overwrite=True, progress=False, log=lambda *a: None)
else:
    params = minivae.init_params(MODEL, dtype="float32")
    bounds.evaluate(params, ds.x_test[:{n_eval}], MODEL, Generator(0), k=5000, batch_size=100, chunk=100)
done[0] = True
watcher.join()
print(json.dumps({{"base": base, "peak": max(peak[0], rss_mib())}}))
"""


def peak_rss(what, batch, n_eval, out):
    code = RSS_SCRIPT.format(bench=str(Path(__file__).resolve().parent), what=what, batch=batch,
                             n_eval=n_eval, out=str(out))
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


# --- under load ------------------------------------------------------------------------------------

def spinners(n):
    """``n`` processes that spin on the CPU until killed, like a browser tab or another job."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def epochs_under_load(x_train, batch, epochs, busy, have_torch):
    """Seconds per epoch of each implementation, epochs interleaved (the order rotated each round,
    so that no implementation always follows the same one), with ``busy`` spinners running
    throughout; and the count minivae's choice ran most steps of each epoch with."""
    from threadpoolctl import threadpool_limits

    from minivae.threads import BlasThreads, ThreadChoice, usable_cores

    cores = usable_cores()
    choice = BlasThreads(ThreadChoice())   # one choice for the whole phase, as for a training run
    chosen, steps_at = [], {}
    model = {"choice": minivae_model(0), "one": minivae_model(0), "all": minivae_model(0),
             "fused": FusedStep(minivae_model(0)[0], MODEL, batch)}
    names = {"choice": "minivae, its choice", "one": "minivae, 1 thread", "all": f"minivae, {cores} threads",
             "fused": "NumPy, hand-fused step"}
    if have_torch:
        import torch
        x_train_t = torch.from_numpy(x_train)
        model.update(torch_default=torch_model(0, False), torch_fused=torch_model(0, True))
        names.update(torch_default="PyTorch (default Adam)", torch_fused="PyTorch (fused Adam)")
    times = {k: [] for k in model}
    procs = spinners(busy)
    try:
        time.sleep(0.5)
        for epoch in range(epochs):
            keys = list(model)
            keys = keys[epoch % len(keys):] + keys[:epoch % len(keys)]  # each follows a different one
            for key in keys:
                m = model[key]
                t0 = time.perf_counter()
                if key == "choice":
                    with choice:
                        minivae_epoch(m, x_train, batch, epoch, blas=choice)
                    for n, steps in choice.steps_at.items():
                        steps_at[n] = steps_at.get(n, 0) + steps
                    chosen.append(choice.mostly())
                elif key.startswith("torch"):
                    torch_epoch(m, x_train_t, batch, epoch)
                else:
                    n = {"one": 1, "all": cores, "fused": chosen[-1] if chosen else cores}[key]
                    with threadpool_limits(limits=n, user_api="blas"):
                        minivae_epoch(m, x_train, batch, epoch)
                times[key].append(time.perf_counter() - t0)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return {names[k]: v for k, v in times.items()}, chosen, steps_at


def paired_ratio(numerators, denominators) -> float:
    """The median over rounds of one epoch's time over another's from the same round. Each round
    times every implementation once, so a slow spell of the machine that hits a round hits both of
    its epochs, where a ratio of two medians may set a fast round's epoch against a slow one's."""
    return median([a / b for a, b in zip(numerators, denominators, strict=True)])


def load_main(args, x_train, have_torch):
    from minivae.threads import usable_cores
    phases = [("quiet", 0)] + ([(f"busy {args.busy}", args.busy)] if args.busy else [])
    load = f"quiet, then {args.busy} spinning process(es) for the whole phase" if args.busy else "quiet only"
    print(f"{usable_cores()} usable cores; {load}; {args.epochs} epochs of each, interleaved\n")
    for batch in args.batch:
        runs = {phase: epochs_under_load(x_train, batch, args.epochs, n, have_torch) for phase, n in phases}
        print(f"batch {batch}: seconds per epoch, median of {args.epochs} (minivae's choice: threads per epoch)")
        print(f"  {'':<26}" + "".join(f"{phase:>14}" for phase in runs))
        med = {phase: {name: median(ts) for name, ts in times.items()} for phase, (times, _, _) in runs.items()}
        for name in next(iter(med.values())):
            print(f"  {name:<26}" + "".join(f"{med[phase][name]:>14.2f}" for phase in runs))
        print(f"  {'  threads chosen':<26}" + "".join(f"{','.join(map(str, c)):>14}" for _, c, _ in runs.values()))
        print(f"  {'  steps at each count':<26}" + "".join(
            f"{' '.join(f'{n}:{k}' for n, k in sorted(at.items())):>14}" for _, _, at in runs.values()))
        for phase, m in med.items():
            times = runs[phase][0]
            every = next(k for k in m if k.startswith("minivae, ") and k.endswith("threads"))
            best = min(m["minivae, 1 thread"], m[every])
            faster = [min(a, b) for a, b in zip(times["minivae, 1 thread"], times[every])]
            choice, fused = times["minivae, its choice"], times["NumPy, hand-fused step"]
            line = (f"  {phase}: its choice / the faster of 1 and all threads = {m['minivae, its choice'] / best:.2f} "
                    f"(round by round {paired_ratio(choice, faster):.3f}); / hand-fused = "
                    f"{m['minivae, its choice'] / m['NumPy, hand-fused step']:.2f} "
                    f"(round by round {paired_ratio(choice, fused):.3f})")
            if have_torch:
                line += (f"; / PyTorch default = {m['minivae, its choice'] / m['PyTorch (default Adam)']:.2f}, "
                         f"fused = {m['minivae, its choice'] / m['PyTorch (fused Adam)']:.2f}")
            print(line)
        print()


# --- main ------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per implementation (>= 3)")
    ap.add_argument("--batch", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-examples", type=int, default=200,
                    help="test images for the k=5000 memory measurement (memory does not grow with it)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--examples", type=int, default=60_000, help="with --busy: examples per epoch")
    ap.add_argument("--busy", type=int, default=None, metavar="N",
                    help="quiet, then with N spinning processes: the thread choice under load "
                         "(0: the quiet phase only)")
    args = ap.parse_args(argv)
    if args.busy is not None:
        try:
            import torch  # noqa: F401 - at its own default threads
            have_torch = True
        except ImportError:
            have_torch = False
        ds = load_workload()
        lines = describe_machine(0)
        print("\n".join([lines[0].replace(", threads fixed at 0", "")] + lines[1:]))
        return load_main(args, ds.x_train[:args.examples], have_torch)

    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
        have_torch = True
    except ImportError:
        have_torch = False

    ds = load_workload()
    x_train, x_test = ds.x_train, ds.x_test
    print("\n".join(describe_machine(args.threads)))
    if have_torch:
        print(f"  torch {torch.__version__}: {torch.get_num_threads()} threads, "
              f"BLAS {'MKL' if torch.backends.mkl.is_available() else 'other'}")
    else:
        print("  PyTorch not installed: `pip install torch==2.13.0` for the comparison")
    print(f"workload: {MODEL.x_dim}-{MODEL.hidden[0]}-{MODEL.z_dim} tanh, Bernoulli, L=1, Adam 1e-3, "
          f"float32, {len(x_train)} examples per epoch; {args.epochs} epochs each, interleaved\n")

    summary = {}
    for batch in args.batch:
        gap = fused_gradient_gap(x_train, batch)
        if gap > 1e-12:
            sys.exit(f"the hand-fused NumPy step's gradient differs from minivae's by {gap:.1e} (float64)")
        impls = {"minivae": (minivae_model(0), lambda m, e: minivae_epoch(m, x_train, batch, e)),
                 "NumPy, hand-fused step": (FusedStep(minivae_model(0)[0], MODEL, batch),
                                            lambda m, e: minivae_epoch(m, x_train, batch, e))}
        if have_torch:
            x_train_t = torch.from_numpy(x_train)
            impls["PyTorch (default Adam)"] = (torch_model(0, False), lambda m, e: torch_epoch(m, x_train_t, batch, e))
            impls["PyTorch (fused Adam)"] = (torch_model(0, True), lambda m, e: torch_epoch(m, x_train_t, batch, e))
        times = {name: [] for name in impls}
        for epoch in range(args.epochs):
            for name, (model, run) in impls.items():
                t0 = time.perf_counter()
                run(model, epoch)
                times[name].append(time.perf_counter() - t0)
        gemm = [gemm_epoch(batch, len(x_train)) for _ in range(args.epochs)]
        torch_gemm = [gemm_epoch(batch, len(x_train), "torch") for _ in range(args.epochs)] if have_torch else []
        seed_two = minivae_model(1)
        for epoch in range(args.epochs):
            minivae_epoch(seed_two, x_train, batch, epoch, seed=1)
        fused = impls["NumPy, hand-fused step"][0]
        losses = {"minivae": minivae_test_loss(impls["minivae"][0][0], x_test),
                  "minivae, seed 1": minivae_test_loss(seed_two[0], x_test),
                  "NumPy, hand-fused step": minivae_test_loss(fused.as_minivae(fused.p), x_test)}
        for name in impls:
            if name.startswith("PyTorch"):
                losses[name] = torch_test_loss(impls[name][0], x_test)
        med = {name: median(ts) for name, ts in times.items()}
        print(f"batch {batch}: seconds per epoch (median of {args.epochs}; all runs)")
        for name, ts in times.items():
            print(f"  {name:<24}{med[name]:8.3f}   ({', '.join(f'{t:.3f}' for t in ts)})")
        print(f"  (hand-fused step: benchmarks/fused_numpy.py, flat buffers and out= buffers; its gradient "
              f"matches minivae's to {gap:.0e} in float64; = {med['NumPy, hand-fused step'] / med['minivae']:.2f}x minivae's epoch)")
        g = median(gemm)
        print(f"  {'GEMM floor':<24}{g:8.3f}   = {100 * g / med['minivae']:.0f}% of minivae's epoch "
              f"(14 matrix products per step alone, NumPy's BLAS)")
        if torch_gemm:
            tg = median(torch_gemm)
            print(f"  {'GEMM floor, PyTorch':<24}{tg:8.3f}   = {100 * tg / med['PyTorch (fused Adam)']:.0f}% of "
                  f"PyTorch's fused-Adam epoch (same products, PyTorch's BLAS)")
        phases = minivae_phases(x_train, batch)
        total = sum(phases.values())
        print(f"  minivae, per step by phase (median of 190 steps; {1e3 * total:.2f} ms in all):")
        for k, v in phases.items():
            print(f"    {k:<16}{1e3 * v:7.3f} ms  {100 * v / total:4.0f}%")
        spread = abs(losses["minivae"] - losses["minivae, seed 1"])
        print(f"  test -ELBO after {args.epochs} epochs (1 sample per image, same draws for all):")
        for name, loss in losses.items():
            print(f"    {name:<24}{loss:9.3f}")
        for name in losses:
            if name.startswith(("PyTorch", "NumPy")):
                diff = abs(losses[name] - losses["minivae"])
                verdict = "within" if diff <= 2 * spread else "OUTSIDE"
                print(f"    |minivae - {name}| = {diff:.3f}: {verdict} twice the difference between two "
                      f"minivae seeds ({spread:.3f})")
        summary[batch] = med
        print()

    if not args.no_memory:
        with_train, secs_t = peak_rss("train", 100, args.eval_examples, Path("/tmp/minivae-bench-run"))
        with_eval, secs_e = peak_rss("eval", 100, args.eval_examples, Path("/tmp/minivae-bench-run"))
        print("peak memory (RSS in MiB, sampled every 5 ms; 'base' = after loading Fashion-MNIST):")
        print(f"  training, 1 epoch, batch 100:         peak {with_train['peak']:7.0f}  (base {with_train['base']:.0f}; {secs_t:.0f}s)")
        print(f"  k=5000 evaluation of {args.eval_examples} test images: peak {with_eval['peak']:7.0f}  "
              f"(base {with_eval['base']:.0f}; {secs_e:.0f}s; chunks of 100 samples x 100 images)\n")

    for batch, med in summary.items():
        for name in med:
            if name != "minivae":
                print(f"batch {batch}: minivae / {name} = {med['minivae'] / med[name]:.2f}")
    if have_torch and 100 in summary:
        print(f"ratio vs PyTorch fused Adam: {summary[100]['minivae'] / summary[100]['PyTorch (fused Adam)']:.2f} (batch 100)")
    elif not have_torch:
        print("ratio vs PyTorch fused Adam: n/a (PyTorch not installed)")


if __name__ == "__main__":
    main()

# %% [markdown]
# # 8. The same code on a GPU
#
# **You will learn** how one code path runs on NumPy, CuPy and array-api-strict, what changes on a
# device (where arrays live, reading values back) and what does not (the numbers), and how to check a
# GPU with one command. **You need** tutorial 2. **Time** about 10 minutes; the code runs in seconds.
# (No GPU has run this tutorial yet: the project's machines have none. `python -m minivae doctor`
# below is the check to run on the first one.)
#
# Nothing in `minivae`'s math imports NumPy. Every function takes its array module from its inputs,
# `xp = array_namespace(x)`, and uses only functions of the Python array API standard. So the code
# that ran on NumPy arrays runs unchanged on CuPy arrays (on a CUDA GPU), or on array-api-strict's
# emulated device, which is how the tests prove it without a GPU.
#
# What you choose is the **backend** of the arrays you create: `init_params(..., backend=...)` and
# `Generator(..., backend=...)`. Everything downstream follows the data.

# %%
import statistics
import time

import numpy as np

import minivae
from minivae import VAEConfig, backend as B
from minivae.tutorial import start

tut = start("08")  # where figures go, and this run's sizes (see minivae/tutorial.py)
FIGURES = tut.figures
sizes = tut.sizes(repeats=30, batches=(100, 1000))

for name in B.BACKENDS:
    print(f"{name:<8} available: {B.is_available(name)}")

# %% [markdown]
# ## What does not change: the numbers
# The same parameters and the same draws give the same loss and gradients on every backend. NumPy
# and strict agree bit for bit (strict wraps NumPy); a GPU agrees to rounding (its BLAS sums in
# another order).

# %%
cfg = VAEConfig(x_dim=64, hidden=(32, 16), z_dim=4,
                likelihood="continuous_bernoulli", n_samples=2)
ref = minivae.init_params(cfg, seed=0, backend="numpy", dtype="float64")
g = np.random.default_rng(0)
x_host, eps_host = g.random((16, 64)), g.standard_normal((2, 16, 4))
results = {}
for name in [b for b in B.BACKENDS if B.is_available(b)]:
    params = {k: B.from_numpy(v, name) for k, v in ref.items()}
    x, eps = B.from_numpy(x_host, name), B.from_numpy(eps_host, name)
    loss, grads, _ = minivae.loss_and_grads(params, x, eps, cfg)
    results[name] = (loss, {k: B.to_numpy(v) for k, v in grads.items()})
for name, (loss, grads) in results.items():
    ref = results["numpy"][1]
    worst = max(np.max(np.abs(grads[k] - ref[k])) / np.max(np.abs(ref[k]))
                for k in grads)
    print(f"{name:<8} loss {loss:.15f}   max relative gradient difference "
          f"from numpy {worst:.1e}")
    assert worst < 1e-12
if "strict" in results:
    assert results["strict"][0] == results["numpy"][0]

# %% [markdown]
# ## What changes: where the arrays live, and the border you cross to see them
# A device array cannot be silently turned into a NumPy array; `backend.to_numpy` is the one door,
# and minivae uses it only to plot, to save checkpoints, and in tests. array-api-strict enforces
# exactly what a GPU would (it comes with `pip install '.[learn]'`; without it this cell says so):

# %%
if not B.is_available("strict"):
    print("array-api-strict is not installed here (pip install array-api-strict): "
          "skipping this demo")
else:
    x_dev = B.from_numpy(x_host, "strict")
    try:
        np.asarray(x_dev)
    except Exception as e:                    # what a CUDA array would do, too
        print(f"np.asarray(device array) -> {type(e).__name__}: {e}")
    print("backend.to_numpy works:", B.to_numpy(x_dev).shape)
    try:
        params = minivae.init_params(cfg, backend="strict", dtype="float64")
        minivae.loss_and_grads(params, x_host, B.from_numpy(eps_host, "strict"), cfg)
    except ValueError as e:
        print(f"mixing host data with device parameters -> ValueError: {e}")

# %% [markdown]
# Random numbers are not part of the standard. `backend.Generator` draws with NumPy's PCG64 for
# `numpy` and `strict` (so they draw identical numbers) and with cuRAND's Philox generator on the GPU,
# so a GPU run draws *different* (equally random) numbers: GPU and CPU runs with the same seed agree in
# distribution, not bit for bit. Parameter initialization is drawn on the host, so every backend
# starts from the same model. Training keys every step's draws by (seed, epoch, step), so that a
# resumed run draws what an uninterrupted one would have; it does so with one generator per run,
# `rng.rekey(key)`, because making a GPU generator every step would allocate and free device memory
# each time. Philox is counter-based: a new key costs nothing on the device.

# %%
for name in [b for b in ("numpy", "strict") if B.is_available(b)]:
    print(f"{name:<6}:", B.to_numpy(B.Generator(7, name).normal((3,), "float64")))

# %% [markdown]
# ## Timings
# One training step of the paper's 784-500-20 model at batch 100 (the minibatch, its draws, loss and
# gradients, Adam), median of several runs, in float32 and float64, on each backend present. It is
# the step `train` runs: `train.minibatch`, `train.gradient` with the run's generator rekeyed, and
# `optim.Flat`, which runs Adam over all parameters as one buffer (on a GPU a dozen kernel launches
# instead of a dozen per weight matrix), inside `heap.keep_freed_memory`, as in `train`: the memory a
# step frees stays with the process for the next one, where C's `malloc` would hand it back to the
# system and the next step would wait while the system maps and zeroes those pages again
# (benchmarks/README.md has the numbers). On the CPU it is timed at one BLAS thread and at every usable
# core; `train` itself picks between them from its own steps' times (`threads.ThreadChoice`; the next
# section says why it has to), and reports its time per step, printed last.

# %%
from threadpoolctl import threadpool_limits

from minivae import optim, threads, train
from minivae.data import Dataset
from minivae.heap import keep_freed_memory

CFG = VAEConfig(x_dim=784, hidden=(500,), z_dim=20)
cores = threads.usable_cores()


def time_step(name, dtype, batch, repeats, n_threads):
    """Median seconds of a training step (CPU: at ``n_threads`` threads)."""
    tcfg = train.TrainConfig(batch_size=batch, backend=name, dtype=dtype)
    params, state = minivae.init_params(CFG, backend=name, dtype=dtype), {}
    x = B.Generator(0, name).uniform((10 * batch, 784), dtype)  # on the device
    order = np.random.default_rng(0).permutation(10 * batch)
    perm = B.from_numpy(order, name)  # moved to the device once per epoch
    rng, adam = B.Generator((0, 1), name), optim.Flat(params, state, "adam")
    times = []
    with threadpool_limits(limits=n_threads, user_api="blas"), keep_freed_memory():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            xb = train.minibatch(x, perm, i % 10, tcfg)
            # the stats stay on the device
            stats, grads = train.gradient(params, xb, CFG, tcfg, 0, i, rng)
            adam.step(grads)
            if name == "cupy":
                import cupy
                cupy.cuda.Device().synchronize()
            if i >= 2:  # the first steps warm up caches (and CUDA kernels)
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_one_epoch(n_steps=300):
    """train() itself, one epoch of ``n_steps`` steps on random images: the ms
    per step it reports, and the BLAS threads it ran most steps with."""
    g = np.random.default_rng(1)
    images = g.random((100 * n_steps, 784), dtype=np.float32)
    labels = np.zeros(len(images), dtype=np.int64)
    test = images[:500], labels[:500]
    data = Dataset("random", images, labels, *test, (28, 28))
    tcfg = train.TrainConfig(epochs=1, batch_size=100)
    run = train.train(CFG, tcfg, FIGURES / "timing_run", data=data,
                      overwrite=True, progress=False, log=lambda *a: None)
    return 1e3 * run["last"]["seconds"] / n_steps, int(run["last"]["threads"])


repeats = sizes.repeats
timings = {}
for name in [b for b in ("numpy", "cupy") if B.is_available(b)]:
    for dtype in ("float32", "float64"):
        for batch in sizes.batches:
            for n in (sorted({1, cores}) if name == "numpy" else [None]):
                seconds = time_step(name, dtype, batch, repeats, n)
                timings[(name, dtype, batch, n)] = seconds
                threads_used = f", {n} BLAS thread{'s' * (n > 1)}" if n else ""
                print(f"{name:<6}{dtype:<9} batch {batch:>5}{threads_used}: "
                      f"{1e3 * seconds:8.2f} ms per step")
if not B.is_available("cupy"):
    print("No CUDA device here: install the extra (`pip install -e '.[gpu]'`) "
          "on a machine with an NVIDIA GPU and run this tutorial again; the "
          "numbers above are the CPU's.")
assert all(t > 0 for t in timings.values())
f64, f32 = (timings[("numpy", d, 100, cores)] for d in ("float64", "float32"))
print(f"float64 / float32 at batch 100, CPU, {cores} threads: {f64 / f32:.2f}x")
quiet_ms, quiet_choice = train_one_epoch()
print(f"train() reports {quiet_ms:.2f} ms per step at batch 100, float32, "
      f"over one epoch of 300 steps (most of them at {quiet_choice} BLAS "
      f"thread{'s' * (quiet_choice > 1)}; its first steps try each count)")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3.6))
ax.bar(range(len(timings)), [1e3 * t for t in timings.values()])
ticks = [f"float{d[5:]}\nbatch {bs}\n"
         + (f"{n} thread" + "s" * (n > 1) if n else b) for b, d, bs, n in timings]
ax.set_xticks(range(len(timings)), ticks, fontsize=8)
ax.set_ylabel("ms per training step (median)")
ax.set_title("784-500-20 VAE: one step of loss, gradients and Adam")
fig.tight_layout()
tut.save(fig, "step_times.png")

# %% [markdown]
# ## When another program is busy: threads that wait
# NumPy's matrix products run on OpenBLAS, which splits each product over worker threads, one per
# core. Between products the workers do not sleep at once: they **spin**, checking in a tight loop
# for the next piece of work, because waking a sleeping thread takes longer than a short product. On
# a quiet machine that is the fast choice. But when another program holds one of the cores (a
# browser, Jupyter itself, a second training run), the worker on that core gets only part of it,
# every product waits for its piece, and while NumPy's single-threaded work (Adam, `tanh`) runs, the
# spinning workers take turns on the cores with both. More threads, then, can be much slower than
# one. A framework hides this; here you can measure it. The cell starts one process that only spins
# (it stops itself after two minutes), times the step at one thread and at every usable core with it
# running, and runs `train` for one epoch beside it to see which count it picks.

# %%
import subprocess
import sys

busy = {}
SPIN = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"
spinner = subprocess.Popen([sys.executable, "-c", SPIN])
try:
    time.sleep(0.5)
    for n in sorted({1, cores}):
        busy[n] = time_step("numpy", "float32", 100, 4 * repeats, n)
    busy_ms, busy_choice = train_one_epoch()
finally:
    spinner.kill()
    spinner.wait()
print(f"{cores} usable core(s); ms per step at batch 100, float32")
quiet = {n: timings[("numpy", "float32", 100, n)] for n in busy}
heads = "".join(f"{f'{n} thread' + 's' * (n > 1):>12}" for n in busy)
print(f"{'':<22}{heads}{'train()':>10}{'its choice':>12}")
for label, row, ms, choice in (
        ("quiet", quiet, quiet_ms, quiet_choice),
        ("one program spinning", busy, busy_ms, busy_choice)):
    print(f"{label:<22}" + "".join(f"{1e3 * t:>12.2f}" for t in row.values())
          + f"{ms:>10.2f}{choice:>12}")
if cores > 1:
    slow = busy[cores] / busy[1]
    print(f"with one program spinning, {cores} threads took {slow:.2f}x the "
          f"time of one thread ({'slower' if slow > 1 else 'faster'}); quiet, "
          f"{quiet[cores] / quiet[1]:.2f}x")

# %% [markdown]
# Read the table. Its last line gives the two counts' ratio, quiet and with one program spinning:
# the count that wins on a quiet machine need not win on a busy one, and only a measurement tells
# which. `train` measures on its own steps: it runs in windows
# of about half a second, tries each count on two windows, alternating (one window each can be
# fooled by a few slow seconds of the machine), keeps the faster, tries the others again after a
# few windows when its choice is new and close (then after twice as many each time it changes),
# every 20 seconds or so once a second look confirmed it or one count was 1.3x faster than the
# others (every 80 or so while it holds every core: a program that starts on one of them makes
# the step time jump), and at once when its step time jumps. In the one
# short epoch above (300 steps, a few seconds) those trial windows are a large share of the steps.
# And `train()`'s number is the mean over the whole epoch, its first steps and its slow steps
# included, where the columns beside it are medians, which leave the slow steps out: so in this
# table it can lie above both counts. Over a run of many epochs the trials are a few percent of
# it (benchmarks/ measures whole epochs). `metrics.csv` records, per epoch, the count most steps ran with (column
# `threads`). The products' last bits depend on how they
# were split, so `--threads N` fixes the count when a run must be reproduced bit for bit.
# `python benchmarks/train_speed.py --busy 1` compares whole epochs, quiet and busy, with PyTorch.

# %% [markdown]
# ## Reading values back, and checking a GPU
# On a GPU, `float(loss)` waits for every queued kernel to finish and copies the number to the host.
# `minivae.forward` therefore returns the loss as a 0-d device array, and the training loop keeps each
# step's loss on the device and reads a batch of them every `--sync-every` steps (default 25), where
# its NaN guard looks at them: a test counts zero host reads inside a training step on the strict
# backend. On a machine with a GPU, one command checks everything that cannot be checked without one:
#
# ```bash
# pip install -e '.[dev,gpu]' && python -m minivae doctor
# ```
#
# It prints the versions, the BLAS and whether CUDA can be used (and if not, why: it runs a kernel,
# a matrix product and a random draw, not just a device count), then runs the cupy tests, the float64
# gradient check and its agreement with NumPy to $10^{-12}$, one epoch of the 784-500-20 model on NumPy
# and on CuPy in float32 and float64 with the speed ratio and a verdict, and the GPU benchmark, each
# stage under a time limit. Here it reports:

# %%
from minivae import doctor

for label, value in doctor.environment():
    if label != "interpreter":  # the path of this Python tells a reader nothing
        print(f"{label:<18}{value}")

# %% [markdown]
# ## Summary
# - One code path: the math takes its array module from its inputs; only `backend.py` knows the backends.
# - The numbers are the same on every backend (bit for bit on strict, to rounding on a GPU).
# - On a device, reading a value is a synchronization: minivae reads losses in batches.
# - On the CPU, more BLAS threads are not always faster: when another program holds a core, threads
#   that spin-wait for it slow every product, so `train` measures the count it uses.
#
# **Try this.** (1) Run `python -m minivae doctor --backend strict`: the GPU checks, on the emulated
# device. (2) Predict the float64/float32 time ratio at batch 1000, then compare it with the timings above.

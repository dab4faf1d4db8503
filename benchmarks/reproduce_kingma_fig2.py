"""Kingma & Welling (2013), Figure 2: the lower bound against training examples seen, per latent size.

    python benchmarks/reproduce_kingma_fig2.py                          # Fashion-MNIST, 3e6 samples each
    python benchmarks/reproduce_kingma_fig2.py --samples 1e8 --dataset mnist   # the paper's budget

The paper's MNIST set-up: one hidden layer of 500 tanh units in encoder and decoder, Bernoulli
decoder, minibatch 100, L = 1, every parameter initialized from N(0, 0.01^2), Adagrad with a global
step chosen from {0.01, 0.02, 0.1} by the training bound after a short pilot run, and weight decay
corresponding to a N(0, I) prior on the parameters (weight_decay = 1/N_train with the loss averaged
over the batch). Latent sizes 3, 5, 10, 20 and 200. The train and test lower bounds (one sample per
image, the whole sets) are recorded at log-spaced points. Writes benchmarks/results/kingma_fig2.md,
.json and .png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import RESULTS, provenance, provenance_table, write_record  # noqa: E402

import minivae  # noqa: E402
from minivae import VAEConfig, data, optim, train  # noqa: E402
from minivae.core import bounds  # noqa: E402
from minivae.backend import Generator  # noqa: E402


def run(cfg, ds, x_train, lr, steps, seed, eval_at, weight_decay):
    """Train with Adagrad for ``steps`` steps; evaluate the bounds at the steps in ``eval_at``."""
    tcfg = train.TrainConfig(batch_size=100, optimizer="adagrad", lr=lr, seed=seed)
    params = minivae.init_params(cfg, seed=seed, dtype="float32")
    state, curve, losses = {}, [], []
    per_epoch = len(x_train) // 100
    for step in range(steps):
        epoch, s = divmod(step, per_epoch)
        if s == 0:
            perm = Generator((seed, 0, epoch)).permutation(len(x_train))
        xb = train.minibatch(x_train, perm, s, tcfg)
        stats, grads = train.gradient(params, xb, cfg, tcfg, epoch, s)
        loss = float(stats[0])  # numpy backend: reading it costs nothing
        if not np.isfinite(loss):
            return params, curve, float("nan")
        optim.step(params, grads, state, "adagrad", lr=lr, weight_decay=weight_decay)
        losses.append(loss)
        if step + 1 in eval_at:
            tr = bounds.evaluate(params, x_train, cfg, Generator((seed, 5, step)), batch_size=2000)
            te = bounds.evaluate(params, ds.x_test, cfg, Generator((seed, 6, step)), batch_size=2000)
            curve.append({"samples": (step + 1) * 100, "train_elbo": tr["elbo"], "test_elbo": te["elbo"],
                          "active_units": te["active_units"]})
            print(f"  z={cfg.z_dim:<4} lr={lr:<5} {(step + 1) * 100:>10,} samples: train {tr['elbo']:9.3f}  "
                  f"test {te['elbo']:9.3f}  active {te['active_units']}", flush=True)
    return params, curve, float(np.mean(losses[-100:]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--samples", type=float, default=3e6, help="training examples seen per latent size")
    ap.add_argument("--latent", type=int, nargs="+", default=[3, 5, 10, 20, 200])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.02, 0.1])
    ap.add_argument("--pilot-steps", type=int, default=500, help="steps of the pilot run per step size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stem", default="kingma_fig2")
    args = ap.parse_args(argv)
    started = time.time()

    ds = data.load_dataset(args.dataset, args.data_dir, progress=False)
    x_train = ds.x_train
    steps = int(args.samples // 100)
    eval_at = sorted({int(s) for s in np.unique(np.geomspace(10, steps, 16).astype(int))} | {steps})
    weight_decay = 1.0 / len(x_train)
    results = {}
    for z in args.latent:
        cfg = VAEConfig(x_dim=784, hidden=(500,), z_dim=z, activation="tanh", likelihood="bernoulli",
                        init="normal", init_std=0.01)
        t0 = time.time()
        pilots = {lr: run(cfg, ds, x_train, lr, args.pilot_steps, args.seed, set(), weight_decay)[2]
                  for lr in args.lrs}
        finite = {lr: v for lr, v in pilots.items() if np.isfinite(v)}
        lr = min(finite, key=finite.get)
        print(f"z={z}: pilot training -ELBO after {args.pilot_steps} steps "
              f"{ {k: round(v, 2) for k, v in pilots.items()} } -> step size {lr}", flush=True)
        _, curve, _ = run(cfg, ds, x_train, lr, steps, args.seed, set(eval_at), weight_decay)
        results[z] = {"lr": lr, "pilot": pilots, "curve": curve, "seconds": time.time() - t0}

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for z, r in results.items():
        xs = [c["samples"] for c in r["curve"]]
        axes[0].semilogx(xs, [c["train_elbo"] for c in r["curve"]], label=f"$N_z$ = {z}")
        axes[1].semilogx(xs, [c["test_elbo"] for c in r["curve"]], label=f"$N_z$ = {z}")
    for ax, split in zip(axes, ("train", "test")):
        ax.set_title(f"{args.dataset}: {split} lower bound")
        ax.set_xlabel("training examples seen")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("ELBO (nats per image)")
    lo = min(c["test_elbo"] for r in results.values() for c in r["curve"][len(r["curve"]) // 3:])
    axes[0].set_ylim(lo - 40, None)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"{args.stem}.png", dpi=110)

    p = provenance(started, {"seed": args.seed, "dataset": args.dataset})
    rows = "\n".join(
        f"| {z} | {r['lr']} | {r['curve'][-1]['train_elbo']:.2f} | {r['curve'][-1]['test_elbo']:.2f} | "
        f"{r['curve'][-1]['active_units']} | {r['seconds'] / 60:.1f} |" for z, r in results.items())
    md = f"""# Kingma & Welling (2013), Figure 2, on {args.dataset}

Lower bound (ELBO, nats per image, one sample per image over the whole set) after
{steps * 100:,} training examples per latent size. Curves: [{args.stem}.png]({args.stem}.png).

| N_z | Adagrad step (pilot) | train ELBO | test ELBO | active units | wall time (min) |
|---|---|---|---|---|---|
{rows}

## Settings, and where they differ from the paper
- As in the paper: 784-500-N_z with tanh, Bernoulli decoder, minibatch 100, L = 1, N(0, 0.01^2)
  initialization of every parameter, Adagrad with a global step from {{{', '.join(map(str, args.lrs))}}} chosen
  by the training bound after {args.pilot_steps} pilot steps, weight decay 1/N_train = {weight_decay:.3g}
  (a N(0, I) prior on the parameters).
- Data: **{args.dataset}** grayscale pixels in [0, 1] under the Bernoulli formula (not binarized),
  instead of the paper's MNIST; the numbers are not comparable with the paper's.
- Budget: {steps * 100:.2g} training examples per latent size here; the paper's Figure 2 runs to
  about 10^8. The script takes `--samples`.

## How this was obtained
{provenance_table(p)}
"""
    record = {"results": {str(z): r for z, r in results.items()}, "provenance": p, "eval_at_steps": eval_at}
    for path in write_record(args.stem, md, record):
        print(f"wrote {path}")
    print(md)


if __name__ == "__main__":
    main()

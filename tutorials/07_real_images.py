# %% [markdown]
# # 7. Training on real images: the manifold, the bound against latent size, the IWAE bound
#
# The experiments of Kingma & Welling's section 5 at the scale a laptop allows, on Fashion-MNIST
# (Debian's `dataset-fashion-mnist`, or any copy minivae can find; see the README) or, where it is
# absent and in the quick mode, on the 8x8 digits:
#
# 1. a VAE with a **2-D latent space**, whose decoder we can draw as a map (the paper's Figure 4);
# 2. the **lower bound for several latent sizes** against the number of training examples seen (its
#    Figure 2);
# 3. the **importance-weighted bound** $L_k$ for growing $k$ (Burda et al. 2015), which tightens the
#    ELBO towards $\log p(x)$, and the number of **active units**.

# %%
import csv

import numpy as np

import minivae
from minivae import VAEConfig, bounds, data, plots, train
from minivae.backend import Generator
from minivae.tutorial import start

tut = start("07")  # quick mode or not, and where figures go (see minivae/tutorial.py)
QUICK, FIGURES = tut.quick, tut.figures

if not QUICK and data.locate("fashion-mnist"):
    ds = data.load_dataset("fashion-mnist", progress=False)
    hidden, epochs, batch, sizes = (500,), 10, 100, (2, 3, 5, 10, 20)
else:
    ds = data.load_digits()
    hidden, epochs, batch, sizes = (128,), (4 if QUICK else 150), 32, (2, 3, 5, 10)
print(f"data: {ds.name}, {len(ds.x_train)} training images of {ds.image_shape}; hidden {hidden}, "
      f"{epochs} epochs per latent size")

# %% [markdown]
# ## Several latent sizes, one command each
# Each run is what `python -m minivae train --dataset ... --z-dim Z` does: Bernoulli decoder on the
# grayscale pixels, tanh, Adam. Metrics are written per epoch, so the curves come from `metrics.csv`.

# %%
runs = {}
for z in sizes:
    cfg = VAEConfig(x_dim=ds.x_dim, hidden=hidden, z_dim=z)
    out = FIGURES / f"z{z}"
    result = train.train(cfg, train.TrainConfig(epochs=epochs, batch_size=batch, seed=0), out, data=ds,
                         progress=False, log=lambda *a: None)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    runs[z] = dict(cfg=cfg, params=result["params"], rows=rows, seconds=result["elapsed"])
    print(f"z = {z:>2}: test -ELBO {float(rows[-1]['test_loss']):8.3f} nats after "
          f"{len(ds.x_train) * epochs} examples ({result['elapsed']:.1f}s)")

# %% [markdown]
# ## The learned 2-D manifold (the paper's Figure 4)
# A regular grid on the unit square, pushed through the inverse Gaussian CDF so that it covers the
# prior's mass evenly, and decoded: each cell shows $\mathbb E[x\mid z]$.

# %%
two = runs[2]
plots.plot_manifold(two["params"], two["cfg"], ds.image_shape, FIGURES / "manifold.png", n=15 if QUICK else 20)
plots.plot_latent(two["params"], two["cfg"], ds.x_test[:2000], ds.y_test[:2000], FIGURES / "latent.png")
plots.plot_samples(runs[max(sizes)]["params"], runs[max(sizes)]["cfg"], ds.image_shape, FIGURES / "samples.png")

# %% [markdown]
# ## The bound against training examples seen, per latent size (the paper's Figure 2)

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for z, r in runs.items():
    seen = [int(row["epoch"]) * len(ds.x_train) for row in r["rows"]]
    axes[0].semilogx(seen, [-float(row["train_loss"]) for row in r["rows"]], label=f"$N_z$ = {z}")
    axes[1].semilogx(seen, [-float(row["test_loss"]) for row in r["rows"]], label=f"$N_z$ = {z}")
for ax, title in zip(axes, ("train", "test")):
    ax.set_title(f"{ds.name}: {title} ELBO")
    ax.set_xlabel("training examples seen")
    ax.legend(fontsize=8)
axes[0].set_ylabel("ELBO (nats per image)")
fig.tight_layout()
tut.save(fig, "bound_vs_samples.png")
final = {z: -float(r["rows"][-1]["test_loss"]) for z, r in runs.items()}
print("final test ELBO per latent size:", {z: round(v, 2) for z, v in final.items()})
if not QUICK:
    assert final[max(sizes)] > final[2]      # more latent dimensions: a better bound

# %% [markdown]
# ## The importance-weighted bound, and active units
# $L_k = \mathbb E\left[\log \frac1k \sum_{i=1}^k \frac{p(x, z_i)}{q(z_i\mid x)}\right] \le \log p(x)$ rises with
# $k$; $L_1$ is the ELBO. `python -m minivae evaluate RUN --k 5000` computes it for a whole test set,
# 100 samples at a time so memory stays bounded. Active units count the latent dimensions whose
# posterior mean varies across the data ($\mathrm{Cov}_x \mathbb E_q[z_j] > 0.01$); the others sit at
# the prior, switched off by the KL term.

# %%
n_eval = 200 if QUICK else 1000
ks = (1, 10, 100) if QUICK else (1, 10, 100, 1000)
x_eval = ds.x_test[:n_eval]
print(f"{'N_z':>4}" + "".join(f"{'L_' + str(k):>10}" for k in ks) + f"{'active':>8}")
table = {}
for z, r in runs.items():
    values = [float(np.mean(bounds.iwae_bound(r["params"], x_eval, r["cfg"], k, Generator((z, k)))))
              for k in ks]
    active, _ = bounds.active_units(minivae.encode(r["params"], ds.x_test, r["cfg"])[0])
    table[z] = (values, active)
    print(f"{z:>4}" + "".join(f"{v:>10.3f}" for v in values) + f"{active:>8}")
    assert values[-1] > values[0]                # L_k rises with k
    assert active <= z

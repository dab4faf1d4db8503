# %% [markdown]
# # 7. Training on real images: the manifold, the bound against latent size, the IWAE bound
#
# **You will learn** what a trained VAE's latent space looks like, how the bound depends on the latent
# size, how the importance-weighted bound tightens it, and what active units are.
# **You need** tutorials 1 and 5. **Time** about 20 minutes to read; the run takes about 2 minutes
# on 2 cores. Symbols: [the notation page](NOTATION.md).
#
# The experiments of Kingma & Welling's section 5 at the scale a laptop allows, on Fashion-MNIST
# (Debian's `dataset-fashion-mnist`, or any copy minivae can find; see the README) or, where it is
# absent, on the 8x8 digits. Three latent sizes, eight epochs each: enough for every effect below to
# show, and to be checked by a number.
#
# 1. a VAE with a **2-D latent space**, whose decoder we can draw as a map (the paper's Figure 4);
# 2. the **lower bound for several latent sizes** against the number of training examples seen (its
#    Figure 2);
# 3. the **importance-weighted bound** $L_k$ for growing $k$ (Burda et al. 2015), which tightens the
#    ELBO towards $\log p(x)$, and the number of **active units**.
#
# The images are **dynamically binarized** (`--binarize dynamic`: every pixel drawn as a coin with its
# gray level as probability, afresh each epoch; the test set drawn once), as in the IWAE paper. Then the
# Bernoulli decoder is a true probability of the data and every bound below is a bound on $\log p(x)$
# of binary images. On the gray images themselves the Bernoulli formula is not a density
# (tutorial 5), and its "bounds" would bound nothing.

# %%
import csv

import numpy as np

import minivae
from minivae import VAEConfig, data, plots, train
from minivae.core import bounds
from minivae.backend import Generator
from minivae.tutorial import start

tut = start("07")  # where figures go, and this run's sizes (see minivae/tutorial.py)
FIGURES = tut.figures
sizes = tut.sizes(fashion_mnist=True, digits_epochs=100, manifold_n=20, n_eval=500, ks=(1, 10, 100, 1000))

if sizes.fashion_mnist and data.locate("fashion-mnist"):
    ds = data.load_dataset("fashion-mnist", progress=False)
    hidden, epochs, batch, z_dims = (256,), 8, 100, (2, 5, 20)
else:
    ds = data.load_digits()
    hidden, epochs, batch, z_dims = (128,), sizes.digits_epochs, 32, (2, 5, 20)
print(f"data: {ds.name}, {len(ds.x_train)} training images of {ds.image_shape}; hidden {hidden}, "
      f"{epochs} epochs per latent size")

# %% [markdown]
# ## Several latent sizes, one command each
# Each run is what `python -m minivae train --dataset ... --z-dim Z --binarize dynamic` does:
# Bernoulli decoder, tanh, Adam. Metrics are written per epoch, so the curves come from `metrics.csv`.

# %%
runs = {}
for z in z_dims:
    cfg = VAEConfig(x_dim=ds.x_dim, hidden=hidden, z_dim=z)
    out = FIGURES / f"z{z}"
    tcfg = train.TrainConfig(epochs=epochs, batch_size=batch, seed=0, binarize="dynamic")
    result = train.train(cfg, tcfg, out, data=ds, overwrite=True, progress=False, log=lambda *a: None)
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
x_test = train.prepare_data(ds, tcfg)[1]  # the binarized test set every run is scored on
plots.plot_manifold(two["params"], two["cfg"], ds.image_shape, FIGURES / "manifold.png", n=sizes.manifold_n)
tut.show(FIGURES / "manifold.png")
# the test set in latent space: drawn live below, with this figure where JavaScript cannot run
plots.plot_latent(two["params"], two["cfg"], x_test[:2000], ds.y_test[:2000], FIGURES / "latent.png",
                  class_names=ds.class_names)

# how different the decoded images across the map are (per-pixel spread over a 10x10 grid of z)
grid = np.array([[a, b] for a in np.linspace(-1.5, 1.5, 10) for b in np.linspace(-1.5, 1.5, 10)])
decoded = minivae.likelihood_mean(minivae.decode(two["params"], grid.astype(np.float32), two["cfg"]), two["cfg"])
spread = float(np.mean(np.std(decoded, axis=0)))
# "classes occupy regions": a test image's class, guessed from its 5 nearest neighbours in z
mu = minivae.encode(two["params"], x_test[:2000], two["cfg"])[0]
d2 = np.sum((mu[:, None, :] - mu[None, :, :]) ** 2, axis=-1)
np.fill_diagonal(d2, np.inf)
labels = ds.y_test[:2000]
guess = np.array([np.bincount(labels[row], minlength=10).argmax() for row in np.argsort(d2, axis=1)[:, :5]])
knn = float(np.mean(guess == labels))
print(f"decoded images across the map differ by {spread:.3f} per pixel (std); the class of a test image, "
      f"guessed from its 5 nearest neighbours in z, is right {knn:.0%} of the time (chance: 10%)")
tut.full_size_claim(spread > 0.1, "the map's images differ across the latent plane")
tut.full_size_claim(knn > 0.5, "classes occupy regions of the 2-D latent space")

# %% [markdown]
# ## The latent space, live
# The same 2-D model, to explore by hand: the points are the test images' encoded means $\mu$, coloured
# by class. Point anywhere to see the decoder's $\mathbb E[x\mid z]$ there, between and beyond the
# classes; click two points to see the eight images on the straight line between them. The images are
# decoded in your browser from the trained decoder's weights (float32), exported by
# `minivae.widgets.latent_explorer_data`: in Jupyter it is your own model, in the book the one trained
# when the page was built.

# %%
from minivae import widgets

explorer = widgets.latent_explorer(
    widgets.latent_explorer_data(two["params"], two["cfg"], x_test, ds.y_test, ds.class_names, ds.image_shape),
    fallback=FIGURES / "latent.png")
explorer

# %% [markdown]
# Samples from the $N_z = 20$ model: $z \sim \mathcal N(0, I)$, decoded.

# %%
plots.plot_samples(runs[max(z_dims)]["params"], runs[max(z_dims)]["cfg"], ds.image_shape, FIGURES / "samples.png")
tut.show(FIGURES / "samples.png")

# %% [markdown]
# ## The bound against training examples seen, per latent size (the paper's Figure 2)

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
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
for z, v in final.items():
    print(f"N_z = {z:>2}: final test ELBO {v:.2f} nats per image")
tut.full_size_claim(all(final[a] < final[b] for a, b in zip(z_dims, z_dims[1:])),
                    f"more latent dimensions give a better bound ({' < '.join(f'N_z = {z}' for z in z_dims)}), "
                    f"as in the paper's Figure 2")

# %% [markdown]
# ## The importance-weighted bound, and active units
# $L_k = \mathbb E\left[\log \frac1k \sum_{i=1}^k \frac{p(x, z_i)}{q(z_i\mid x)}\right] \le \log p(x)$ rises with
# $k$ (binary data, so $p(x\mid z)$ is a probability); $L_1$ is the ELBO. `python -m minivae evaluate RUN --k 5000` computes it for a whole test set,
# 100 samples at a time so memory stays bounded. Active units count the latent dimensions whose
# posterior mean varies across the data ($\mathrm{Cov}_x \mathbb E_q[z_j] > 0.01$); the others sit at
# the prior, switched off by the KL term.

# %%
n_eval, ks = sizes.n_eval, sizes.ks
x_eval = x_test[:n_eval]
print(f"{'N_z':>4}" + "".join(f"{'L_' + str(k):>10}" for k in ks) + f"{'active':>8}")
table = {}
for z, r in runs.items():
    values = [float(np.mean(bounds.iwae_bound(r["params"], x_eval, r["cfg"], k, Generator((z, k)))))
              for k in ks]
    active, _ = bounds.active_units(minivae.encode(r["params"], x_test, r["cfg"])[0])
    table[z] = (values, active)
    print(f"{z:>4}" + "".join(f"{v:>10.3f}" for v in values) + f"{active:>8}")
    assert values[-1] > values[0]                # L_k rises with k
    tut.full_size_claim(all(a < b for a, b in zip(values, values[1:])), f"N_z = {z}: L_k rises at every step of k")
    assert active <= z

# %% [markdown]
# ## Summary
# - The 2-D latent space is a map: neighbouring $z$ decode to similar images, and classes occupy regions.
# - The bound improves with the latent size, and only some latent dimensions end up active: the KL
#   switches off the ones the decoder does not need.
# - $\mathcal L_k$ rises with $k$ from the ELBO towards $\log p(x)$. Since $\mathcal L_{1000} \le \log p(x)$,
#   the gap $\mathcal L_{1000} - \mathcal L_1$ bounds $\mathrm{KL}(q(z\mid x)\,\|\,p(z\mid x)) = \log p(x) - \mathcal L_1$
#   from below: $q$ is at least that far from the true posterior.
#
# **Try this.** (1) Predict how many of 20 latent dimensions stay active, then run `python -m minivae
# evaluate` on the $N_z = 20$ run. (2) Train the 2-D model without `binarize="dynamic"` and read what
# `python -m minivae evaluate` says its numbers are. (3) Double the epochs: which latent size gains most?

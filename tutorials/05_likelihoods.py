# %% [markdown]
# # 5. Which likelihood for grayscale pixels?
#
# **You will learn** what $\log p(x\mid z)$ is, number by number, for a Bernoulli and a Gaussian
# decoder; why the Bernoulli formula is not a density on grayscale pixels; the continuous Bernoulli;
# what "MSE loss" assumes; and the two legitimate fixes, a proper density or binarized data, trained
# side by side. **You need** tutorial 1. **Time** about 30 minutes; the code runs in about a minute.
# Symbols: [the notation page](NOTATION.md).
#
# The decoder outputs the *parameters of a distribution* over $x$, and $\log p(x\mid z)$ is that
# distribution's log-density at the data. "Bernoulli MLP" and "Gaussian MLP" in the paper's
# Appendix C name which distribution: an MLP whose last layer gives Bernoulli probabilities (C.1),
# or a Gaussian's mean and log-variance from **two parallel output layers** reading the same hidden
# layer (C.2: $\mu = W_4 h + b_4$, $\log\sigma^2 = W_5 h + b_5$). Nothing about the activations.
#
# Grayscale images are not binary, so which one is right? We look at five choices, then train each
# on the same data and compare their numbers, beside the standard fix of binarizing the images.

# %%
import math

import numpy as np

import minivae
from minivae import VAEConfig, data, train
from minivae.core import bounds
from minivae.core import distributions as D
from minivae.backend import Generator
from minivae.tutorial import start

tut = start("05")  # where figures go, and this run's sizes (see minivae/tutorial.py)
FIGURES = tut.figures
sizes = tut.sizes(epochs=150)

import matplotlib.pyplot as plt

# %% [markdown]
# ## What exactly is $\log p(x\mid z)$? One image, one $z$, term by term
# A learner asks: "what exactly is $\ln p(x_n\mid z_n^{(l)}, w)$? I don't know what this
# distribution is." It is whatever distribution the decoder's outputs parameterize, evaluated at the
# data. Take one 8x8 digit $x$ and one latent sample $z$; the decoder maps $z$ to 64 numbers per head.
#
# - **Bernoulli decoder** (for binary pixels): the head gives logits $a_d$, $y_d = \mathrm{sigmoid}(a_d)$
#   is the probability that pixel $d$ is on, and
#   $\log p(x\mid z) = \sum_d \big[x_d\log y_d + (1-x_d)\log(1-y_d)\big]$: one term per pixel.
# - **Gaussian decoder** (C.2): the heads give a mean $m_d$ and a log-variance $s_d$ per pixel, and
#   $\log p(x\mid z) = \sum_d -\tfrac12\big[\log 2\pi + s_d + (x_d - m_d)^2 e^{-s_d}\big]$.
#
# ($z$ is a *sample* from $q(z\mid x)$, not "the parameters of the Gaussian" as one answer learners
# find says: the encoder's outputs are $\mu$ and $\log\sigma^2$, and $z = \mu + \sigma\epsilon$.)

# %%
digits = data.load_digits()
x_gray = digits.x_test[:1].astype(np.float64)                 # (1, 64), gray levels in [0, 1]
x_bin = (x_gray > 0.5).astype(np.float64)                     # the same digit, binarized
z = np.array([[[0.7, -0.3]]])                                  # one latent sample (L=1, B=1, Z=2)
for name, kw, x in (("Bernoulli", dict(likelihood="bernoulli"), x_bin),
                    ("Gaussian", dict(likelihood="gaussian", variance="per_pixel"), x_gray)):
    cfg_w = VAEConfig(x_dim=64, hidden=(16,), z_dim=2, **kw)
    p_w = minivae.init_params(cfg_w, seed=3, dtype="float64", init="uniform")
    heads = minivae.decode(p_w, z, cfg_w)
    if name == "Bernoulli":
        y = 1 / (1 + np.exp(-heads["logits"][0, 0]))
        terms = x[0] * np.log(y) + (1 - x[0]) * np.log(1 - y)
        print(f"{name}: pixel d, x_d, y_d = sigmoid(a_d), term x_d log y_d + (1 - x_d) log(1 - y_d)")
        for d in range(20, 26):
            print(f"  d={d:<3} x={x[0, d]:.0f}  y={y[d]:.4f}  term {terms[d]:+.4f}")
    else:
        m, s = heads["mean"][0, 0], heads["logvar"][0, 0]
        terms = -0.5 * (math.log(2 * math.pi) + s + (x[0] - m) ** 2 * np.exp(-s))
        print(f"{name}: pixel d, x_d, mean m_d, log-variance s_d, term -0.5 (log 2 pi + s_d + (x_d - m_d)^2 e^-s_d)")
        for d in range(20, 26):
            print(f"  d={d:<3} x={x[0, d]:.4f}  m={m[d]:+.4f}  s={s[d]:+.4f}  term {terms[d]:+.4f}")
    library = minivae.log_likelihood(p_w, x, z, cfg_w)[0, 0]
    print(f"  sum over all 64 pixels: {terms.sum():.10f}; minivae.log_likelihood: {library:.10f}\n")
    assert abs(terms.sum() - library) < 1e-10

# %% [markdown]
# ## 1. Bernoulli on grayscale: a formula, not a density
# $\log p(x\mid\lambda) = x\log\lambda + (1-x)\log(1-\lambda)$ is a log-probability for $x\in\{0,1\}$. For
# $x\in[0,1]$ it is the negative binary cross-entropy, and as a function of $x$ it does not integrate
# to 1: $\int_0^1 \lambda^x(1-\lambda)^{1-x}\,dx = (2\lambda-1)/\log\frac{\lambda}{1-\lambda} = 1/C(\lambda) \le \tfrac12$.
# It is maximized at $\lambda = x$ (so it "works" as a reconstruction loss), but its value is not a
# log-likelihood, and numbers from it cannot be compared with a real density's.
#
# ## 2. The continuous Bernoulli: the missing normalizer
# Loaiza-Ganem & Cunningham (2019) multiply by $C(\lambda) = \frac{2\,\mathrm{artanh}(1-2\lambda)}{1-2\lambda}$
# (which is $2$ at $\lambda=\tfrac12$), making it a proper density on $[0,1]$. Its mean is *not*
# $\lambda$. In the logits $\eta$: $C = \eta/\tanh(\eta/2)$, computed with a Taylor series near
# $\eta = 0$ where the closed form is $0/0$.

# %%
xs = (np.arange(100_000) + 0.5) / 100_000
print(f"{'lambda':>8}{'int Bernoulli':>15}{'1/C':>10}{'int cont. Bernoulli':>21}{'mean':>8}")
for lam in (0.05, 0.3, 0.5, 0.7, 0.95):
    eta = np.full((xs.size, 1), math.log(lam / (1 - lam)))
    bern = np.exp(D.bernoulli_log_prob_forward(xs[:, None], eta)[0]).mean()
    cb = np.exp(D.continuous_bernoulli_log_prob_forward(xs[:, None], eta)[0]).mean()
    inv_c = math.exp(-D.continuous_bernoulli_log_norm(eta[:1])[0, 0])
    mean = D.continuous_bernoulli_mean(eta[:1])[0, 0]
    print(f"{lam:>8}{bern:>15.6f}{inv_c:>10.6f}{cb:>21.6f}{mean:>8.3f}")
    assert abs(bern - inv_c) < 1e-6 and abs(cb - 1) < 1e-6

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
lams = np.linspace(0.001, 0.999, 999)
etas = np.log(lams / (1 - lams))
axes[0].plot(lams, D.continuous_bernoulli_log_norm(etas))
axes[0].set_xlabel("$\\lambda$")
axes[0].set_title("log C($\\lambda$): the normalizer the Bernoulli formula lacks")
for lam in (0.2, 0.5, 0.8):
    eta = np.full((xs.size, 1), math.log(lam / (1 - lam)))
    axes[1].plot(xs, np.exp(D.bernoulli_log_prob_forward(xs[:, None], eta)[0]), "--", label=f"Bernoulli formula, $\\lambda$={lam}")
    axes[1].plot(xs, np.exp(D.continuous_bernoulli_log_prob_forward(xs[:, None], eta)[0]), label=f"continuous Bernoulli, $\\lambda$={lam}")
axes[1].set_xlabel("x")
axes[1].legend(fontsize=7)
axes[1].set_title("densities on [0, 1]")
fig.tight_layout()
tut.save(fig, "continuous_bernoulli.png")

# %% [markdown]
# ## 3-5. Gaussians: fixed variance (the "MSE" VAE), a shared learned variance, a per-pixel head
# $\log\mathcal N(x;\mu,\sigma^2 I) = -\frac{\|x-\mu\|^2}{2\sigma^2} - \frac D2\log(2\pi\sigma^2)$. With $\sigma$
# fixed the second term is a constant, and the loss is the squared error scaled by $1/(2\sigma^2)$:
# that is all "MSE loss" means, and the choice of $\sigma$ silently sets how much the KL term weighs
# against reconstruction. A shared learned $\sigma$ lets the data choose that weight; the per-pixel
# head of C.2 gives every pixel of every image its own.

# %%
rng = np.random.default_rng(0)
x = rng.random((1, 64))
mean = rng.random((1, 1, 64))
for sigma in (1.0, 0.1):
    logp = D.gaussian_log_prob_forward(x, mean, np.asarray(2 * math.log(sigma)))[0][0, 0]
    mse_form = -np.sum((x - mean) ** 2) / (2 * sigma**2) - 32 * math.log(2 * math.pi * sigma**2)
    print(f"sigma={sigma}: log N = {logp:.10f}; -||x-mu||^2/(2 sigma^2) - D/2 log(2 pi sigma^2) = {mse_form:.10f}")
    assert abs(logp - mse_form) < 1e-10

# %% [markdown]
# ## Training all seven on the same data: five likelihoods, and two binarizations
# The 8x8 digits take only 17 gray levels, and a continuous density can put infinite density on a
# discrete value (a per-pixel variance shrinking to 0 on always-black border pixels). So we
# *dequantize*: $x' = (16x + u)/17$ with $u\sim U(0,1)$, which spreads each level over an interval
# and leaves the data in $[0,1)$. The same dequantized images go to every model; each has one hidden
# layer of 128 tanh units and an 8-dimensional latent.

# %%
u = np.random.default_rng(1)
dq = data.Dataset("digits-dequantized",
                  ((16 * digits.x_train + u.random(digits.x_train.shape)) / 17).astype(np.float32),
                  digits.y_train,
                  ((16 * digits.x_test + u.random(digits.x_test.shape)) / 17).astype(np.float32),
                  digits.y_test, (8, 8))
modes = {"Bernoulli": dict(likelihood="bernoulli"),
         "continuous Bernoulli": dict(likelihood="continuous_bernoulli"),
         "Gaussian, fixed sigma=0.1": dict(likelihood="gaussian", variance="fixed", sigma=0.1),
         "Gaussian, shared sigma": dict(likelihood="gaussian", variance="shared"),
         "Gaussian, per-pixel (C.2)": dict(likelihood="gaussian", variance="per_pixel")}
binarized = {"Bernoulli, static binarization": "static", "Bernoulli, dynamic binarization": "dynamic"}
modes.update({name: dict(likelihood="bernoulli") for name in binarized})
epochs = sizes.epochs
results = {}
for name, kw in modes.items():
    cfg = VAEConfig(x_dim=64, hidden=(128,), z_dim=8, **kw)
    tcfg = train.TrainConfig(epochs=epochs, batch_size=32, seed=0, binarize=binarized.get(name, "none"))
    run = train.train(cfg, tcfg, FIGURES / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", ""),
                      data=dq, overwrite=True, progress=False, log=lambda *a: None)
    p = run["params"]
    xt = train.prepare_data(dq, tcfg)[1]  # the test images this model is scored on (binarized for those two)
    ev = bounds.evaluate(p, xt, cfg, Generator(0), k=100)
    mu_z, _ = minivae.encode(p, xt, cfg)
    recon = minivae.likelihood_mean(minivae.decode(p, mu_z, cfg), cfg)
    results[name] = dict(elbo=ev["elbo"], iwae=ev["iwae_100"], kl=ev["kl"], active=ev["active_units"],
                         mse=float(np.mean((recon - xt) ** 2)), params=p, cfg=cfg)
    if kw.get("variance") == "shared":
        results[name]["sigma"] = math.exp(0.5 * float(p["dec.logvar"]))

print(f"{'likelihood':<34}{'test ELBO':>11}{'L_100':>10}{'KL':>8}{'active':>8}{'recon MSE':>11}")
for name, r in results.items():
    note = ("   (the formula on gray pixels: not a density, not comparable)" if name == "Bernoulli" else
            "   (a log-probability of *binary* images: other data)" if name in binarized else "")
    print(f"{name:<34}{r['elbo']:>11.2f}{r['iwae']:>10.2f}{r['kl']:>8.2f}{r['active']:>8}{r['mse']:>11.4f}{note}")
print(f"learned shared sigma: {results['Gaussian, shared sigma']['sigma']:.4f}")
xt = dq.x_test.astype(np.float64)
floor = float(np.mean(np.sum(xt * np.log(xt) + (1 - xt) * np.log(1 - xt), axis=1)))
print(f"the Bernoulli formula's best possible value on these images (lambda = x exactly): {floor:.2f}")
assert results["Bernoulli"]["elbo"] < floor

# %% [markdown]
# How to read the table (numbers in nats per image; higher ELBO is better):
#
# - The **Bernoulli** row's "ELBO" is not a bound on any log-density of these images; it is on a
#   different scale entirely: even a perfect $\lambda = x$ scores only minus the summed binary
#   entropy of the gray pixels (printed above, about $-19$ here), however well the model fits.
# - The **continuous Bernoulli** and the **Gaussians** are proper densities of the same data, so their
#   bounds compare directly, and the one that fits better has the higher number.
# - The **fixed** $\sigma=0.1$ Gaussian is the "MSE" VAE: its bound is whatever that arbitrary $\sigma$
#   makes it. Letting the model learn one **shared** $\sigma$ always does at least as well (the fixed
#   model is a special case), and the learned $\sigma$ is the typical reconstruction error.
# - The **per-pixel** head of C.2 can also say *where* it is unsure (strokes' edges) and *where* it is
#   sure (the always-dark border), which is worth many nats.
# - **Binarizing** is the standard legitimate way to keep a Bernoulli decoder: threshold each pixel at
#   $\frac12$ once (**static**, `--binarize static`), or draw every pixel as a coin with probability
#   equal to its gray level, afresh each epoch (**dynamic**, `--binarize dynamic`, as in the IWAE paper;
#   the test set is drawn once). Then the data *are* binary, the Bernoulli is a probability, and the
#   ELBO and $\mathcal L_{100}$ are true bounds on $\log p(x)$. But of binary images: a different data
#   set, so these two rows compare with each other and with published binarized-MNIST numbers, not
#   with the grayscale densities above (a probability of a binary image is at most 1, so its log is
#   negative; a density on $[0,1]^{64}$ can exceed 1).
#
# Measured in the full run (150 epochs): continuous Bernoulli 76.8, per-pixel Gaussian 56.5, shared
# Gaussian 23.2 (learned $\sigma = 0.14$), fixed $\sigma = 0.1$ Gaussian 18.6, and the Bernoulli formula
# $-28.4$. On these data the continuous Bernoulli, the density made for $[0, 1]$, fits best. On the
# binarized images, bounds on the log-probability of binary images: static $-18.9$ ($\mathcal L_{100}$
# $-18.5$), dynamic $-27.9$ ($-27.7$). The dynamically binarized test images are coins drawn from every
# gray pixel, so they hold more randomness to pay for than the thresholded ones: the two rows bound
# the log-likelihoods of different binary data sets.

# %%
r = {name: result["elbo"] for name, result in results.items()}
grayscale = [name for name in r if "binarization" not in name]
tut.full_size_claim(r["Gaussian, shared sigma"] >= r["Gaussian, fixed sigma=0.1"],
                    "a learned shared sigma does at least as well as the fixed one")
tut.full_size_claim(r["Gaussian, per-pixel (C.2)"] > r["Gaussian, shared sigma"] + 10,
                    "the per-pixel head is worth many (over 10) nats")
tut.full_size_claim(max(grayscale, key=r.get) == "continuous Bernoulli",
                    "on the grayscale digits the continuous Bernoulli fits best")
for name, r in results.items():
    assert r["iwae"] >= r["elbo"] - 0.5, name   # the importance-weighted bound sits above the ELBO

# %% [markdown]
# ## The C.2 decoder's two heads
# The per-pixel model's decoder has two output layers reading the same hidden layer $h$: the
# mean head and the log-variance head. Their shapes, and what the variance head learned:

# %%
pp = results["Gaussian, per-pixel (C.2)"]
for k in ("dec.W0", "dec.W_out", "dec.b_out", "dec.W_logvar", "dec.b_logvar"):
    print(f"{k:<14}{pp['params'][k].shape}")
std = np.exp(0.5 * minivae.decode(pp["params"], minivae.encode(pp["params"], dq.x_test, pp["cfg"])[0], pp["cfg"])["logvar"])
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
for ax, img, title in zip(axes, (dq.x_test[0], minivae.likelihood_mean(minivae.decode(pp["params"], minivae.encode(pp["params"], dq.x_test[:1], pp["cfg"])[0], pp["cfg"]), pp["cfg"])[0], std[0]),
                          ("input", "mean head", "std head")):
    shown = ax.imshow(img.reshape(8, 8), cmap="gray", **({} if title == "std head" else {"vmin": 0, "vmax": 1}))
    ax.set_title(title)
    ax.axis("off")
fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04, label="predicted std")  # the std's own scale
fig.tight_layout()
tut.save(fig, "per_pixel_heads.png")
print(f"mean predicted std on the border pixels {std.reshape(-1, 8, 8)[:, :, 0].mean():.4f}, "
      f"in the centre {std.reshape(-1, 8, 8)[:, 2:6, 2:6].mean():.4f}")

# %% [markdown]
# ## Summary
# - $\log p(x\mid z)$ is the decoder's distribution evaluated at the data, one term per pixel: a
#   Bernoulli's $x\log y + (1-x)\log(1-y)$, or a Gaussian's $-\frac12[\log 2\pi + s + (x-m)^2e^{-s}]$.
# - On gray pixels the Bernoulli formula is not a density (it integrates to $1/C(\lambda) \le \frac12$);
#   use a density made for the data (continuous Bernoulli, a Gaussian with a learned variance), or
#   binarize the data and keep the Bernoulli.
# - "MSE loss" is a Gaussian with a fixed $\sigma$ that silently sets the KL's weight.
#
# **Try this.** (1) Predict the sign of the continuous Bernoulli's ELBO before training, then set
# `epochs = 0`. (2) Change the fixed $\sigma$ from 0.1 to 0.3 and predict whether the ELBO rises.
# (3) `python -m minivae train --binarize none` (the Bernoulli on gray pixels) and `python -m minivae
# evaluate`: read what it says, then the same for the default, `--binarize dynamic`.

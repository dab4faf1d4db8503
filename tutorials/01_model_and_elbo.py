# %% [markdown]
# # 1. The model and the ELBO, derived and then checked to many digits
#
# **You will learn** what the three distributions of a VAE are, why $\log p(x)$ cannot be computed
# directly (and why sampling $z$ from the prior to estimate it fails), how the ELBO is derived from it,
# and how to check every step of a derivation with numbers, including the slips that lecture notes
# make. A live figure lets you move $q$ and watch the identity hold.
# **You need** Bayes' rule, expectations, and the KL divergence's definition.
# **Time** about 30 minutes to read; the code runs in about 15 seconds. Symbols: [the notation page](NOTATION.md).
#
# A VAE is a latent-variable model and an approximate posterior:
#
# - **prior** $p(z) = \mathcal N(z; 0, I)$,
# - **decoder** (likelihood) $p_\theta(x \mid z)$: a neural network maps $z$ to the parameters of a
#   distribution over $x$; here a Bernoulli per pixel, $p_\theta(x\mid z) = \prod_d y_d^{x_d}(1-y_d)^{1-x_d}$
#   with $y = \mathrm{sigmoid}(\mathrm{MLP}_\theta(z))$,
# - **encoder** (recognition model) $q_\phi(z \mid x) = \mathcal N(z; \mu_\phi(x), \mathrm{diag}\,\sigma^2_\phi(x))$:
#   a network maps $x$ to a mean and a log-variance.
#
# $\theta$ and $\phi$ are the *weights* of the two networks. $\mu^{(i)}$ and $\sigma^{2(i)}$ are the
# encoder's *outputs* for the example $x^{(i)}$, not its parameters $\phi$ (one network serves every
# $x$: "amortized" inference). And $z$ is neither of them: it is a *sample* from $q_\phi(z\mid x)$.
#
# **Why $\log p(x)$ is intractable.** The model's probability of an image is an integral over every
# latent value that could have produced it, $p(x) = \int p_\theta(x\mid z)\,p(z)\,dz$. With a
# neural network inside $p_\theta(x\mid z)$ it has no closed form, and with 20 latent dimensions a grid
# of even 10 points per dimension has $10^{20}$ points. The posterior $p(z\mid x) = p(x\mid z)p(z)/p(x)$
# needs the same integral. So the VAE trains a second network, $q_\phi(z\mid x)$, to approximate the
# posterior, and maximizes a lower bound on $\log p(x)$ that only needs samples from $q$: the ELBO.
#
# **Amortized** means that one encoder network serves every data point: instead of fitting a separate
# $(\mu^{(i)}, \sigma^{(i)})$ for each $x^{(i)}$ by its own optimization, the encoder *computes* them
# from $x^{(i)}$ in one forward pass, and the cost of inference is paid once, in training.
#
# In this tutorial the latent space is one-dimensional, so every integral over $z$ can be done by
# quadrature on a fine grid: we get $\log p(x)$ and the true posterior $p(z\mid x)$ *exactly*, and can
# check every step of the derivation with numbers.

# %%
import math

import numpy as np

import minivae
from minivae import VAEConfig, data, train
from minivae.core import bounds
from minivae.backend import Generator
from minivae.tutorial import start

tut = start("01")  # where figures go, and this run's sizes (see minivae/tutorial.py)
FIGURES = tut.figures
sizes = tut.sizes(ae_epochs=60, bars_epochs=300, grid_points=40001)

# %% [markdown]
# ## What you will build, and why it is not just an autoencoder
# First the destination. Below, two networks with the same layers (64 pixels, 256 tanh units, a 2-D
# code) are trained for a few seconds on 8x8 digits. The first is an **autoencoder**: the same
# model with the KL weight set to 0, so nothing asks its codes to look like anything in particular.
# The second is a **VAE**. Both reconstruct their inputs. Then we do what a generative model is for:
# draw codes from $\mathcal N(0, I)$ and decode them. The autoencoder's codes live wherever training
# happened to put them (here over tens of units), so the random codes, all within a few units of 0,
# fall in one region between its clusters and decode to nearly the same blur; the VAE's KL term pulls
# its codes onto $\mathcal N(0, I)$, so random codes land among real ones and decode to digit-like
# images. Look at them honestly: they are blurry look-alikes, more varied than the autoencoder's but
# far less varied than real digits (the per-pixel spread over the 64 samples is printed below beside
# the real test images'). A 2-D code of 8x8 images cannot do better. And the autoencoder really is
# deterministic: with the KL weight 0 nothing keeps $q$'s variance up, and its posterior standard
# deviation shrinks to a few thousandths of a unit, against codes spread over tens of units. The rest
# of this tutorial derives why the VAE's codes behave.

# %%
digits = data.load_digits()
pair = {}
for name, beta in (("autoencoder (KL weight 0)", 0.0), ("VAE (KL weight 1)", 1.0)):
    cfg_p = VAEConfig(x_dim=64, hidden=(256,), z_dim=2, beta=beta)
    result = train.train(cfg_p, train.TrainConfig(epochs=sizes.ae_epochs, batch_size=32, seed=0),
                         FIGURES / ("ae" if beta == 0 else "vae"), data=digits, overwrite=True,
                         progress=False, log=lambda *a: None)
    mu_test = minivae.encode(result["params"], digits.x_test, cfg_p)[0]
    z_prior = Generator(1).normal((64, 2), "float32")
    samples = minivae.likelihood_mean(minivae.decode(result["params"], z_prior, cfg_p), cfg_p)
    # how far a random code falls from the nearest code of a real test image
    gap = np.sqrt(((z_prior[:, None, :] - mu_test[None, :, :]) ** 2).sum(-1)).min(axis=1)
    sigma = np.exp(0.5 * minivae.encode(result["params"], digits.x_test, cfg_p)[1])
    pair[name] = dict(mu=mu_test, samples=samples, gap=float(np.median(gap)), recon=result["last"]["test_recon"],
                      spread=float(samples.std(axis=0).mean()), sigma=float(np.median(sigma)))
    print(f"{name:<26} test reconstruction -log p(x|z) {result['last']['test_recon']:7.2f} nats; "
          f"codes spread over {[round(float(v), 1) for v in np.ptp(mu_test, axis=0)]}; a random code's distance to the "
          f"nearest real one: {pair[name]['gap']:.2f} (median); posterior std {pair[name]['sigma']:.3f} "
          f"(median); per-pixel spread of the 64 samples {pair[name]['spread']:.3f}")
real_spread = float(digits.x_test[:64].std(axis=0).mean())
print(f"per-pixel spread of 64 real test images: {real_spread:.3f}")

import matplotlib.pyplot as plt
from minivae.plots import image_grid

fig, axes = plt.subplots(2, 2, figsize=(8, 7.4))
for row, (name, r) in zip(axes, pair.items()):
    row[0].scatter(r["mu"][:, 0], r["mu"][:, 1], c=digits.y_test, cmap="tab10", s=6)
    circle = plt.Circle((0, 0), 2, fill=False, ls="--", color="k")   # 2 std of the prior
    row[0].add_patch(circle)
    row[0].set_title(f"{name}: test codes (dashed: 2 std of N(0, I))", fontsize=9)
    row[0].set_aspect("equal", adjustable="datalim")
    row[1].imshow(image_grid(r["samples"], (8, 8), 8), cmap="gray", vmin=0, vmax=1)
    row[1].set_title("decoded from 64 random codes z ~ N(0, I)", fontsize=9)
    row[1].axis("off")
fig.tight_layout()
tut.save(fig, "autoencoder_vs_vae.png")
ae, vae = pair.values()
tut.full_size_claim(ae["gap"] > 3 * vae["gap"],
                    "random codes land far from the autoencoder's codes and among the VAE's")
tut.full_size_claim(ae["spread"] < vae["spread"] < real_spread / 2,
                    "the VAE's samples vary more than the autoencoder's, and far less than real digits")
tut.full_size_claim(ae["sigma"] < 0.01 and ae["sigma"] < 0.001 * np.ptp(ae["mu"], axis=0).min(),
                    "the autoencoder's posterior std is a few thousandths, against codes spread over tens of units")

# %% [markdown]
# ## The model as a picture
# Top: the computation for one image, as minivae runs it (`vae.forward`). Below: the graphical model.
# The plate says "repeated for each of the $N$ images": each $x^{(i)}$ has its own $z^{(i)}$, while
# $\theta$ (the decoder) and $\phi$ (the encoder) are shared by all of them. Solid arrows are the
# generative model $p(z)\,p_\theta(x\mid z)$; the dashed arrow is the inference model $q_\phi(z\mid x)$.

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Circle, Rectangle


def box(ax, xy, text, color="#dbe8f5", w=1.7, h=0.8):
    ax.add_patch(FancyBboxPatch((xy[0] - w / 2, xy[1] - h / 2), w, h, boxstyle="round,pad=0.05",
                                fc=color, ec="k", lw=1))
    ax.text(*xy, text, ha="center", va="center", fontsize=9)


def arrow(ax, a, b, style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, lw=1.2, ls=ls))


fig = plt.figure(figsize=(9, 5.4))
grid = fig.add_gridspec(2, 3, height_ratios=[1.15, 1])
left, right = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 1])
steps = [(0.9, "image $x$\n(B, D)", "#eeeeee"), (3.0, "encoder $q_\\phi$\nMLP", "#dbe8f5"),
         (5.1, "$\\mu$, $\\log\\sigma^2$\n(B, Z) each", "#dbe8f5"),
         (7.4, "$z = \\mu + e^{0.5\\log\\sigma^2}\\odot\\epsilon$\n$\\epsilon\\sim N(0, I)$", "#fde9c9"),
         (9.9, "decoder $p_\\theta$\nMLP", "#e3f1df"), (12.0, "$\\log p_\\theta(x\\mid z)$\nreconstruction", "#e3f1df")]
for (xpos, text, color), nxt in zip(steps, steps[1:] + [None]):
    wide = "epsilon" in text  # the sampling box holds a formula
    box(left, (xpos, 1.0), text, color, w=2.5 if wide else (1.95 if nxt is None else 1.7))
    if nxt:
        arrow(left, (xpos + (1.25 if wide else 0.85), 1.0), (nxt[0] - (1.25 if "epsilon" in nxt[1] else 0.85), 1.0))
box(left, (5.0, -0.6), "KL$(q(z\\mid x)\\,\\|\\,p(z))$\nclosed form", "#f6dede", w=2.4)
arrow(left, (5.0, 0.6), (5.0, -0.2))
left.text(8.5, -0.6, "ELBO = reconstruction $-$ KL", fontsize=10, ha="center",
          bbox=dict(fc="white", ec="0.5"))
left.set_xlim(-0.2, 13.2)
left.set_ylim(-1.3, 1.8)
left.axis("off")
left.set_title("one training step: $x \\to q_\\phi \\to z \\to p_\\theta \\to$ the ELBO")
right.add_patch(Rectangle((0.15, 0.08), 0.7, 0.72, fill=False, lw=1))
right.text(0.8, 0.12, "$N$", fontsize=10)
for name, (cx, cy), shaded in (("$z$", (0.5, 0.62), False), ("$x$", (0.5, 0.25), True)):
    right.add_patch(Circle((cx, cy), 0.09, fc="0.8" if shaded else "white", ec="k"))
    right.text(cx, cy, name, ha="center", va="center", fontsize=11)
arrow(right, (0.5, 0.53), (0.5, 0.34))
arrow(right, (0.6, 0.3), (0.6, 0.56), ls="--")
right.text(0.05, 0.93, "$\\theta$: decoder weights", fontsize=9)
right.text(0.05, 0.86, "$\\phi$: encoder weights (dashed)", fontsize=9)
right.set_xlim(0, 1)
right.set_ylim(0, 1)
right.set_aspect("equal")
right.axis("off")
right.set_title("graphical model")
tut.save(fig, "model.png")

# %% [markdown]
# ## A small model to look at
# The "bars" data: 4x4 binary images, each one horizontal or vertical bar (8 patterns). A VAE with a
# 1-D latent, one hidden layer of 32 tanh units, trained for a little while. (The identities below
# hold for *any* parameters; training only makes the picture more interesting.)

# %%
bars = data.make_bars(n=800, size=4, seed=0)
cfg = VAEConfig(x_dim=16, hidden=(32,), z_dim=1, likelihood="bernoulli", init="uniform")
run = train.train(cfg, train.TrainConfig(dataset="bars", epochs=sizes.bars_epochs, batch_size=50,
                                         lr=3e-3, dtype="float64", seed=0),
                  FIGURES / "run", data=bars, overwrite=True, progress=False, log=lambda *a: None)
params = run["params"]
print(f"trained: test -ELBO {run['last']['test_loss']:.4f} nats")

# %% [markdown]
# ## The derivation
# Start from the KL divergence between the approximate and the true posterior, and use Bayes' rule
# $p(z\mid x) = p(x\mid z)\,p(z) / p(x)$:
#
# $$\mathrm{KL}(q(z\mid x)\,\|\,p(z\mid x)) = \mathbb E_q[\log q(z\mid x) - \log p(z\mid x)]
#   = \mathbb E_q[\log q(z\mid x) - \log p(x\mid z) - \log p(z)] + \log p(x).$$
#
# ($\log p(x)$ does not depend on $z$, so it leaves the expectation.) Rearranged:
#
# $$\log p(x) = \underbrace{\mathbb E_q[\log p(x\mid z) + \log p(z) - \log q(z\mid x)]}_{\text{ELBO}}
#             + \mathrm{KL}(q(z\mid x)\,\|\,p(z\mid x)).$$
#
# Splitting the ELBO's expectation: $\mathbb E_q[\log p(z) - \log q(z\mid x)] = -\mathrm{KL}(q(z\mid x)\,\|\,p(z))$, so
#
# $$\text{ELBO} = \mathbb E_q[\log p(x\mid z)] - \mathrm{KL}(q(z\mid x)\,\|\,p(z)),$$
#
# a reconstruction term *minus* a KL to the *prior*, which for two Gaussians has the closed form
# $\tfrac12\sum_j(\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2)$. Since the KL to the true posterior is
# $\ge 0$, ELBO $\le \log p(x)$, with equality exactly when $q(z\mid x) = p(z\mid x)$.
#
# Now every term by quadrature, for a few images.

# %%
G = sizes.grid_points
z_grid = np.linspace(-10.0, 10.0, G)
dz = z_grid[1] - z_grid[0]


def log_normal(z, mu, logvar):
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / math.exp(logvar))


def logsumexp(a):
    m = a.max()
    return m + math.log(np.exp(a - m).sum())


def on_the_grid(x):
    """Everything about one image x (16,) on the grid: exact and variational quantities."""
    log_px_z = minivae.log_likelihood(params, x[None, :], z_grid[:, None, None], cfg)[:, 0]  # (G,)
    log_joint = log_px_z + log_normal(z_grid, 0.0, 0.0)
    log_px = logsumexp(log_joint) + math.log(dz)             # log p(x) = log \int p(x|z) p(z) dz
    log_post = log_joint - log_px                            # log p(z|x), exact
    mu, logvar = (float(a[0, 0]) for a in minivae.encode(params, x[None, :], cfg))
    log_q = log_normal(z_grid, mu, logvar)
    q = np.exp(log_q) * dz                                   # quadrature weights of E_q[.]
    return dict(log_px=log_px, log_px_z=log_px_z, log_post=log_post, log_q=log_q, q=q, mu=mu, logvar=logvar,
                elbo=np.sum(q * (log_joint - log_q)),
                kl_post=np.sum(q * (log_q - log_post)),
                recon=np.sum(q * log_px_z),
                kl_prior_quad=np.sum(q * (log_q - log_normal(z_grid, 0.0, 0.0))),
                kl_prior=0.5 * (math.exp(logvar) + mu * mu - 1 - logvar))


examples = bars.x_test[[0, 1, 2]].astype(np.float64)
results = [on_the_grid(x) for x in examples]
print(f"{'':>3}{'log p(x)':>16}{'ELBO':>16}{'KL(q||p(z|x))':>16}{'log p(x) - ELBO - KL':>24}")
for i, r in enumerate(results):
    gap = r["log_px"] - r["elbo"] - r["kl_post"]
    print(f"{i:>3}{r['log_px']:>16.10f}{r['elbo']:>16.10f}{r['kl_post']:>16.10f}{gap:>24.2e}")
    assert abs(gap) < 1e-10, gap              # log p(x) = ELBO + KL(q || p(z|x)), to ~1e-12
    assert r["kl_post"] > 0 and r["elbo"] < r["log_px"]

# %% [markdown]
# The gap between $\log p(x)$ and the ELBO *is* the KL to the true posterior, to about twelve digits.
# Next, the second form of the ELBO, with the closed-form KL to the prior:

# %%
print(f"{'':>3}{'E_q log p(x|z)':>16}{'KL(q||p) closed':>17}{'KL(q||p) grid':>16}{'ELBO (2nd form)':>17}{'difference':>12}")
for i, r in enumerate(results):
    second = r["recon"] - r["kl_prior"]
    print(f"{i:>3}{r['recon']:>16.10f}{r['kl_prior']:>17.10f}{r['kl_prior_quad']:>16.10f}"
          f"{second:>17.10f}{second - r['elbo']:>12.1e}")
    assert abs(r["kl_prior"] - r["kl_prior_quad"]) < 1e-9
    assert abs(second - r["elbo"]) < 1e-9

# %% [markdown]
# ## Why a $q$ at all: estimating $p(x)$ by sampling
# $p(x) = \mathbb E_{p(z)}[p(x\mid z)]$ is an expectation, so the simplest estimate draws $z$ from the
# prior and averages $p(x\mid z)$. It is unbiased; the trouble is its variance. By Bayes' rule
# $p(x\mid z)/p(x) = p(z\mid x)/p(z)$, so the variance of one draw, relative to $p(x)^2$, is
#
# $$\frac{\mathrm{Var}_{p(z)}[p(x\mid z)]}{p(x)^2} = \mathbb E_{p(z)}\Big[\Big(\frac{p(z\mid x)}{p(z)}\Big)^2\Big] - 1
#   = \chi^2\big(p(z\mid x)\,\|\,p(z)\big) \;\ge\; e^{\mathrm{KL}(p(z\mid x)\,\|\,p(z))} - 1,$$
#
# the chi-square divergence of the posterior from the prior (the inequality is Jensen's, applied to
# $\log$). It grows *exponentially* in how much the image tells about $z$: most prior draws land where
# $p(x\mid z)$ is tiny, and the few that hit the posterior decide the estimate. **Importance sampling**
# draws from a proposal $r(z)$ close to the posterior instead and averages $w = p(x, z)/r(z)$; its
# relative variance is $\chi^2(p(z\mid x)\,\|\,r)$, small when $r$ covers the posterior. The encoder's
# $q(z\mid x)$ is that proposal, learned. Three proposals for the first image, each variance exact (by
# quadrature, or by the argument given) and measured with 100,000 draws:
#
# - the prior $p(z)$;
# - the encoder's $q(z\mid x)$. Its exact variance is *infinite*. The decoder's tanh units are bounded,
#   so its logits are, and $p(x\mid z)$ never falls below some constant $c > 0$: the posterior keeps at
#   least $c$ times the prior's $\mathcal N(0, 1)$ tails, while $q$ is a narrow Gaussian (standard
#   deviation below 0.1). Out there a draw is astronomically rare and carries an astronomically large
#   weight, and $\mathbb E_q[w^2] \ge c^2\!\int \mathcal N(z; 0, 1)^2/q(z)\,dz$, which diverges once $q$'s
#   variance is below $\tfrac12$. The part from $|z| \le R$ grows without end as $R$ grows. 100,000 draws
#   never meet such a point, so the measured variance is small, and misleading;
# - a *defensive* mixture $r = 0.9\,q + 0.1\,p(z)$: every weight is at most $p(x, z)/(0.1\,p(z)) \le 10$,
#   so the variance is finite, and within a factor of two of $q$'s measured one.

# %%
r = results[0]
rng = np.random.default_rng(0)
n_draws = 100_000
std_q = math.exp(0.5 * r["logvar"])


def log_mixture(z):
    return np.logaddexp(math.log(0.9) + log_normal(z, r["mu"], r["logvar"]), math.log(0.1) + log_normal(z, 0.0, 0.0))


from_q = rng.random(n_draws) < 0.9
proposals = {  # name: (log r(z), 100,000 draws from r)
    "prior p(z)": (lambda z: log_normal(z, 0.0, 0.0), rng.standard_normal(n_draws)),
    "encoder q(z|x)": (lambda z: log_normal(z, r["mu"], r["logvar"]), r["mu"] + std_q * rng.standard_normal(n_draws)),
    "0.9 q + 0.1 p(z)": (log_mixture, np.where(from_q, r["mu"] + std_q * rng.standard_normal(n_draws),
                                                 rng.standard_normal(n_draws))),
}
log_prior = log_normal(z_grid, 0.0, 0.0)
log_joint = r["log_px_z"] + log_prior


def log_relative_second_moment(log_r, inside=slice(None)):
    """log (E_r[w^2] / p(x)^2), w = p(x, z) / r(z), by quadrature over the grid points `inside`."""
    return logsumexp(2 * log_joint[inside] - log_r[inside]) + math.log(dz) - 2 * r["log_px"]


# Why q's variance is infinite: the decoder's tanh units lie in [-1, 1], so every logit is at most
# M_d = sum_j |W_out[j, d]| + |b_out[d]| in size, and p(x|z) >= c = prod_d sigmoid(-M_d) > 0 for EVERY z.
# Then E_q[w^2] >= c^2 * integral of N(z; 0, 1)^2 / q(z) dz, which diverges when q's variance is below 1/2.
logit_bound = np.abs(params["dec.W_out"]).sum(axis=0) + np.abs(params["dec.b_out"])
log_c = float(-np.logaddexp(0.0, logit_bound).sum())        # log prod_d sigmoid(-M_d)
assert np.all(r["log_px_z"] >= log_c)
q_diverges = math.exp(r["logvar"]) < 0.5
print(f"p(x|z) >= e^{log_c:.0f} for every z, and q's variance is {math.exp(r['logvar']):.4f}"
      + (" < 1/2: E_q[w^2] is infinite" if q_diverges else ""))
exact, measured, estimates = {}, {}, {}
for name, (log_r, z) in proposals.items():
    log_px_z = minivae.log_likelihood(params, examples[:1], z[:, None, None], cfg)[:, 0]
    log_w = log_px_z + log_normal(z, 0.0, 0.0) - log_r(z)
    w = np.exp(log_w - r["log_px"])                  # weights relative to p(x): their mean estimates 1
    measured[name], estimates[name] = float(w.var()), float(w.mean())
    diverges = name == "encoder q(z|x)" and q_diverges
    exact[name] = math.inf if diverges else math.expm1(log_relative_second_moment(log_r(z_grid)))  # chi^2(p(z|x) || r)
for name in proposals:
    print(f"{name:<17} estimate / p(x) {estimates[name]:.4f}; relative variance per draw: exact {exact[name]:<7.4g}"
          f" measured {measured[name]:<7.4g} draws for a 1% error: "
          + (f"{exact[name] / 0.01 ** 2:,.0f}" if math.isfinite(exact[name]) else "no number suffices"))
kl_post_prior = float(np.sum(np.exp(r["log_post"]) * dz * (r["log_post"] - log_prior)))
print(f"KL(p(z|x) || p(z)) = {kl_post_prior:.3f} nats: e^KL - 1 = {math.expm1(kl_post_prior):.3f} <= "
      f"chi^2 = {exact['prior p(z)']:.3f}")
for R in (1, 2, 4, 8):
    m2 = log_relative_second_moment(r["log_q"], np.abs(z_grid) <= R)
    shown = f"e^{m2:.0f}" if m2 > 30 else f"{math.exp(m2):.3g}"
    print(f"  the encoder's E_q[w^2] / p(x)^2 from |z| <= {R} alone: {shown}")
twenty = (1 + exact["prior p(z)"]) ** 20 - 1    # chi^2 of a product of 20 independent copies
print(f"twenty independent latent dimensions like this one: the prior's relative variance {twenty:.1e}")
assert exact["prior p(z)"] >= math.expm1(kl_post_prior)                    # chi^2 >= e^KL - 1
assert abs(measured["prior p(z)"] / exact["prior p(z)"] - 1) < 0.1         # sampling sees the quadrature's number
assert abs(measured["0.9 q + 0.1 p(z)"] / exact["0.9 q + 0.1 p(z)"] - 1) < 0.25
q_looks_best = measured["encoder q(z|x)"] < exact["0.9 q + 0.1 p(z)"] < 2 * measured["encoder q(z|x)"]
var_log_w = float(np.sum(r["q"] * (log_joint - r["log_q"] - r["elbo"]) ** 2))   # Var_q[log w], exact
print(f"Var_q[log w] = {var_log_w:.4f}: the ELBO's and L_K's estimates average log w, not w")
assert var_log_w < 1
advantage = exact["prior p(z)"] / exact["0.9 q + 0.1 p(z)"]
print(f"the prior needs {advantage:.0f} times more draws than the mixture for the same error")
tut.full_size_claim(q_diverges and q_looks_best and 30 < advantage < 40 and 1.5 < kl_post_prior < 2.5
                    and 1e18 < twenty < 1e20,
                    "q's variance is infinite, yet measured it is the smallest, the mixture's within a factor "
                    "of two; the prior needs 30-40 times more draws than the mixture; the image carries about "
                    "2 nats about z; twenty such dimensions: a relative variance near 1e19")

# %% [markdown]
# The prior is unbiased and its variance is finite, yet it needs 35 times more draws than the mixture
# for the same error, and this is the easy case: the image says only about 2 nats about $z$ (it is one
# of 8 bar patterns). For a product of independent dimensions the $1 + \chi^2$ multiply, so twenty
# latent dimensions each like this one would give the prior a relative variance of $10^{19}$, and a
# real image, which pins $z$ down far more, needs more still. That is why the VAE learns $q$: a proposal
# fitted to each $x$ in one forward pass. Its light tails are harmless for what we actually train:
# the ELBO and $\mathcal L_K$ average $\log w$, not $w$, and $\log w$ has a small, finite variance.

# %% [markdown]
# In training, the expectation $\mathbb E_q[\log p(x\mid z)]$ is not done by quadrature but estimated
# with $L$ samples $z = \mu + \sigma\epsilon$. The library's estimate agrees with the exact value
# within its standard error, and the importance-weighted bound closes the gap to $\log p(x)$ as $k$ grows.
# Each $\mathcal L_k$ below is an *estimate* (the mean of 200 random ones): only its expectation is
# guaranteed to lie below $\log p(x)$, so when $\mathcal L_k$ is within a standard error or two of
# $\log p(x)$ (as $\mathcal L_{1000}$ is here) an estimate can land slightly above it: that is noise.

# %%
x0 = examples[:1]
r0 = results[0]
draws = np.stack([bounds.elbo(params, x0, cfg, Generator(s), n_samples=1)[0][0] for s in range(4000)])
se = draws.std() / math.sqrt(len(draws))
print(f"Monte-Carlo ELBO {draws.mean():.4f} +- {se:.4f} (exact {r0['elbo']:.4f})")
assert abs(draws.mean() - r0["elbo"]) < 4 * se
x_rep = np.repeat(x0, 200, axis=0)  # 200 independent estimates of each bound, averaged
for k in (10, 100, 1000):
    lk = bounds.iwae_bound(params, x_rep, cfg, k, Generator(k))
    se_k = lk.std() / math.sqrt(len(lk))
    above = lk.mean() - r0["log_px"]
    note = (f"  above log p(x) by {above:.5f} = {above / se_k:.1f} standard errors: Monte-Carlo noise"
            if above > 0 else "")
    print(f"  L_{k:<5} {lk.mean():.5f} +- {se_k:.5f}   (exact ELBO {r0['elbo']:.5f}, "
          f"log p(x) {r0['log_px']:.5f}){note}")
    assert lk.mean() <= r0["log_px"] + 3 * se_k  # within noise of the bound
assert r0["elbo"] < lk.mean()

# %% [markdown]
# ## Why the importance-weighted bound is a bound, and why it rises with $K$
# Write $w_k = p(x, z_k)/q(z_k\mid x)$ for $K$ independent draws $z_k \sim q(z\mid x)$. Their mean is
# an unbiased estimate of $p(x)$: $\mathbb E_q[w] = \int q(z\mid x)\,\frac{p(x,z)}{q(z\mid x)}\,dz = \int p(x,z)\,dz = p(x)$.
# The logarithm is concave, so Jensen's inequality $\mathbb E[\log S] \le \log \mathbb E[S]$ gives
#
# $$\mathcal L_K = \mathbb E\Big[\log \frac1K\sum_{k=1}^K w_k\Big] \le \log \mathbb E\Big[\frac1K\sum_k w_k\Big] = \log p(x),$$
#
# and $\mathcal L_1 = \mathbb E_q[\log w] = \mathbb E_q[\log p(x,z) - \log q(z\mid x)]$ is the ELBO. Why it
# rises (Burda et al. 2016, Theorem 1): for $m \le K$, the mean of $K$ weights equals the average,
# over all subsets $I$ of $m$ of them, of the subset's mean. The log of an average is at least the
# average of the logs (Jensen again), so
#
# $$\mathcal L_K = \mathbb E\Big[\log \mathbb E_I\Big[\frac1m\sum_{i\in I} w_i\Big]\Big]
#   \ge \mathbb E\Big[\mathbb E_I\Big[\log \frac1m\sum_{i\in I} w_i\Big]\Big] = \mathcal L_m .$$
#
# ($\mathbb E_q[w] = p(x)$ is the quadrature above read backwards: $\sum_z q\,w\,dz = \sum_z p(x,z)\,dz$.)
# Checked with numbers: the subset identity on one draw of 6 weights, and $\mathbb E[\mathcal L_K]$
# for $K = 1, 2, 4, 8, 16$ from 4000 independent draws each: $\mathcal L_1$ is the exact ELBO within
# its standard error, each rises above the one before, and the last stays below $\log p(x)$.
#
# (Training with $\mathcal L_K$ needs its gradient. The `iwae_gradient` exercise derives it: each sample's
# $\nabla\log w_k$ is weighted by $w_k/\sum_j w_j$, where the ELBO gives every sample $1/K$.)

# %%
from itertools import combinations

w6 = np.exp(np.random.default_rng(0).standard_normal(6))                   # any six positive weights
subsets = [np.mean(w6[list(I)]) for I in combinations(range(6), 2)]
print(f"mean of 6 weights {w6.mean():.15f}; average over the 15 pairs of the pair's mean {np.mean(subsets):.15f}")
assert abs(w6.mean() - np.mean(subsets)) < 1e-15

x_many = np.repeat(x0, 4000, axis=0)
means, ses = {}, {}
for K in (1, 2, 4, 8, 16):
    lk = bounds.iwae_bound(params, x_many, cfg, K, Generator((7, K)))
    means[K], ses[K] = float(lk.mean()), float(lk.std() / math.sqrt(len(lk)))
    print(f"  E[L_{K:<2}] = {means[K]:.5f} +- {ses[K]:.5f}")
print(f"  ELBO (exact) = {r0['elbo']:.5f}, log p(x) (exact) = {r0['log_px']:.5f}")
assert abs(means[1] - r0["elbo"]) < 4 * ses[1]                               # L_1 is the ELBO
tut.full_size_claim(all(means[a] < means[b] for a, b in [(1, 2), (2, 4), (4, 8), (8, 16)]),
                    "E[L_K] rises with K: L_1 < L_2 < L_4 < L_8 < L_16")
assert means[16] <= r0["log_px"] + 3 * ses[16]                               # and below log p(x)

# %% [markdown]
# A picture of what the numbers say: the true posterior (from the grid) beside the encoder's Gaussian.

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
for ax, r, x in zip(axes, results, examples):
    window = np.abs(z_grid - r["mu"]) < 8 * math.exp(0.5 * r["logvar"]) + 1
    ax.plot(z_grid[window], np.exp(r["log_post"][window]), label="$p(z\\mid x)$ (exact)")
    ax.plot(z_grid[window], np.exp(r["log_q"][window]), "--", label="$q(z\\mid x)$")
    ax.set_title(f"KL(q || p(z|x)) = {r['kl_post']:.4f} nats")
    ax.set_xlabel("z")
    ax.legend(loc="upper left", fontsize=8)
    inset = ax.inset_axes([0.78, 0.55, 0.2, 0.4])
    inset.imshow(x.reshape(4, 4), cmap="gray", vmin=0, vmax=1)
    inset.set_xticks([])
    inset.set_yticks([])  # keep the frame: a white bar at the edge would vanish into the background
    inset.set_title("x", fontsize=8)
fig.tight_layout()
tut.save(fig, "posteriors.png")

# %% [markdown]
# ## Move $q$ yourself
# Below, $q$'s mean and log-variance are sliders. The curves are $p(z\mid x)$ and $q(z\mid x)$; the
# bar is $-\text{ELBO}$ split into $-\log p(x)$ (fixed: it does not depend on $q$) and the KL to the
# posterior, so the identity $\log p(x) = \text{ELBO} + \mathrm{KL}(q\,\|\,p(z\mid x))$ is the bar's two
# parts adding up, whatever $q$ is. The page recomputes the three numbers from $\log p(x\mid z)$ on a
# grid of 2001 points, exported by `minivae.widgets.elbo_identity_data`; `elbo_identity_terms` is the
# same quadrature in Python, and agrees with the 40001-point numbers above to better than $10^{-6}$.
# (In Jupyter this is a live widget on your own model; in the book it runs in the page itself.)
#
# Can you close the gap? A Gaussian cannot match this posterior exactly, so no slider setting reaches
# KL = 0. The best Gaussian, found by an optimizer on the same quadrature, is printed below: the
# difference between its KL and the encoder's is the price of *amortization*, one network computing
# $q$ for every image instead of $q$ fitted to each.

# %%
from scipy.optimize import minimize

from minivae import plots, widgets

figure = widgets.elbo_identity_data(params, examples, cfg, np.linspace(-10.0, 10.0, 2001))
for i, r in enumerate(results):
    terms = widgets.elbo_identity_terms(figure, i, r["mu"], r["logvar"])
    assert max(abs(a - b) for a, b in zip(terms, (r["log_px"], r["elbo"], r["kl_post"]))) < 1e-6
    best = minimize(lambda q: widgets.elbo_identity_terms(figure, i, q[0], q[1])[2], [r["mu"], r["logvar"]],
                    method="Nelder-Mead", options=dict(xatol=1e-6, fatol=1e-10))
    print(f"image {i}: the encoder's q: KL {r['kl_post']:.5f} nats; the best Gaussian (mean {best.x[0]:.3f}, "
          f"log-variance {best.x[1]:.3f}): KL {best.fun:.5f}; amortization gap {r['kl_post'] - best.fun:.5f}")
    assert 0 < best.fun <= r["kl_post"] + 1e-9
widgets.elbo_identity(figure, fallback=plots.plot_elbo_identity(figure, FIGURES / "elbo_identity.png"))

# %% [markdown]
# ## Slips that derivations commonly make, checked against the numbers
# The lecture notes, posts and answers learners asked about contain all of these (the sources are on
# [the notation page](NOTATION.md#references)). Each is wrong, and the numbers show it. Slip 2 is the
# estimator a learner quotes from a textbook; the others are in one lecture-note derivation, which the
# `find_the_slip` exercise checks step by step.
#
# 1. **A sign on the prior KL.** Writing $\log p(x) = \mathbb E_q[\log p(x\mid z)] + \mathrm{KL}(q\|p(z)) + \mathrm{KL}(q\|p(z\mid x))$.
#    The step before it has $+\mathbb E_q[\log p(z)] - \mathbb E_q[\log q]$, which is $-\mathrm{KL}(q\|p(z))$.
# 2. **The ELBO as "reconstruction + KL".** The estimator $\frac1L\sum_l \ln p(x\mid z^{(l)}) + \mathrm{KL}(q\|p(z))$
#    is *not* a lower bound: it is larger than $\log p(x)$ here. It is a *minus*.
# 3. **A missing log.** $\mathbb E_q[p(x\mid z)]$ in place of $\mathbb E_q[\log p(x\mid z)]$ (and
#    $\mathbb E_q[p_{prior}(z)]$ in place of $\mathbb E_q[\log p(z)]$): a probability, not a log-probability.
# 4. **A doubled log.** $\mathbb E_q[\log(\log p(z) / \log q(z\mid x))]$ instead of $\mathbb E_q[\log(p(z)/q(z\mid x))]$:
#    the ratio of two log-densities can be negative, and its log undefined.
# 5. **Names.** The decoder is $p_\theta(x\mid z)$, not $p_\theta(z\mid x)$ (that is the true posterior);
#    the encoder is $q_\phi$, not $q_\theta$; and the expectation is over $q_\phi$, not $q_\theta$.
# 6. **The gradient's subscripts.** $\nabla_\theta\,\mathbb E_{q_\phi}[\log p_\theta(x, z) - \log q_\phi(z\mid x)]
#    = \mathbb E_{q_\phi}[\nabla_\theta \log p_\theta(x, z)]$, with $\nabla_\theta$ inside. One set of notes writes
#    $\nabla_\phi$ inside the $\nabla_\theta$ equation; at a fixed $z$, $\log p_\theta(x, z)$ does not
#    depend on $\phi$ at all, so that gradient is exactly zero.
# 7. **q's arguments swapped.** $q_\phi(x\mid z)$ for $q_\phi(z\mid x)$. $q$ is a distribution over
#    $z$ for a given $x$: it integrates to 1 over $z$, and summed over images at a fixed $z$ it does not.
# 8. **Standard deviation versus variance.** The text says $\mathcal N(\mu, \sigma^2 I)$; code such as
#    `Normal(loc, scale)` takes the standard deviation, `scale = exp(0.5 * logvar)`. Passing the
#    variance `exp(logvar)` as the scale is a different $q$, and a different KL.
# 9. **A bracket in the wrong place.** The same notes write $\mathbb E_{\epsilon}[\log q_\phi(\mu) + \sigma\epsilon]$
#    where $\mathbb E_{\epsilon}[\log q_\phi(\mu + \sigma\epsilon)]$ is meant: the noise moved out of
#    $q$'s argument. The first is $\log q(\mu) = -\frac12\log(2\pi\sigma^2)$; the second is minus the
#    entropy, $-\frac12\log(2\pi e\sigma^2)$: they differ by exactly $\frac12$ nat.

# %%
r = results[0]
slips = {
    "log p(x) (exact, quadrature)": r["log_px"],
    "1. E log p(x|z) + KL(q||p) + KL(q||p(z|x))": r["recon"] + r["kl_prior"] + r["kl_post"],
    "2. E log p(x|z) + KL(q||p)   (the '+' ELBO)": r["recon"] + r["kl_prior"],
    "   E log p(x|z) - KL(q||p)   (the ELBO)": r["recon"] - r["kl_prior"],
    "3. E_q p(x|z)   (no log)": float(np.sum(r["q"] * np.exp(r["log_px_z"]))),
}
for name, value in slips.items():
    print(f"{name:<46}{value:>12.5f}")
assert slips["2. E log p(x|z) + KL(q||p)   (the '+' ELBO)"] > r["log_px"]  # not a lower bound
assert abs(slips["1. E log p(x|z) + KL(q||p) + KL(q||p(z|x))"] - r["log_px"] - 2 * r["kl_prior"]) < 1e-9
ratio = log_normal(z_grid, 0, 0) / r["log_q"]
print(f"4. log p(z) / log q(z|x) is negative at {np.mean(ratio < 0) * 100:.1f}% of the grid points "
      f"(where its log is undefined)")
assert np.any(ratio < 0)

# 6. at a fixed z, d/dphi log p_theta(x, z) = 0: nudge an encoder weight, the value does not move
z_fixed = np.array([[[0.3]]])
lp_before = minivae.log_likelihood(params, x0, z_fixed, cfg)[0, 0]
nudged = {**params, "enc.W0": params["enc.W0"] + 1e-3}
lp_after = minivae.log_likelihood(nudged, x0, z_fixed, cfg)[0, 0]
_, grads_elbo, _ = minivae.loss_and_grads(params, x0, np.array([[[0.3]]]), cfg)
print(f"6. change in log p(x, z) at fixed z when an encoder weight moves: {lp_after - lp_before:.1e}; "
      f"the ELBO estimate's encoder gradient (through z = mu + sigma eps): "
      f"max |d/dW0| = {np.abs(grads_elbo['enc.W0']).max():.2e}")
assert lp_after == lp_before and np.abs(grads_elbo["enc.W0"]).max() > 0

# 7. q(z|x) integrates to 1 over z; summed over the 8 bar images at a fixed z, it does not
all_bars = np.unique(bars.x_train, axis=0).astype(np.float64)
mu_all, logvar_all = minivae.encode(params, all_bars, cfg)
q_over_x = sum(math.exp(log_normal(0.3, m, lv)) for m, lv in zip(mu_all[:, 0], logvar_all[:, 0]))
print(f"7. integral of q(z|x) over z: {np.sum(r0['q']):.6f};  sum over the {len(all_bars)} images of "
      f"q(z=0.3|x): {q_over_x:.4f}  (q is a distribution over z, not over x)")
assert abs(np.sum(r0["q"]) - 1) < 1e-6 and abs(q_over_x - 1) > 0.01

# 8. scale = std is N(mu, sigma^2); scale = variance is another q with another KL
mu0, logvar0 = r0["mu"], r0["logvar"]
kl_right = 0.5 * (math.exp(logvar0) + mu0 ** 2 - 1 - logvar0)
kl_scale_is_var = 0.5 * (math.exp(2 * logvar0) + mu0 ** 2 - 1 - 2 * logvar0)  # std would be exp(logvar)
print(f"8. KL(q || p(z)) with scale = exp(0.5 logvar): {kl_right:.5f}; with scale = exp(logvar) "
      f"by mistake: {kl_scale_is_var:.5f} nats")
assert abs(kl_right - r0["kl_prior"]) < 1e-12 and abs(kl_scale_is_var - kl_right) > 1e-3

# 9. E_eps[log q(mu + sigma eps)] against log q(mu) + sigma E[eps]: half a nat apart
e_log_q = np.sum(r0["q"] * r0["log_q"])
log_q_at_mu = log_normal(mu0, mu0, logvar0)
print(f"9. E_q[log q(z|x)] = {e_log_q:.6f};  log q(mu|x) = {log_q_at_mu:.6f};  difference "
      f"{log_q_at_mu - e_log_q:.6f} (exactly 1/2)")
assert abs(log_q_at_mu - e_log_q - 0.5) < 1e-6

# %% [markdown]
# ## Summary
# - $\log p(x) = \text{ELBO} + \mathrm{KL}(q(z\mid x)\,\|\,p(z\mid x))$ holds to about twelve digits on
#   a model where every term can be computed; the gap between $\log p(x)$ and the ELBO *is* how far
#   the encoder's Gaussian is from the true posterior.
# - ELBO = reconstruction $-$ KL to the prior. A plus sign, a missing log or a swapped argument each
#   gives a number that the quadrature refutes.
# - $\mathcal L_k$ rises from the ELBO towards $\log p(x)$ as $k$ grows; single estimates scatter around it.
#
# **Try this.** (1) Set `epochs` to 0 (an untrained model): predict whether KL(q || p(z|x)) grows or
# shrinks, then run. (2) Change `init="uniform"` to `"normal"` (the paper's tiny weights): what does
# $p(z\mid x)$ look like when the decoder barely depends on $z$? (3) Write slip 1 as a chain in the
# `find_the_slip` exercise and watch the checker point at its step.

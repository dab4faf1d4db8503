# %% [markdown]
# # 1. The model and the ELBO, derived and then checked to many digits
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
# In this tutorial the latent space is one-dimensional, so every integral over $z$ can be done by
# quadrature on a fine grid: we get $\log p(x)$ and the true posterior $p(z\mid x)$ *exactly*, and can
# check every step of the derivation with numbers.

# %%
import math
import os
from pathlib import Path

import numpy as np

import minivae
from minivae import VAEConfig, bounds, data, train
from minivae.backend import Generator

QUICK = os.environ.get("MINIVAE_QUICK") == "1"
FIGURES = Path(os.environ.get("MINIVAE_FIGURES", "tutorials/_output")) / "01"
FIGURES.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## A small model to look at
# The "bars" data: 4x4 binary images, each one horizontal or vertical bar (8 patterns). A VAE with a
# 1-D latent, one hidden layer of 32 tanh units, trained for a little while. (The identities below
# hold for *any* parameters; training only makes the picture more interesting.)

# %%
bars = data.make_bars(n=800, size=4, seed=0)
cfg = VAEConfig(x_dim=16, hidden=(32,), z_dim=1, likelihood="bernoulli", init="uniform")
run = train.train(cfg, train.TrainConfig(dataset="bars", epochs=20 if QUICK else 300, batch_size=50,
                                         lr=3e-3, dtype="float64", seed=0),
                  FIGURES / "run", data=bars, progress=False, log=lambda *a: None)
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
G = 40001 if not QUICK else 8001
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
# In training, the expectation $\mathbb E_q[\log p(x\mid z)]$ is not done by quadrature but estimated
# with $L$ samples $z = \mu + \sigma\epsilon$. The library's estimate agrees with the exact value
# within its standard error, and the importance-weighted bound closes the gap to $\log p(x)$ as $k$ grows:

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
    print(f"  L_{k:<5} {lk.mean():.5f} +- {lk.std() / math.sqrt(len(lk)):.5f}   "
          f"(exact ELBO {r0['elbo']:.5f}, log p(x) {r0['log_px']:.5f})")
assert r0["elbo"] < lk.mean() <= r0["log_px"] + 3 * lk.std() / math.sqrt(len(lk))

# %% [markdown]
# A picture of what the numbers say: the true posterior (from the grid) beside the encoder's Gaussian.

# %%
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for ax, r, x in zip(axes, results, examples):
    window = np.abs(z_grid - r["mu"]) < 8 * math.exp(0.5 * r["logvar"]) + 1
    ax.plot(z_grid[window], np.exp(r["log_post"][window]), label="$p(z\\mid x)$ (exact)")
    ax.plot(z_grid[window], np.exp(r["log_q"][window]), "--", label="$q(z\\mid x)$")
    ax.set_title(f"KL(q || p(z|x)) = {r['kl_post']:.4f} nats")
    ax.set_xlabel("z")
    ax.legend(loc="upper left", fontsize=8)
    inset = ax.inset_axes([0.78, 0.55, 0.2, 0.4])
    inset.imshow(x.reshape(4, 4), cmap="gray")
    inset.axis("off")
fig.tight_layout()
fig.savefig(FIGURES / "posteriors.png", dpi=110)

# %% [markdown]
# ## Slips that derivations commonly make, checked against the numbers
# Learners' notes (and some textbooks' first drafts) contain these. Each is wrong, and the numbers
# show it.
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

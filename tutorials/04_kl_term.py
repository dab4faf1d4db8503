# %% [markdown]
# # 4. The KL term: closed form, Monte Carlo, gradients, and posterior collapse
#
# **You will learn** the closed-form KL to the prior and its gradient, how to check both against Monte
# Carlo with standard errors, the bug the "logvar" notation invites, and what happens when the KL
# wins: posterior collapse, the KL weight $\beta$ and its warm-up, measured.
# **You need** tutorial 1 (the ELBO) and Gaussian densities. **Time** about 25 minutes; the code runs
# in about 20 seconds. Symbols: [the notation page](NOTATION.md).
#
# For $q = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)$ and $p = \mathcal N(0, I)$, with $\sigma^2 = e^{\text{logvar}}$,
#
# $$\mathrm{KL}(q\,\|\,p) = \mathbb E_q[\log q(z) - \log p(z)] = \tfrac12 \sum_j \left(\sigma_j^2 + \mu_j^2 - 1 - \log \sigma_j^2\right).$$
#
# Derivation, one dimension: $\log q(z) - \log p(z) = -\tfrac12\log\sigma^2 - \frac{(z-\mu)^2}{2\sigma^2} + \frac{z^2}{2}$.
# Under $q$, $\mathbb E[(z-\mu)^2] = \sigma^2$ and $\mathbb E[z^2] = \sigma^2 + \mu^2$, so the expectation is
# $-\tfrac12\log\sigma^2 - \tfrac12 + \tfrac12(\sigma^2 + \mu^2)$. Its gradients:
# $\partial/\partial\mu = \mu$ and $\partial/\partial\,\text{logvar} = \tfrac12(\sigma^2 - 1)$.
#
# The closed form replaces a noisy estimate by an exact number. We check it against Monte Carlo,
# value and gradient, and then show the classic bug this notation invites.

# %%
import math

import numpy as np

from minivae import distributions as D
from minivae.tutorial import start

tut = start("04")  # quick mode or not, and where figures go (see minivae/tutorial.py)
QUICK, FIGURES = tut.quick, tut.figures
S = 20_000 if QUICK else 1_000_000
rng = np.random.default_rng(0)

cases = {"near the prior": ([0.1, -0.2], [0.05, -0.1]),
         "shifted": ([1.5, -2.0], [0.0, 0.0]),
         "narrow": ([0.3, 0.0], [-4.0, -2.5]),
         "wide": ([0.0, 0.5], [1.5, 2.0])}

# %% [markdown]
# ## Value: closed form against a Monte-Carlo average of $\log q(z) - \log p(z)$, $z \sim q$

# %%
zero = np.zeros(())
print(f"{'case':<16}{'closed form':>12}{'Monte Carlo':>14}{'std. error':>12}{'z-score':>9}")
for name, (mu, logvar) in cases.items():
    mu, logvar = np.array([mu]), np.array([logvar])
    kl, _ = D.gaussian_kl_forward(mu, logvar)
    z, _ = D.reparameterize_forward(mu, logvar, rng.standard_normal((S, 1, 2)))
    diff = (D.gaussian_log_prob_forward(z, mu, logvar)[0] - D.gaussian_log_prob_forward(z, zero, zero)[0])[:, 0]
    se = diff.std() / math.sqrt(S)
    zscore = (diff.mean() - kl[0]) / se
    print(f"{name:<16}{kl[0]:>12.5f}{diff.mean():>14.5f}{se:>12.5f}{zscore:>9.2f}")
    assert abs(zscore) < 4

# %% [markdown]
# ## Gradient: closed form against the pathwise Monte-Carlo gradient
# With $z = \mu + \sigma\epsilon$, $\nabla_\mu[\log q(z) - \log p(z)]$ has two parts: the explicit
# dependence of $\log q$ on $\mu$ and the path through $z$. Averaged, they give $\mu$; the library's
# `gaussian_kl_backward` gives it exactly.

# %%
print(f"{'case':<16}{'dKL/dmu (exact)':>22}{'MC':>22}{'dKL/dlogvar (exact)':>26}{'MC':>22}")
for name, (mu, logvar) in cases.items():
    mu, logvar = np.array([mu]), np.array([logvar])
    _, cache = D.gaussian_kl_forward(mu, logvar)
    dmu, dlogvar = D.gaussian_kl_backward(np.ones(1), cache)
    eps = rng.standard_normal((S, 1, 2))
    sig = np.exp(0.5 * logvar)
    z = mu + sig * eps
    # d/dz [log q - log p] = -(z - mu)/sig^2 + z ; explicit d/dmu log q = (z - mu)/sig^2
    dz = -(z - mu) / sig**2 + z
    g_mu = dz + (z - mu) / sig**2                          # path + explicit = z
    # explicit d/dlogvar log q = -1/2 + (z - mu)^2 / (2 sig^2); path dz/dlogvar = 0.5 sig eps
    g_lv = dz * 0.5 * sig * eps + (-0.5 + (z - mu) ** 2 / (2 * sig**2))
    mc_mu, mc_lv = g_mu.mean(0)[0], g_lv.mean(0)[0]
    se_mu, se_lv = g_mu.std(0)[0] / math.sqrt(S), g_lv.std(0)[0] / math.sqrt(S)
    pair = lambda v: "(" + ", ".join(f"{x:+.4f}" for x in v) + ")"  # noqa: E731  (both latent dims)
    print(f"{name:<16}{pair(dmu[0]):>22}{pair(mc_mu):>22}{pair(dlogvar[0]):>26}{pair(mc_lv):>22}")
    assert np.all(np.abs(mc_mu - dmu[0]) < 4 * se_mu + 1e-12)
    assert np.all(np.abs(mc_lv - dlogvar[0]) < 4 * se_lv + 1e-12)

# %% [markdown]
# ## The bug this catches: "logvar" used as a log standard deviation
# Suppose a sampler draws $z = \mu + e^{\text{logvar}}\epsilon$ (treating the head as $\log\sigma$,
# as numpy-ml's VAE did) while the KL keeps the log-variance formula. The KL term then describes
# a different distribution from the one the decoder sees. Monte Carlo exposes it immediately:
# the KL of the distribution actually sampled disagrees with the closed form by many standard errors.

# %%
mu, logvar = np.array([[0.3, -0.4]]), np.array([[-1.0, 0.8]])
kl_closed = D.gaussian_kl_forward(mu, logvar)[0][0]
z_bug = mu + np.exp(logvar) * rng.standard_normal((S, 1, 2))          # wrong: std = exp(logvar)
actual_logvar = 2 * logvar                                               # what was really sampled
diff = (D.gaussian_log_prob_forward(z_bug, mu, actual_logvar)[0]
        - D.gaussian_log_prob_forward(z_bug, zero, zero)[0])[:, 0]
se = diff.std() / math.sqrt(S)
print(f"closed-form KL (logvar read as log sigma^2): {kl_closed:.4f}")
print(f"KL of what the buggy sampler draws:          {diff.mean():.4f} +- {se:.4f}  "
      f"({abs(diff.mean() - kl_closed) / se:.0f} standard errors away)")
assert abs(diff.mean() - kl_closed) > 20 * se
z_ok, _ = D.reparameterize_forward(mu, logvar, rng.standard_normal((S, 1, 2)))
var_sampled, var_wanted = z_ok.var(axis=0)[0], np.exp(logvar)[0]
print(f"the library's sampler: sample variance of z, dimension 1 {var_sampled[0]:.4f} and dimension 2 "
      f"{var_sampled[1]:.4f}, against exp(logvar) = {var_wanted[0]:.4f} and {var_wanted[1]:.4f}")
assert np.allclose(z_ok.var(axis=0)[0], np.exp(logvar)[0], rtol=0.05)

# %% [markdown]
# ## The KL in a picture
# The closed form as a function of $\mu$ and logvar in one dimension: a bowl with its minimum, 0, at
# the prior ($\mu = 0$, logvar $= 0$). The KL pulls every posterior towards it; in a trained VAE,
# latent dimensions that the decoder does not use sit at that minimum ("inactive units", tutorial 7).

# %%
import matplotlib.pyplot as plt

M, LV = np.meshgrid(np.linspace(-3, 3, 121), np.linspace(-4, 3, 141))
KL = 0.5 * (np.exp(LV) + M**2 - 1 - LV)
fig, ax = plt.subplots(figsize=(5.5, 4.2))
cs = ax.contour(M, LV, KL, levels=[0.05, 0.25, 0.5, 1, 2, 4, 8])
ax.clabel(cs, fontsize=8)
ax.plot([0], [0], "k*")
ax.set_xlabel("$\\mu$")
ax.set_ylabel("logvar $= \\log\\sigma^2$")
ax.set_title("KL(N($\\mu$, $\\sigma^2$) || N(0, 1)) in nats")
fig.tight_layout()
tut.save(fig, "kl_bowl.png")

# %% [markdown]
# ## When the KL wins: posterior collapse, and the KL weight
# The KL term pulls every $q(z\mid x)$ towards the prior; the reconstruction term pulls it towards
# what the decoder can use. If the decoder can do well enough without $z$, the cheapest ELBO sets
# $q(z\mid x) = p(z)$ for every $x$: KL $= 0$, the latent code carries nothing, and the VAE has
# *collapsed*. The default `python -m minivae train` run passes close to it: its KL falls to a few
# hundredths of a nat around epoch 10 and then recovers (its `curves.png` shows the dip).
#
# Two knobs act on it. The **KL weight** $\beta$ trains on $\text{recon} + \beta\,\mathrm{KL}$
# (`VAEConfig(beta=...)`, `--beta`; $\beta = 1$ is the ELBO, $\beta > 1$ the beta-VAE). A **warm-up**
# raises the weight linearly from 0 to $\beta$ over the first epochs (`--kl-warmup EPOCHS`), so the
# decoder learns to use $z$ before the KL's pull is felt. Both are measured here on the default model
# (digits, 64-256-2), six runs on the same data and seed; every reported ELBO has weight 1. A latent
# dimension is *active* when its posterior mean varies over the test set: $\mathrm{Var}_x\,\mathbb E_q[z_j] > 0.01$.

# %%
import csv

from minivae import VAEConfig, data, train

digits = data.load_digits()
epochs = 15 if QUICK else 60
curves = {}
print(f"{'beta':>5}{'warm-up':>9}{'lowest test KL':>17}{'at epoch':>10}{'final KL':>10}{'active units':>14}"
      f"{'test -ELBO':>12}")
for beta in (0.5, 1.0, 4.0):
    for warmup in (0, 10):
        cfg_b = VAEConfig(x_dim=64, hidden=(256,), z_dim=2, beta=beta)
        out = FIGURES / f"collapse-beta{beta}-warmup{warmup}"
        train.train(cfg_b, train.TrainConfig(epochs=epochs, batch_size=32, kl_warmup=warmup, seed=0), out,
                    data=digits, overwrite=True, progress=False, log=lambda *a: None)
        rows = list(csv.DictReader(open(out / "metrics.csv")))
        kl = np.array([float(r["test_kl"]) for r in rows])
        active = [int(float(r["test_active_units"])) for r in rows]
        curves[beta, warmup] = (kl, active, float(rows[-1]["test_loss"]))
        print(f"{beta:>5}{warmup:>9}{kl.min():>17.4f}{kl.argmin() + 1:>10}{kl[-1]:>10.4f}"
              f"{active[-1]:>11} of 2{curves[beta, warmup][2]:>12.3f}")

# what the table shows, checked
assert curves[4.0, 0][0][-1] < 1e-3 and curves[4.0, 0][1][-1] == 0       # beta = 4: collapsed
assert curves[4.0, 10][0][-1] < 1e-3 and curves[4.0, 10][1][-1] == 0     # warm-up does not save it
assert curves[1.0, 0][0].min() < 0.1 and curves[1.0, 0][0][-1] > 3 * curves[1.0, 0][0].min()  # a dip
assert curves[1.0, 10][0].min() > curves[1.0, 0][0].min()               # warm-up: a shallower dip
kl_half, kl_one = curves[0.5, 0][0], curves[1.0, 0][0]
assert kl_half.min() > 5 * kl_one.min()        # beta = 1/2: a dip too, but over 5x shallower
assert kl_half[-1] > 3 * kl_half.min()         # and it recovers to over 3x its lowest
tut.full_size_claim(curves[1.0, 0][0][-1] > 1.0 and curves[1.0, 0][1][-1] == 2,
                    "with beta = 1 the KL recovers to over 1 nat with both units active")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for (beta, warmup), (kl, active, _) in curves.items():
    style = dict(color={0.5: "tab:green", 1.0: "tab:blue", 4.0: "tab:red"}[beta], ls="-" if warmup == 0 else "--")
    x = np.arange(1, len(kl) + 1)
    axes[0].semilogy(x, np.maximum(kl, 1e-6), label=f"beta {beta}, warm-up {warmup}", **style)
    axes[1].plot(x, active, **style)
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("test KL(q(z|x) || p(z)), nats (log scale)")
axes[0].set_title("the KL term per epoch")
axes[0].legend(fontsize=8)
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("active units (of 2)")
axes[1].set_ylim(-0.2, 2.2)
axes[1].set_yticks([0, 1, 2])
axes[1].set_title("active latent dimensions per epoch")
fig.tight_layout()
tut.save(fig, "collapse.png")

# %% [markdown]
# With $\beta = 4$ the KL is worth more than anything $z$ can buy the decoder: both units switch off
# within a few epochs and stay off, warm-up or not, and the test $-$ELBO is that of a model that ignores
# $z$. With $\beta = 1$ the KL dips to a few hundredths of a nat (the default run's dip), then the
# decoder learns to use $z$ and it recovers; a 10-epoch warm-up makes the dip shallower. With
# $\beta = \frac12$ the KL dips too, but its lowest is over five times $\beta = 1$'s, and it recovers
# to over three times that lowest value, at the price of a looser ELBO (the reported $-$ELBO weighs
# the KL by 1, which the training no longer optimizes).
#
# ## Summary
# - $\mathrm{KL}(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0,1)) = \frac12(\sigma^2 + \mu^2 - 1 - \log\sigma^2)$,
#   with gradients $\mu$ and $\frac12(\sigma^2 - 1)$, agrees with Monte Carlo within its standard error.
# - `logvar` is $\log\sigma^2$: a sampler that uses it as $\log\sigma$ is caught by dozens of standard errors.
# - The KL weight trades reconstruction for closeness to the prior; too much of it collapses the posterior.
#
# **Try this.** (1) Predict the lowest KL for $\beta = 2$, then add it to the loop. (2) Make the warm-up
# 30 epochs for $\beta = 4$: does it delay the collapse or prevent it? (3) Set `z_dim=8` and count how
# many units stay active with $\beta = 1$.

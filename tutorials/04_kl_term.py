# %% [markdown]
# # 4. The KL term: closed form, Monte Carlo, gradients, and posterior collapse
#
# **You will learn** the closed-form KL to the prior and its gradient, how to check both against Monte
# Carlo with standard errors, the bug the "logvar" notation invites, and what happens when the KL
# wins: posterior collapse, the KL weight $\beta$ and its warm-up, measured; and why a model with 20
# latent dimensions switches most of them off, unit by unit, with three remedies side by side.
# **You need** tutorial 1 (the ELBO) and Gaussian densities. **Time** about 35 minutes; the code runs
# in about 45 seconds. Symbols: [the notation page](NOTATION.md).
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

from minivae.core import distributions as D
from minivae.tutorial import start

tut = start("04")  # where figures go, and this run's sizes (see minivae/tutorial.py)
FIGURES = tut.figures
sizes = tut.sizes(samples=1_000_000, epochs=60)
S = sizes.samples
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
tut.full_size_claim(abs(diff.mean() - kl_closed) > 100 * se, "the bug is hundreds of standard errors away")
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
# *collapsed*. The 64-256-2 model on the gray digits passes close to it: its KL falls to a few
# hundredths of a nat around epoch 10 and then recovers (measured below).
#
# Two knobs act on it. The **KL weight** $\beta$ trains on $\text{recon} + \beta\,\mathrm{KL}$
# (`VAEConfig(beta=...)`, `--beta`; $\beta = 1$ is the ELBO, $\beta > 1$ the beta-VAE). A **warm-up**
# raises the weight linearly from 0 to $\beta$ over the first epochs (`--kl-warmup EPOCHS`), so the
# decoder learns to use $z$ before the KL's pull is felt. Both are measured here on the default
# run's model (64-256-2) on the gray digits, six runs on the same data and seed; every reported ELBO
# has weight 1. A latent
# dimension is *active* when its posterior mean varies over the test set: $\mathrm{Var}_x\,\mathbb E_q[z_j] > 0.01$.

# %%
import csv

from minivae import VAEConfig, data, train

digits = data.load_digits()
epochs = sizes.epochs
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
# $z$. With $\beta = 1$ the KL dips to a few hundredths of a nat, then the
# decoder learns to use $z$ and it recovers; a 10-epoch warm-up makes the dip shallower. With
# $\beta = \frac12$ the KL dips too, but its lowest is over five times $\beta = 1$'s, and it recovers
# to over three times that lowest value, at the price of a looser ELBO (the reported $-$ELBO weighs
# the KL by 1, which the training no longer optimizes).
#
# ## Why does my VAE ignore some latent dimensions?
# Give the same digits model 20 latent dimensions instead of 2 and train it on the ELBO: most of them
# switch off. A switched-off unit has $q(z_j\mid x) \approx p(z_j)$ for every $x$: its KL is near 0
# and the decoder learns to ignore it. The ELBO charges every unit its own KL,
# $\mathrm{KL} = \sum_j \mathrm{KL}_j$ with $\mathrm{KL}_j = \tfrac12(\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2)$,
# so a unit stays on only while what it buys the reconstruction is worth more than it costs. Both are
# measured below, unit by unit: the cost is the unit's KL on the test set, and the gain is how much
# worse the reconstruction gets when that unit alone is replaced by the prior ($\mu_j = 0$,
# $\sigma_j = 1$, the rest of $q$ untouched).
#
# Three remedies are in common use, and each is trained here on the same data and seed: a **warm-up**
# (the KL weight rising from 0 over 10 epochs, as above), **free bits** (Kingma et al. 2016:
# the loss charges each unit's batch-mean KL as $\max(\lambda, \mathrm{KL}_j)$, so a unit's first
# $\lambda$ nats are free; `VAEConfig(free_bits=...)`, `--free-bits`) and a KL weight $\beta = \frac12$.
# Every test $-$ELBO reported is the true one (KL weight 1, no free bits).

# %%
import minivae
from minivae.core import bounds
from minivae.backend import Generator


def unit_costs_and_gains(params, cfg, x, samples=20):
    """Per latent unit: its mean KL over x (the cost) and the rise of the mean -log p(x|z) when that
    unit alone is drawn from the prior instead of q (the gain). Both (Z,), in nats."""
    mu, logvar = minivae.encode(params, x, cfg)
    kl_units = D.gaussian_kl_forward(mu, logvar, per_dim=True)[0].mean(axis=0)
    eps = Generator(7).normal((samples, len(x), cfg.z_dim), "float32")

    def recon(mu_, logvar_):
        z = mu_ + np.exp(0.5 * logvar_) * eps
        return -float(np.mean(minivae.log_likelihood(params, x, z, cfg)))
    base, gains = recon(mu, logvar), []
    for j in range(cfg.z_dim):
        mu_j, logvar_j = mu.copy(), logvar.copy()
        mu_j[:, j] = logvar_j[:, j] = 0.0
        gains.append(recon(mu_j, logvar_j) - base)
    return kl_units, np.array(gains)


remedies = {"ELBO": ({}, {}), "warm-up, 10 epochs": ({}, {"kl_warmup": 10}),
            "free bits 0.25": ({"free_bits": 0.25}, {}), "free bits 0.5": ({"free_bits": 0.5}, {}),
            "beta 1/2": ({"beta": 0.5}, {})}
units = {}
print(f"{'20 latent units':<20}{'active':>8}{'KL > 0.1':>10}{'total KL':>10}{'test -ELBO':>12}")
for name, (model_kw, train_kw) in remedies.items():
    cfg20 = VAEConfig(x_dim=64, hidden=(256,), z_dim=20, **model_kw)
    run20 = train.train(cfg20, train.TrainConfig(epochs=epochs, batch_size=32, seed=0, **train_kw),
                        FIGURES / ("z20-" + name.replace(" ", "-").replace(",", "").replace("/", "")),
                        data=digits, overwrite=True, progress=False, log=lambda *a: None)
    kl_units, gains = unit_costs_and_gains(run20["params"], cfg20, digits.x_test)
    active, _ = bounds.active_units(minivae.encode(run20["params"], digits.x_test, cfg20)[0])
    units[name] = dict(kl=kl_units, gain=gains, active=active, loss=run20["last"]["test_loss"])
    print(f"{name:<20}{active:>8}{int((kl_units > 0.1).sum()):>10}{kl_units.sum():>10.3f}"
          f"{units[name]['loss']:>12.3f}")

elbo_units = units["ELBO"]
order = np.argsort(-elbo_units["kl"])
on = elbo_units["kl"] > 0.01
print("\nthe ELBO model, unit by unit (sorted by KL): cost (KL) and gain (reconstruction), nats")
print("  KL   " + " ".join(f"{v:5.3f}" for v in elbo_units["kl"][order][:8]) + " ...")
print("  gain " + " ".join(f"{v:5.3f}" for v in elbo_units["gain"][order][:8]) + " ...")
print(f"units by threshold: KL > 0.001: {(elbo_units['kl'] > 0.001).sum()}, KL > 0.01: {on.sum()}, "
      f"KL > 0.1: {(elbo_units['kl'] > 0.1).sum()}; posterior-mean variance > 0.01: {elbo_units['active']}")

# what the text below says, checked (on the full run: the quick one trains too little for units to settle)
ratio = elbo_units["gain"][on] / elbo_units["kl"][on]
tut.full_size_claim(2 <= elbo_units["active"] <= 8 and on.sum() == elbo_units["active"],
                    f"a few units on ({elbo_units['active']}, KL > 0.01 and the variance rule agree), most off")
tut.full_size_claim(np.all((ratio > 2) & (ratio < 5)),
                    f"each unit that is on buys 2 to 5 times its KL in reconstruction "
                    f"({ratio.min():.2f} to {ratio.max():.2f})")
tut.full_size_claim(np.all(elbo_units["kl"][~on] < 0.01) and np.all(elbo_units["gain"][~on] < 0.01),
                    "each unit that is off costs under 0.01 nat and buys under 0.01")
tut.full_size_claim(50 * elbo_units["kl"][~on].max() < elbo_units["kl"][on].min()
                    and 50 * elbo_units["gain"][~on].max() < elbo_units["gain"][on].min(),
                    "the units that are off cost and buy over 50 times less than those that are on")
tut.full_size_claim((elbo_units["kl"] > 0.001).sum() > on.sum(), "a threshold of 0.001 nat counts more units")
for name, lam in (("free bits 0.25", 0.25), ("free bits 0.5", 0.5)):
    assert units[name]["active"] == 20 and units[name]["loss"] > elbo_units["loss"] + 1
    tut.full_size_claim(0.5 * lam < np.median(units[name]["kl"]) < 1.5 * lam,
                        f"with {name}, the median unit carries about lambda = {lam} nats "
                        f"({np.median(units[name]['kl']):.3f})")
tut.full_size_claim(units["warm-up, 10 epochs"]["active"] == elbo_units["active"]
                    and abs(units["warm-up, 10 epochs"]["loss"] - elbo_units["loss"]) < 0.2,
                    "warm-up leaves the active units and the ELBO as they were (within 0.2 nat)")
tut.full_size_claim(units["beta 1/2"]["active"] > elbo_units["active"]
                    and units["beta 1/2"]["loss"] > elbo_units["loss"]
                    and (units["beta 1/2"]["kl"] > 0.1).sum() <= on.sum() + 1,
                    "beta 1/2 switches more units on by the variance rule, but few carry over 0.1 nat, "
                    "and its -ELBO is worse")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for name, u in units.items():
    axes[0].semilogy(np.arange(1, 21), np.maximum(np.sort(u["kl"])[::-1], 1e-4), marker=".", label=name)
axes[0].axhline(0.01, color="k", lw=0.8, ls=":")
axes[0].set_xlabel("latent unit, sorted by its KL")
axes[0].set_ylabel("KL of the unit, nats (log scale)")
axes[0].set_title("each unit's KL (dotted: 0.01)")
axes[0].set_xticks([1, 5, 10, 15, 20])
axes[0].set_ylim(2e-4, 40)  # room above the curves for the legend
axes[0].legend(fontsize=8, loc="upper right", ncol=2)
axes[1].loglog(np.maximum(elbo_units["kl"], 1e-4), np.maximum(elbo_units["gain"], 1e-4), "o")
axes[1].plot([1e-4, 10], [1e-4, 10], "k--", lw=0.8, label="gain = cost")
axes[1].set_xlabel("cost: the unit's KL, nats")
axes[1].set_ylabel("gain: reconstruction lost without it")
axes[1].set_title("the ELBO model's 20 units")
axes[1].legend(fontsize=8)
fig.tight_layout()
tut.save(fig, "latent_units.png")

# %% [markdown]
# On the ELBO, a few units stay on and the rest switch off. Each unit that is on buys more
# reconstruction than its KL costs (its point lies above the dashed line, by a factor of two to five);
# each unit that is off costs under 0.01 nat and buys under 0.01: the cluster in the lower left, over
# 50 times below the units that are on in both. That is the mechanism: once the
# first units carry the digits' large-scale variation, what is left for another unit to add is worth
# less than the KL it would pay, so the optimum sets it to the prior. Nothing is broken; with these
# 64-pixel images and this decoder, a few dimensions are what the ELBO can use.
#
# How many are "active" depends on the line drawn. The variance rule (Burda et al.:
# $\mathrm{Var}_x\,\mathbb E_q[z_j] > 0.01$) and a KL above 0.01 nat agree here, but a threshold of
# 0.001 nat counts more: a switched-off unit keeps a trace of KL, never exactly 0.
#
# The remedies, side by side: the warm-up leaves the units and the ELBO as they were. Free bits switch
# every unit on, because below $\lambda$ a unit's KL is free, and each extra unit then carries about
# $\lambda$ nats; the test $-$ELBO is worse by over a nat, since those nats are paid in full in the
# true ELBO. $\beta = \frac12$ keeps more units above the variance rule, but few of them carry over 0.1 nat,
# and its $-$ELBO is worse too. More active units is not a better model: a remedy is worth it when it
# improves the bound (or a downstream use of the code), not the count.
#
# ## Summary
# - $\mathrm{KL}(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0,1)) = \frac12(\sigma^2 + \mu^2 - 1 - \log\sigma^2)$,
#   with gradients $\mu$ and $\frac12(\sigma^2 - 1)$, agrees with Monte Carlo within its standard error.
# - `logvar` is $\log\sigma^2$: a sampler that uses it as $\log\sigma$ is caught at once, its KL hundreds
#   of standard errors from the closed form with a million samples (the distance grows as $\sqrt S$).
# - The KL weight trades reconstruction for closeness to the prior; too much of it collapses the posterior.
# - A latent unit stays on only while its reconstruction gain exceeds its KL; the others switch off.
#   Free bits, warm-up and $\beta < 1$ change the count, not necessarily the bound.
#
# **Try this.** (1) Predict the lowest KL for $\beta = 2$, then add it to the loop. (2) Make the warm-up
# 30 epochs for $\beta = 4$: does it delay the collapse or prevent it? (3) Set `z_dim=8` and count how
# many units stay active with $\beta = 1$.

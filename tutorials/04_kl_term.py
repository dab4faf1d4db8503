# %% [markdown]
# # 4. The KL term: closed form, Monte Carlo, and gradients
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
    print(f"{name:<16}{str(np.round(dmu[0], 4)):>22}{str(np.round(mc_mu, 4)):>22}"
          f"{str(np.round(dlogvar[0], 4)):>26}{str(np.round(mc_lv, 4)):>22}")
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
print(f"sample variance with the library's sampler: {z_ok.var(axis=0)[0].round(4)}, "
      f"exp(logvar) = {np.exp(logvar)[0].round(4)}")
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

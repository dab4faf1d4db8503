# %% [markdown]
# # 3. The reparameterization trick: why the pathwise gradient wins
#
# **You will learn** the two unbiased gradient estimators of an expectation, the score function and the
# pathwise (reparameterization) one, and how much their variances differ, measured in a toy and in a
# real VAE. **You need** tutorials 1 and 2. **Time** about 20 minutes; the code runs in about 10
# seconds. Symbols: [the notation page](NOTATION.md). The `score_function` exercise asks you to
# write the score-function estimator yourself.
#
# The ELBO's reconstruction term is an expectation under a distribution that depends on the
# parameters we differentiate: $\nabla_\phi\,\mathbb E_{q_\phi(z\mid x)}[f(z)]$ with $f(z) = \log p_\theta(x\mid z)$.
# Two unbiased estimators:
#
# - **score function** (REINFORCE, likelihood ratio): $\nabla_\phi \mathbb E_q[f] = \mathbb E_q[f(z)\,\nabla_\phi \log q_\phi(z)]$.
#   It needs only values of $f$, never its gradient. For $q = \mathcal N(\mu, \sigma^2)$ with $\sigma^2 = e^{\text{logvar}}$:
#   $\partial_\mu \log q = (z-\mu)/\sigma^2$ and $\partial_{\text{logvar}} \log q = \tfrac12((z-\mu)^2/\sigma^2 - 1)$.
# - **pathwise** (reparameterization): write $z = \mu + \sigma\epsilon$ with $\epsilon \sim \mathcal N(0, I)$,
#   so the randomness no longer depends on $\phi$: $\nabla_\phi \mathbb E_\epsilon[f(\mu + \sigma\epsilon)] = \mathbb E_\epsilon[\nabla_z f \cdot \partial z/\partial\phi]$,
#   with $\partial z/\partial\mu = 1$ and $\partial z/\partial\,\text{logvar} = \tfrac12\sigma\epsilon$.
#
# Both are right on average. Their *variances* differ by orders of magnitude; we measure them.

# %%
import dataclasses
import math

import numpy as np

import minivae
from minivae import VAEConfig, data, train
from minivae.tutorial import start

tut = start("03")  # where figures go, and this run's sizes (see minivae/tutorial.py)
FIGURES = tut.figures
sizes = tut.sizes(repeats=1000, epochs=60)
REPEATS = sizes.repeats

# %% [markdown]
# ## Where the score-function identity comes from
# Differentiate under the integral, then use $\nabla_\phi q = q\,\nabla_\phi \log q$ (the chain rule for
# $\log q$, read backwards: the "log-derivative trick"):
#
# $$\nabla_\phi \mathbb E_{q_\phi}[f] = \nabla_\phi \int q_\phi(z)\,f(z)\,dz = \int \nabla_\phi q_\phi(z)\,f(z)\,dz
#   = \int q_\phi(z)\,\nabla_\phi \log q_\phi(z)\,f(z)\,dz = \mathbb E_{q_\phi}\big[f(z)\,\nabla_\phi \log q_\phi(z)\big].$$
#
# ($f$ must not depend on $\phi$, and the integral and the derivative may be swapped: true for these
# Gaussians and any $f$ that grows more slowly than they decay.) Since $\int q = 1$ for every $\phi$,
# the same step gives $\mathbb E_q[\nabla_\phi \log q] = \nabla_\phi \int q = 0$: the score has mean zero,
# which is why subtracting a constant from $f$ (a baseline) changes the estimator's variance but not
# its mean. Both facts checked by quadrature for $f(z) = \sin 3z + z^2$ (any $f$ would do), against a
# centred finite difference of $\mathbb E_q[f]$ itself:

# %%
z_q = np.linspace(-12, 12, 200001)
dz_q = z_q[1] - z_q[0]


def expect(g, mu_, logvar_):
    """E_q[g(z)] for q = N(mu_, exp(logvar_)), by quadrature."""
    q = np.exp(-0.5 * (math.log(2 * math.pi) + logvar_ + (z_q - mu_) ** 2 / math.exp(logvar_)))
    return float(np.sum(q * g(z_q)) * dz_q)


f_test = lambda z: np.sin(3 * z) + z ** 2  # noqa: E731
m0, lv0, h = 0.3, math.log(0.6), 1e-5
by_difference = ((expect(f_test, m0 + h, lv0) - expect(f_test, m0 - h, lv0)) / (2 * h),
                 (expect(f_test, m0, lv0 + h) - expect(f_test, m0, lv0 - h)) / (2 * h))
v0 = math.exp(lv0)
by_identity = (expect(lambda z: f_test(z) * (z - m0) / v0, m0, lv0),
               expect(lambda z: f_test(z) * 0.5 * ((z - m0) ** 2 / v0 - 1), m0, lv0))
score_mean = (expect(lambda z: (z - m0) / v0, m0, lv0), expect(lambda z: 0.5 * ((z - m0) ** 2 / v0 - 1), m0, lv0))
for name, d, i, sm in zip(("mu", "logvar"), by_difference, by_identity, score_mean):
    print(f"d/d{name:<6} E_q[f]: finite difference {d:.10f}, E_q[f * score] {i:.10f}; E_q[score] = {sm:.1e}")
    assert abs(d - i) < 1e-8 * max(1.0, abs(d)) and abs(sm) < 1e-12

# %% [markdown]
# ## A case with a known answer
# $f(z) = (z - a)^2$ under $z \sim \mathcal N(\mu, \sigma^2)$: $\mathbb E[f] = (\mu - a)^2 + \sigma^2$, so
# $\partial_\mu = 2(\mu - a)$ exactly. Each estimator is averaged over $S$ samples, and its variance
# measured over many repetitions.

# %%
mu, logvar, a = 0.5, math.log(0.8), 2.0
sigma = math.exp(0.5 * logvar)
exact = 2 * (mu - a)
rng = np.random.default_rng(0)
rows = []
for S in (1, 10, 100, 1000):
    eps = rng.standard_normal((REPEATS, S))
    z = mu + sigma * eps
    pathwise = np.mean(2 * (z - a), axis=1)                      # f'(z) * dz/dmu
    score = np.mean((z - a) ** 2 * (z - mu) / sigma**2, axis=1)  # f(z) * dlog q / dmu
    rows.append((S, pathwise.mean(), pathwise.var(), score.mean(), score.var()))
print(f"exact d/dmu = {exact}")
print(f"{'S':>6}{'pathwise mean':>15}{'variance':>11}{'score mean':>13}{'variance':>11}{'ratio':>9}")
for S, pm, pv, sm, sv in rows:
    print(f"{S:>6}{pm:>15.4f}{pv:>11.2e}{sm:>13.4f}{sv:>11.2e}{sv / pv:>9.1f}")
    assert abs(pm - exact) < 5 * math.sqrt(pv / REPEATS) and abs(sm - exact) < 5 * math.sqrt(sv / REPEATS)
    assert sv > 5 * pv

# %% [markdown]
# Both means sit on the exact value within their standard errors (they are unbiased), both variances
# fall as $1/S$, and the score-function variance is several times larger at every $S$ even for this
# one-dimensional quadratic.
#
# ## In a real VAE
# Now $f(z) = \log p_\theta(x\mid z)$ of a VAE trained on the 8x8 digits, with an 8-dimensional latent:
# the gradient of $\mathbb E_q[\log p(x\mid z)]$ with respect to the encoder's outputs $\mu$ and
# logvar, for one image. The pathwise estimate comes straight out of `loss_and_grads`: the gradient
# of the loss with respect to the bias `enc.b_mu` *is* the gradient with respect to $\mu$ for a batch
# of one (minus the KL's part, which is exact, $\partial\mathrm{KL}/\partial\mu = \mu$).

# %%
digits = data.load_digits()
cfg = VAEConfig(x_dim=64, hidden=(64,), z_dim=8)
run = train.train(cfg, train.TrainConfig(epochs=sizes.epochs, batch_size=32, lr=3e-3, dtype="float64"),
                  FIGURES / "run", data=digits, overwrite=True, progress=False, log=lambda *a: None)
params = run["params"]
x = digits.x_test[:1].astype(np.float64)
m, lv = (t[0] for t in minivae.encode(params, x, cfg))
s = np.exp(0.5 * lv)


def pathwise_grad(eps):
    """d E_q[log p(x|z)] / d(mu, logvar) from S draws eps (S, 8), via the library's backward."""
    _, grads, _ = minivae.loss_and_grads(params, x, eps[:, None, :], dataclasses.replace(cfg, n_samples=len(eps)))
    # loss = -recon + KL; remove the exact KL gradient and flip the sign
    return -(grads["enc.b_mu"] - m), -(grads["enc.b_logvar"] - 0.5 * (np.exp(lv) - 1))


def score_grad(eps):
    z = m + s * eps                                                   # (S, 8)
    f = minivae.log_likelihood(params, x, z[:, None, :], cfg)[:, 0]   # (S,)
    d_mu = (z - m) / s**2
    d_lv = 0.5 * ((z - m) ** 2 / s**2 - 1)
    return np.mean(f[:, None] * d_mu, axis=0), np.mean(f[:, None] * d_lv, axis=0)


reference = pathwise_grad(rng.standard_normal((200_000, 8)))
table = []
for S in (1, 10, 100, 1000):
    pw = [pathwise_grad(rng.standard_normal((S, 8))) for _ in range(REPEATS // (1 + S // 100))]
    sf = [score_grad(rng.standard_normal((S, 8))) for _ in range(REPEATS // (1 + S // 100))]
    pw_mu, sf_mu = np.array([p[0] for p in pw]), np.array([q[0] for q in sf])
    table.append((S, pw_mu.var(axis=0).mean(), sf_mu.var(axis=0).mean(), pw_mu, sf_mu))
print(f"{'S':>6}{'pathwise var':>14}{'score var':>12}{'ratio':>9}   (d/dmu, mean over the 8 dimensions)")
for S, pv, sv, pw_mu, sf_mu in table:
    print(f"{S:>6}{pv:>14.3e}{sv:>12.3e}{sv / pv:>9.0f}")
    assert sv > 100 * pv  # "hundreds of times"
    n = len(pw_mu)  # both unbiased: the means agree with the 200k-sample reference
    assert np.all(np.abs(sf_mu.mean(0) - reference[0]) < 5 * np.sqrt(sf_mu.var(0) / n) + 1e-3)

# %% [markdown]
# In the VAE the score-function estimator's variance is hundreds of times the pathwise one's (about
# 750 times here): it would need hundreds of times more samples for the same accuracy. The reason is visible in the
# formulas: the score function multiplies $f(z)$ (here about $-20$ nats, never centred) by a
# zero-mean noise term, while the pathwise estimator uses the *gradient* of $f$, which carries the
# direction information directly. A baseline (subtracting a constant from $f$) helps the score
# function, but the pathwise estimator needs none; its price is that $f$ must be differentiable in
# $z$ and $q$ reparameterizable.

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 4))
Ss = [t[0] for t in table]
ax.loglog(Ss, [t[1] for t in table], "o-", label="pathwise (reparameterization)")
ax.loglog(Ss, [t[2] for t in table], "s-", label="score function (REINFORCE)")
ax.set_xlabel("samples S per estimate")
ax.set_ylabel("variance of the d/dmu estimate")
ax.set_title("gradient variance, VAE on 8x8 digits")
ax.legend()
fig.tight_layout()
tut.save(fig, "variance.png")


# %% [markdown]
# ## Summary
# - Both estimators are unbiased; the score function needs only values of $f$, the pathwise one its
#   gradient, and in the VAE the pathwise one's variance is hundreds of times smaller, at every sample
#   count from 1 to 1000.
# - That is why the VAE writes $z = \mu + \sigma\epsilon$: the noise no longer depends on $\phi$, and
#   backprop reaches the encoder through $z$.
#
# **Try this.** (1) Add a constant to $f$ (say $+10$): predict which estimator's variance changes, then
# run. (2) Subtract the sample mean of $f$ from $f$ in the score-function estimate (a baseline) and
# measure the variance ratio again.

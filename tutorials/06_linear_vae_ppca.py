# %% [markdown]
# # 6. When is the ELBO tight? The linear VAE against probabilistic PCA
#
# **You will learn** when the ELBO can equal $\log p(x)$ exactly, by training a linear VAE to the
# closed-form optimum of probabilistic PCA. **You need** tutorial 1 and eigenvalues. **Time** about 15
# minutes; the code runs in about 20 seconds. Symbols: [the notation page](NOTATION.md).
#
# With `hidden=()` the decoder is linear, $p(x\mid z) = \mathcal N(x;\, W^\top z + b,\, \sigma^2 I)$ (a
# shared learned variance), and the prior is $\mathcal N(0, I)$. ($W$ is `dec.W_out`, stored (in, out)
# $= (Z, D)$ as every minivae weight, so the layer `z @ W + b` is $W^\top z + b$ for a column $z$;
# see [the weight convention](NOTATION.md#the-weight-convention).) That is exactly **probabilistic PCA**
# (Tipping & Bishop 1999), whose marginal $p(x) = \mathcal N(x;\, b,\, W^\top W + \sigma^2 I)$ is known in
# closed form, and whose maximum-likelihood solution is known too: with $S$ the data covariance and
# $\lambda_1 \ge \dots \ge \lambda_D$ its eigenvalues, $\sigma^2_{ML} = \frac{1}{D-Z}\sum_{i>Z}\lambda_i$ and
#
# $$\frac1N \log p(X) = -\frac12\Big(D\log 2\pi + \sum_{i\le Z}\log\lambda_i + (D-Z)\log\sigma^2_{ML} + D\Big).$$
#
# For this model the true posterior $p(z\mid x)$ is Gaussian. The pPCA optimum is not one $W$ but a
# family, $W^\top = U_Z(\Lambda_Z - \sigma^2 I)^{1/2} R$ for *any* rotation $R$ ($U_Z$, $\Lambda_Z$ the
# top eigenvectors and eigenvalues of $S$), all with the same $\log p(x)$. Only for the member with
# $R = I$ (up to signs and order) are the rows of $W$ orthogonal ($WW^\top$ diagonal), and only there
# does the posterior have a diagonal covariance. A diagonal $q$ can match that one exactly, so the
# ELBO can reach $\log p(x)$ there, and training drifts towards it (Lucas et al. 2019, "Don't blame the ELBO!"). We train a linear VAE
# with minivae and watch its ELBO reach the pPCA maximum.

# %%
import math

import numpy as np

import minivae
from minivae import VAEConfig, optim
from minivae.core import model
from minivae.tutorial import start

tut = start("06")  # where figures go, and this run's sizes (see minivae/tutorial.py)
FIGURES = tut.figures
sizes = tut.sizes(steps=12000)

# %% [markdown]
# ## Data from a pPCA model, and the pPCA maximum log-likelihood

# %%
D_, Z_data, N = 10, 2, 2000
Z_ = 2  # the model's latent size (the data were made with Z_data dimensions)
rng = np.random.default_rng(0)
W_true = rng.standard_normal((Z_data, D_))
X = rng.standard_normal((N, Z_data)) @ W_true + 0.5 * rng.standard_normal((N, D_)) + 3.0
S = np.cov(X, rowvar=False, bias=True)
lam = np.sort(np.linalg.eigvalsh(S))[::-1]
sigma2_ml = lam[Z_:].mean()
ppca_ll = -0.5 * (D_ * math.log(2 * math.pi) + np.log(lam[:Z_]).sum() + (D_ - Z_) * math.log(sigma2_ml) + D_)
print(f"pPCA maximum log-likelihood: {ppca_ll:.5f} nats per example (sigma^2_ML = {sigma2_ml:.4f})")

# %% [markdown]
# ## Exact ELBO and exact log p(x) of the VAE's own parameters
# Both are closed-form here, so no sampling noise enters the comparison. With $q(z\mid x) = \mathcal N(\mu, \mathrm{diag}\, s^2)$,
# $\mathbb E_q\|x - W^\top z - b\|^2 = \|x - W^\top\mu - b\|^2 + \sum_j s_j^2 \|W_j\|^2$.

# %%
def exact_elbo(p, cfg, X):
    mu, logvar = minivae.encode(p, X, cfg)
    W, b, lv = p["dec.W_out"], p["dec.b_out"], float(p["dec.logvar"])
    sq = np.sum((X - mu @ W - b) ** 2, axis=1) + np.exp(logvar) @ np.sum(W**2, axis=1)
    recon = -0.5 * (D_ * (math.log(2 * math.pi) + lv) + sq / math.exp(lv))
    kl = 0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar, axis=1)
    return float(np.mean(recon - kl))


def exact_log_px(p, X):
    W, b, lv = p["dec.W_out"], p["dec.b_out"], float(p["dec.logvar"])
    C = W.T @ W + math.exp(lv) * np.eye(D_)
    _, logdet = np.linalg.slogdet(C)
    d = X - b
    return float(np.mean(-0.5 * (D_ * math.log(2 * math.pi) + logdet + np.sum(d @ np.linalg.inv(C) * d, axis=1))))

# %% [markdown]
# ## Training: full-batch Adam on the Monte-Carlo ELBO, as any VAE is trained

# %%
cfg = VAEConfig(x_dim=D_, hidden=(), z_dim=Z_, likelihood="gaussian", variance="shared", init="uniform")
params = minivae.init_params(cfg, seed=0, dtype="float64")
state = {}
steps = sizes.steps
history = []
for t in range(steps):
    lr = 3e-2 if t < steps // 2 else (3e-3 if t < 0.85 * steps else 3e-4)
    for c in state.values():
        c["lr"] = lr
    eps = rng.standard_normal((1, N, Z_))
    step_loss = minivae.loss_and_grads if t == 0 else model.loss_and_grads  # inputs checked once
    loss, grads, _ = step_loss(params, X, eps, cfg)
    optim.step(params, grads, state, "adam", lr=lr)
    if t % 100 == 0 or t == steps - 1:
        history.append((t, exact_elbo(params, cfg, X), exact_log_px(params, X)))
elbo, log_px = history[-1][1], history[-1][2]
print(f"after {steps} steps: ELBO {elbo:.5f}, log p(x) of the VAE's model {log_px:.5f}, pPCA max {ppca_ll:.5f}")
print(f"  gap to the pPCA optimum {ppca_ll - elbo:.5f} nats; KL(q || p(z|x)) = log p(x) - ELBO = {log_px - elbo:.5f}")
assert elbo <= log_px + 1e-9 <= ppca_ll + 1e-6         # ELBO <= log p(x) <= max log-likelihood
assert ppca_ll - elbo < 0.1
tut.full_size_claim(ppca_ll - elbo < 2e-4, "the ELBO ends within about 1e-4 nats of the pPCA maximum")

# %% [markdown]
# The ELBO climbs to within about $10^{-4}$ nats of the pPCA maximum (full run: gap 0.0001), and the VAE's exact
# $\log p(x)$ sits between them: the bound is tight, the posterior gap $\mathrm{KL}(q\|p(z\mid x))$ is
# essentially zero. The learned decoder variance recovers $\sigma^2_{ML}$, and the rows of $W$ become
# orthogonal (which is what makes the true posterior diagonal):

# %%
W = params["dec.W_out"]
gram = W @ W.T
print(f"learned sigma^2 = {math.exp(float(params['dec.logvar'])):.4f} (sigma^2_ML = {sigma2_ml:.4f})")
print(f"W W^T = {np.round(gram, 3).tolist()}  (off-diagonal / diagonal: {abs(gram[0, 1]) / np.sqrt(gram[0, 0] * gram[1, 1]):.2e})")
print(f"eigenvalues of W^T W + sigma^2 I vs the data's top ones: "
      f"{np.round(np.linalg.eigvalsh(W.T @ W)[::-1][:Z_] + math.exp(float(params['dec.logvar'])), 4)} vs {np.round(lam[:Z_], 4)}")
tut.full_size_claim(abs(math.exp(float(params["dec.logvar"])) - sigma2_ml) < 0.01 * sigma2_ml,
                    "the learned decoder variance recovers sigma^2_ML (within 1%)")

# %%
import matplotlib.pyplot as plt

h = np.array(history)
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(h[:, 0], h[:, 1], label="ELBO (exact)")
ax.plot(h[:, 0], h[:, 2], "--", label="log p(x) of the VAE's model")
ax.axhline(ppca_ll, color="k", lw=0.8, label="pPCA maximum log-likelihood")
ax.set_ylim(ppca_ll - 3, ppca_ll + 0.5)
ax.set_xlabel("step")
ax.set_ylabel("nats per example")
ax.legend()
ax.set_title("linear VAE vs probabilistic PCA")
fig.tight_layout()
tut.save(fig, "linear_vae_vs_ppca.png")

# %% [markdown]
# ## Summary
# - A linear VAE with a shared variance *is* probabilistic PCA; its ELBO reached the closed-form pPCA
#   maximum log-likelihood, so here the ELBO is tight: KL(q || p(z|x)) went to about 0.
# - Of the rotations that share that maximum, training picks the one whose posterior is diagonal
#   (orthogonal rows of $W$), the only one a diagonal $q$ can match.
#
# **Try this.** (1) Set the model's `Z_ = 3` (the data keep `Z_data = 2`): predict $\sigma^2$ and the
# third eigenvalue the model learns. (2) Replace the shared variance by `variance="fixed", sigma=1.0`:
# is the ELBO still tight, and is it still the pPCA optimum?

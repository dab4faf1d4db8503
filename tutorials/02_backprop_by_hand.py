# %% [markdown]
# # 2. Backprop by hand, and how to check it
#
# **You will learn** to derive a layer's backward pass, to check it against finite differences, to
# read what a relative error says, to use the exercise grader on your own code, and to follow the whole
# VAE's backward pass step by step. **You need** the chain rule and matrix shapes. **Time** about 35
# minutes; the code runs in a few seconds.
# Symbols and the weight convention (W stored as (in, out)): [the notation page](NOTATION.md).
#
# Every layer in minivae is a pair of functions (the CS231n convention):
# `forward(inputs) -> (out, cache)` and `backward(dout, cache) -> gradients of the inputs`, where
# `dout` is $\partial \ell / \partial\,\mathrm{out}$ for whatever scalar loss $\ell$ sits downstream.
# The backward pass is the chain rule, one layer at a time.
#
# ## Deriving the backward passes
# **Linear**, $y = xW + b$ with $x: (N, D)$, $W: (D, M)$, $b: (M,)$. Since $y_{nm} = \sum_d x_{nd}W_{dm} + b_m$,
#
# $$\frac{\partial\ell}{\partial W_{dm}} = \sum_n x_{nd}\,\frac{\partial\ell}{\partial y_{nm}}
#   \;\Rightarrow\; dW = x^\top dy, \qquad db = \textstyle\sum_n dy_{n\cdot}, \qquad dx = dy\,W^\top.$$
#
# A quick shape check catches most mistakes: $dW$ must be $(D, M)$ and only $x^\top dy$ is.
# $b$ is added to every row, so its gradient *sums* over the rows (the fan-out rule).
#
# **tanh**: $h = \tanh a$, $\partial h/\partial a = 1 - h^2$, so $da = dh\,(1 - h^2)$ (elementwise;
# the cache keeps $h$). **softplus**: $h = \log(1+e^a)$, $da = dh\cdot\mathrm{sigmoid}(a)$.
# **relu**: $da = dh\cdot[a > 0]$. **sigmoid**: $y = \sigma(a)$, $da = dy\, y(1-y)$.

# %%

import numpy as np

from minivae.core import layers
from minivae.core.gradcheck import check_pair, numerical_gradient, rel_error
from minivae.tutorial import start

tut = start("02")  # where figures go (see minivae/tutorial.py)
FIGURES = tut.figures
rng = np.random.default_rng(0)

# %% [markdown]
# ## Checking each pair with finite differences
# To check `backward`, pick a fixed random `dout` and the scalar $\ell = \sum \mathrm{out}\odot\mathrm{dout}$:
# its gradient with respect to `out` is exactly `dout`, so `backward(dout, cache)` must equal the
# numerical gradient of $\ell$. `check_pair` does this for every element of every input.

# %%
inputs = {"x": rng.standard_normal((5, 4)), "W": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
report = check_pair(layers.linear_forward, layers.linear_backward, inputs, ("x", "W", "b"))
print(report)
assert report.passed
for name in ("tanh", "softplus", "relu", "sigmoid"):
    a = {"a": 2 * rng.standard_normal((6, 5))}
    r = check_pair(getattr(layers, f"{name}_forward"), getattr(layers, f"{name}_backward"), a, ("a",))
    print(f"{name:<9} max relative error {r.max_rel_error:.1e}  {'pass' if r.passed else 'FAIL'}")
    assert r.passed

# %% [markdown]
# ## Your turn, with the grader
# The exercises in `exercises/` ask for these same backward passes, and the grader checks any function
# you write, here in the notebook: `check(name, your_function)`. It compares every element with finite
# differences and, when the answer is wrong, says *how*. Here are three first attempts a learner
# might write, right after the derivations above, and what the grader says of each.

# %%
from minivae.exercises import check


def my_linear_backward(dy, cache):
    x, W = cache
    return dy @ W.T, dy.T @ x, dy.sum(axis=0)   # dW written as dy^T x


result = check("linear", my_linear_backward)
assert not result.passed and "transposed" in str(result)

# %% [markdown]
# The shape $(M, D)$ instead of $(D, M)$ gave it away. With $dW = x^\top dy$:

# %%
def my_linear_backward(dy, cache):
    x, W = cache
    return dy @ W.T, x.T @ dy, dy.sum(axis=0)


assert check("linear", my_linear_backward).passed


def my_tanh_backward(dh, h):
    return 1 - h ** 2                            # the local derivative alone


result = check("tanh", my_tanh_backward)
assert "upstream gradient" in str(result)


def my_tanh_backward(dh, h):
    return dh * (1 - h ** 2)                     # times the upstream gradient: the chain rule


assert check("tanh", my_tanh_backward).passed

# %% [markdown]
# The grader recognised the missing upstream factor: the answer was right for an upstream gradient
# of 1. For softplus, $da = dh\cdot\mathrm{sigmoid}(a)$ (the library's `layers.sigmoid` is stable
# for any $a$):

# %%
assert check("softplus", lambda dh, a: dh * layers.sigmoid(a)).passed

# %% [markdown]
# And a wrong backward, for contrast: forgetting the square in tanh's derivative.

# %%
wrong = check_pair(layers.tanh_forward, lambda dh, h: dh * (1 - h), {"a": rng.standard_normal((4, 3))}, ("a",))
print(f"tanh with (1 - h) instead of (1 - h^2): max relative error {wrong.max_rel_error:.2f} -> "
      f"{'pass' if wrong.passed else 'FAIL'}")
assert not wrong.passed

# %% [markdown]
# ## What a relative error means: the step h, the stencil, and float32 vs float64
# The centred difference $\frac{f(x+h) - f(x-h)}{2h}$ has a *truncation* error $\approx \frac{h^2}{6}f'''$
# and a *rounding* error $\approx \epsilon |f| / h$, where $\epsilon$ is the machine epsilon
# ($2.2\times10^{-16}$ in float64, $1.2\times10^{-7}$ in float32). The total is smallest near
# $h \approx \epsilon^{1/3}$ (6e-6 in float64) and is then about $\epsilon^{2/3}$ (4e-11) times the
# scale of $f$. The 4-point stencil $\frac{-f(x+2h) + 8f(x+h) - 8f(x-h) + f(x-2h)}{12h}$ has truncation
# $O(h^4)$; its best $h$ is near $\epsilon^{1/5}$ (1e-3) and its best error about $\epsilon^{4/5}$.
#
# The bar minivae uses is $\max|a - n| / \max|n| < 10^{-8}$ per tensor. Here is the measured error of
# tanh's gradient over a range of $h$, in both precisions and with both stencils:

# %%
hs = 10.0 ** np.arange(-1, -10.5, -0.5)
a64 = rng.standard_normal((4, 5))
dout64 = rng.standard_normal((4, 5))
table = {}
for dtype in ("float64", "float32"):
    a = a64.astype(dtype)
    dout = dout64.astype(dtype)
    exact = (dout64 * (1 - np.tanh(a64) ** 2))  # the analytic gradient, in float64
    for order in (2, 4):
        errs = []
        for h in hs:
            f = lambda: float(np.sum(np.tanh(a) * dout))  # noqa: E731
            num, _ = numerical_gradient(f, a, h=float(h), order=order)
            errs.append(rel_error(exact, num.astype(np.float64)))
        table[(dtype, order)] = np.array(errs)
print(f"{'h':>8}" + "".join(f"{d[-2:]}-bit {o}-pt".rjust(14) for d, o in table))
for i, h in enumerate(hs):
    print(f"{h:>8.0e}" + "".join(f"{table[k][i]:>14.1e}" for k in table))
best = {k: (v.min(), hs[v.argmin()]) for k, v in table.items()}
for k, (err, h) in best.items():
    print(f"best {k[0]} {k[1]}-point: {err:.1e} at h = {h:.0e}")
assert best[("float64", 4)][0] < 1e-10          # the 4-point stencil clears the bar by 100x
assert best[("float64", 2)][0] < 1e-8           # here too, on one small layer
assert best[("float32", 4)][0] > 1e-8 and best[("float32", 2)][0] > 1e-8  # float32 never can

# %% [markdown]
# Three lessons. In float32 no step size gets below about $10^{-6}$, so a gradient check in float32
# cannot tell a right gradient from one that is off by $10^{-6}$: check in float64, train in float32.
# The error is V-shaped in $h$: too large and truncation dominates, too small and rounding does.
# And on one small layer even the 2-point stencil clears $10^{-8}$; on the whole VAE, where $f$ is a
# sum over many pixels and its third derivatives are larger, it lands at $10^{-9}$ to $10^{-8}$, too
# close to the bar, which is why `minivae.core.gradcheck` uses the 4-point stencil with $h = 10^{-3}$
# (its worst case over all 90 model configurations is about $1.5\times10^{-10}$).
#
# And the float32 columns' jump at the smallest steps (to about $10^{7}$ for the 4-point stencil)
# says nothing about the gradient: the stencil stops taking the step it divides by. Its points
# $a \pm h$ are stored in float32, whose numbers near $|a| \approx 1$ are about $10^{-7}$ apart, so
# below that $a + h$ rounds back to $a$ (a step of 0) or, for the few small $|a|$, to a neighbouring
# float32 (a step of a whole grid spacing). Dividing such differences by $h$ gives a numerical
# "gradient" of zeros and rounding leftovers, and $\max|a - n| / \max|n|$ over a nearly zero $n$ is
# enormous. The steps float32 actually takes, as multiples of $h$:

# %%
a32 = a64.astype(np.float32)
for h in hs[-4:]:
    taken = ((a32 + np.float32(h)).astype(np.float64) - a32.astype(np.float64)) / h
    print(f"h = {h:.0e}: a + h - a is {np.count_nonzero(taken == 0)} times 0, otherwise "
          f"{np.round(np.unique(taken[taken != 0]), 1).tolist()} times h")
    assert not np.any(np.abs(taken - 1) < 0.1)  # never the step h that the stencil divides by

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 4))
for (dtype, order), errs in table.items():
    ax.loglog(hs, errs, "o-" if dtype == "float64" else "s--", label=f"{dtype}, {order}-point")
ax.axhline(1e-8, color="k", lw=0.8, ls=":", label="the bar, 1e-8")
ax.set_xlabel("step h")
ax.set_ylabel("max|analytic - numeric| / max|numeric|")
ax.set_title("finite-difference error of tanh's gradient")
ax.legend(fontsize=8)
fig.tight_layout()
tut.save(fig, "error_vs_h.png")

# %% [markdown]
# ## The elementwise relative error, and why it is not the bar
# CS231n's check uses $|a - n| / \max(|a|, |n|)$ elementwise. Where a true gradient is (nearly) zero
# this is a ratio of two roundoff errors and can be anything up to 1, even for a perfect gradient.
# A dead ReLU unit shows it:

# %%
a = np.array([[-1.0, 0.5, 2.0]])
W = rng.standard_normal((3, 2))


def tiny_net(a=a):
    h, _ = layers.relu_forward(a)
    return h @ W


num, _ = numerical_gradient(lambda: float(np.sum(tiny_net() ** 2)), a)
h = np.maximum(a, 0)
exact = layers.relu_backward(2 * (h @ W) @ W.T, a)
elementwise = np.abs(exact - num) / np.maximum(np.maximum(np.abs(exact), np.abs(num)), 1e-300)
print("numeric gradient:", num, "\nelementwise relative error:", elementwise,
      f"\nscaled (the bar): {rel_error(exact, num):.1e}")
assert rel_error(exact, num) < 1e-8

# %% [markdown]
# ## The whole VAE, backward, term by term
# The `vae` exercise wires the pieces above into the whole model's backward pass. Here is the
# derivation to read first. The forward pass, for a batch of $B$ images and $L$ samples each
# (tanh hidden layers, a Bernoulli decoder; $\odot$ is elementwise):
#
# $$a = xW_0 + b_0,\; h = \tanh a,\; \mu = hW_\mu + b_\mu,\; \log\sigma^2 = hW_{\log\sigma^2} + b_{\log\sigma^2},
#   \; z_l = \mu + \sigma\odot\epsilon_l,$$
# $$a'_l = z_lW'_0 + b'_0,\; h'_l = \tanh a'_l,\; \mathrm{logits}_l = h'_lW'_{\mathrm{out}} + b'_{\mathrm{out}},$$
# $$\ell = \frac1B\sum_b\Big[-\frac1L\sum_l \log p(x_b\mid \mathrm{logits}_{lb}) + \mathrm{KL}_b\Big],\qquad
#   \mathrm{KL}_b = \tfrac12\textstyle\sum_j(\sigma^2_{bj} + \mu^2_{bj} - 1 - \log\sigma^2_{bj}).$$
#
# Walking backwards through the graph below, each line is one rule from above:
#
# 1. **Likelihood.** $\log p(x\mid\mathrm{logits}) = \sum_d x_d\,\mathrm{logits}_d - \mathrm{softplus}(\mathrm{logits}_d)$,
#    so $d\,\mathrm{logits}_l = \frac{1}{LB}(y_l - x)$ with $y = \mathrm{sigmoid}(\mathrm{logits})$: the
#    $-\frac1{LB}$ in front of each $\log p$ is the upstream gradient.
# 2. **Output layer** (linear): $dW'_{\mathrm{out}} = \sum_l h'^\top_l\,d\,\mathrm{logits}_l$,
#    $db'_{\mathrm{out}} = \sum_{l,b} d\,\mathrm{logits}$, $dh'_l = d\,\mathrm{logits}_l\,W'^\top_{\mathrm{out}}$.
# 3. **Decoder trunk**: $da'_l = dh'_l\odot(1 - h'^2_l)$, then $dW'_0 = \sum_l z_l^\top da'_l$,
#    $db'_0 = \sum_{l,b} da'$, and $dz_l = da'_l\,W'^\top_0$.
# 4. **The sample** $z_l = \mu + e^{\frac12\log\sigma^2}\odot\epsilon_l$: $\mu$ and $\log\sigma^2$ feed all
#    $L$ samples, so their gradients *sum* over $l$: $\sum_l dz_l$ and $\sum_l dz_l\odot\epsilon_l\odot\tfrac12\sigma$.
# 5. **The KL**, with upstream gradient $\frac1B$: $\partial\mathrm{KL}/\partial\mu = \mu$,
#    $\partial\mathrm{KL}/\partial\log\sigma^2 = \frac12(\sigma^2 - 1)$. $\mu$ and $\log\sigma^2$ feed
#    both the sample and the KL, so the two paths **add**:
#
#    $$d\mu = \sum_l dz_l + \frac{\mu}{B}, \qquad
#      d\log\sigma^2 = \tfrac12\,\sigma\odot\sum_l dz_l\odot\epsilon_l + \frac{\sigma^2 - 1}{2B}.$$
# 6. **Encoder heads** (two linear layers on the same $h$): $dW_\mu = h^\top d\mu$,
#    $dW_{\log\sigma^2} = h^\top d\log\sigma^2$ (biases: column sums), and since $h$ feeds both heads,
#    $dh = d\mu\,W_\mu^\top + d\log\sigma^2\,W_{\log\sigma^2}^\top$.
# 7. **Encoder trunk**: $da = dh\odot(1 - h^2)$, $dW_0 = x^\top da$, $db_0 = \sum_b da$. ($x$ is data:
#    no gradient is needed for it.)
#
# Every gradient has the shape of what it differentiates; the sums over $l$ in steps 2-4 are the
# fan-out rule again (the decoder's weights are used once per sample). In the figure, black arrows
# are the forward pass and the red text at each node is the loss's gradient with respect to it.

# %% tags=["hide-input"]
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# name: (position, label, the gradient of the loss with respect to it, where that gradient is written
#        (above or below the node, and shifted right by an optional dx))
nodes = {
    "x": ((0.5, 3.0), "$x$", "", None),
    "a": ((2.2, 3.0), "$a$", "$da = dh\\odot(1-h^2)$", "above"),
    "h": ((3.9, 3.0), "$h$", "$dh = d\\mu\\,W_\\mu^\\top + d\\log\\sigma^2\\,W_{\\log\\sigma^2}^\\top$", "below", -0.8),
    "mu": ((5.9, 4.5), "$\\mu$", "$d\\mu = \\sum_l dz_l + \\mu/B$", "above"),
    "logvar": ((5.9, 1.5), "$\\log\\sigma^2$",
               "$d\\log\\sigma^2 = \\frac{\\sigma}{2}\\sum_l dz_l\\odot\\epsilon_l + \\frac{\\sigma^2-1}{2B}$", "below"),
    "eps": ((7.9, 4.5), "$\\epsilon_l$", "", None),
    "z": ((7.9, 3.0), "$z_l$", "$dz_l = da'_l\\,W_0'^\\top$", "above", 0.85),
    "a'": ((9.6, 3.0), "$a'_l$", "$da' = dh'\\odot(1-h'^2)$", "below"),
    "h'": ((11.3, 3.0), "$h'_l$", "$dh' = d\\mathrm{logits}\\,W_{out}'^\\top$", "above"),
    "logits": ((13.0, 3.0), "logits$_l$", "$d\\mathrm{logits} = \\frac{y - x}{LB}$", "below"),
    "logp": ((14.8, 3.0), "$\\log p(x|z_l)$", "$-\\frac{1}{LB}$", "above"),
    "KL": ((9.6, 0.9), "KL", "$\\frac{1}{B}$", "below"),
    "loss": ((14.8, 0.9), "$\\ell$", "1", "below"),
}
edges = [("x", "a"), ("a", "h"), ("h", "mu"), ("h", "logvar"), ("mu", "z"), ("logvar", "z"), ("eps", "z"),
         ("z", "a'"), ("a'", "h'"), ("h'", "logits"), ("logits", "logp"), ("logp", "loss"), ("mu", "KL"),
         ("logvar", "KL"), ("KL", "loss")]
fig, ax = plt.subplots(figsize=(10, 5))
for name, ((cx, cy), label, grad, where, *dx) in nodes.items():
    color = ("#eeeeee" if name in ("x", "eps") else "#fde9c9" if name == "z" else
             "#f6dede" if name in ("KL", "loss", "logp") else "#dbe8f5")
    width = 1.75 if name == "logp" else 1.1
    ax.add_patch(FancyBboxPatch((cx - width / 2, cy - 0.3), width, 0.6, boxstyle="round,pad=0.04", fc=color, ec="k"))
    ax.text(cx, cy, label, ha="center", va="center", fontsize=10)
    if grad:
        ax.text(cx + sum(dx), cy + (0.6 if where == "above" else -0.62), grad, color="#b22222", fontsize=9,
                ha="center", va="center")
for src, dst in edges:
    ax.add_patch(FancyArrowPatch(nodes[src][0], nodes[dst][0], arrowstyle="-|>", mutation_scale=12,
                                 lw=1.1, shrinkA=20, shrinkB=20, color="0.25"))
ax.set_xlim(-0.2, 15.8)
ax.set_ylim(0.0, 5.4)
ax.axis("off")
ax.set_title("the VAE's graph: the forward pass in black; in red, the gradient of the loss at each node")
tut.save(fig, "vae_graph.png")

# %% [markdown]
# The two steps the derivation is most often wrong at are step 1's factor and step 5's sum of two
# paths. Both are checked here against finite differences on a small model, with the decoder's
# $dz_l$ taken from finite differences too, so that nothing below trusts a backward function:
# each formula above, written out, against the numerical gradient of the whole loss. And the
# library's own backward pass, which is these seven steps, against the gradient check on every
# parameter.

# %%
import minivae
from minivae import VAEConfig
from minivae.core.distributions import bernoulli_log_prob_forward, gaussian_kl_forward
from minivae.core.gradcheck import check_model

cfg = VAEConfig(x_dim=5, hidden=(4,), z_dim=2, n_samples=3)
params = minivae.init_params(cfg, seed=0, dtype="float64", init="uniform")
x = rng.uniform(size=(6, 5)).round()                       # B = 6 binary images
eps = rng.standard_normal((cfg.n_samples, 6, cfg.z_dim))
L, B = eps.shape[:2]
mu, logvar = minivae.encode(params, x, cfg)


def loss_of_logits(logits):                              # l as a function of the decoder's logits
    return float(-np.sum(bernoulli_log_prob_forward(x, logits)[0]) / (L * B))


def loss_of_head(mu=mu, logvar=logvar):                  # l as a function of the encoder's outputs
    z = mu + np.exp(0.5 * logvar) * eps
    return float(-np.sum(minivae.log_likelihood(params, x, z, cfg)) / (L * B)
                 + np.sum(gaussian_kl_forward(mu, logvar)[0]) / B)


logits = minivae.decode(params, mu + np.exp(0.5 * logvar) * eps, cfg)["logits"]    # (L, B, D)
dlogits = (layers.sigmoid(logits) - x) / (L * B)                                   # step 1
err_1 = rel_error(dlogits, numerical_gradient(lambda: loss_of_logits(logits), logits)[0])

z = mu + np.exp(0.5 * logvar) * eps
dz = numerical_gradient(lambda: -float(np.sum(minivae.log_likelihood(params, x, z, cfg))) / (L * B), z)[0]
sigma = np.exp(0.5 * logvar)
dmu = dz.sum(axis=0) + mu / B                                                     # step 5
dlogvar = 0.5 * sigma * (dz * eps).sum(axis=0) + (sigma ** 2 - 1) / (2 * B)
num_mu = numerical_gradient(lambda: loss_of_head(mu=mu), mu)[0]
num_logvar = numerical_gradient(lambda: loss_of_head(logvar=logvar), logvar)[0]
print(f"step 1, d logits = (y - x) / (L B):               relative error {err_1:.1e}")
print(f"step 5, d mu = sum_l dz_l + mu / B:                relative error {rel_error(dmu, num_mu):.1e}")
print(f"        d logvar = sigma/2 sum_l dz_l eps_l + ...: relative error {rel_error(dlogvar, num_logvar):.1e}")
print(f"        without the KL's path:  {rel_error(dz.sum(axis=0), num_mu):.2f} and "
      f"{rel_error(0.5 * sigma * (dz * eps).sum(axis=0), num_logvar):.2f};  "
      f"without the sum over l (one sample's dz): {rel_error(dz[0] + mu / B, num_mu):.2f}")
assert max(err_1, rel_error(dmu, num_mu), rel_error(dlogvar, num_logvar)) < 1e-8
assert min(rel_error(dz.sum(axis=0), num_mu), rel_error(dz[0] + mu / B, num_mu)) > 1e-2
report = check_model(cfg)
print(f"the library's backward (the seven steps), every element of every parameter: max relative "
      f"error {report.max_rel_error:.1e} over {len(report.rows)} tensors")
assert report.passed

# %% [markdown]
# ## Summary
# - A backward pass is the chain rule one layer at a time: each input's gradient has that input's shape,
#   and an input used many times (a bias added to every row) collects a sum.
# - Check it in float64 with a centred 4-point stencil, against $\max|a - n|/\max|n| < 10^{-8}$;
#   float32 cannot resolve errors below about $10^{-6}$.
# - `from minivae.exercises import check` grades your own function and names the usual mistakes.
# - The whole VAE's backward pass is seven such steps; where a value feeds two places ($\mu$ and
#   $\log\sigma^2$ feed the sample and the KL, $h$ feeds both heads) the gradients add. The `vae`
#   exercise asks you to wire them.
#
# **Try this.** (1) Predict the elementwise relative error of a *correct* gradient at the dead ReLU
# unit above, then change `a` so that no unit is dead and compare. (2) Run the error-versus-h sweep
# with `order=2` only and find the $h$ where float64 is best; compare with $\epsilon^{1/3}$.
# (3) Write `my_softplus_backward` with `sigmoid(-a)` and read what the grader says.

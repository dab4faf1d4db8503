"""The VAE's math: parameters, encoder, decoder, and the negative ELBO with its hand-written gradient.

    encoder  q(z|x) = N(mu, diag(exp(logvar))):  h = act(x @ W0 + b0) ...,  mu = h @ W_mu + b_mu,
                                                 logvar = h @ W_logvar + b_logvar
    sample   z = mu + exp(0.5 * logvar) * eps,   eps ~ N(0, I), L samples per example
    decoder  p(x|z): an MLP from z to the likelihood's parameters (logits, or mean and logvar)
    prior    p(z) = N(0, I)

    loss = -ELBO = mean_b [ -(1/L) sum_l log p(x_b | z_bl) + KL(q(z|x_b) || p(z)) ]

    (with ``cfg.beta`` != 1 the KL term is weighted: loss = recon + beta * KL, the beta-VAE objective)

Shapes: B examples, D = x_dim, Z = z_dim, L = n_samples, H_i hidden widths. Parameters are a flat
``dict[str, array]``; ``param_shapes(cfg)`` lists every name and shape.

Nothing here checks its inputs: ``minivae.vae`` (the public API) checks them once, then calls these.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple

from ..backend import Generator, from_numpy, namespace_of, resolve
from .distributions import (
    LIKELIHOOD_TABLE,
    gaussian_kl_backward,
    gaussian_kl_forward,
    reparameterize_backward,
    reparameterize_forward,
)
from .layers import ACTIVATIONS, linear_backward, linear_forward

if TYPE_CHECKING:  # for the annotations only; a config is read, never made, here
    from ..config import VAEConfig

# --- the Gaussian's variance: a table, as layers.ACTIVATIONS -------------------------------------

class VarianceHead(NamedTuple):
    """Where a Gaussian decoder's log sigma^2 comes from: its parameters, given the last hidden width
    H and D, the head's forward from the last hidden layer h, and its backward, which fills
    ``grads`` and returns its part of dh (or None)."""
    shapes: Callable     # (H, D) -> {name: shape}
    forward: Callable    # (params, h (N, H), cfg) -> ({"logvar": array} or {}, cache)
    backward: Callable   # ((dlogvar (L, B, D),) or (), cache, grads) -> dh (N, H) or None


def _fixed_logvar(params, h, cfg):
    xp = namespace_of(h)
    return {"logvar": xp.asarray(2.0 * math.log(cfg.sigma), dtype=h.dtype, device=h.device)}, None


def _per_pixel_logvar(params, h, cfg):
    logvar, cache = linear_forward(h, params["dec.W_logvar"], params["dec.b_logvar"])   # (N, D)
    return {"logvar": logvar}, cache


def _shared_logvar_backward(dheads, cache, grads):
    (dlogvar,) = dheads
    grads["dec.logvar"] = namespace_of(dlogvar).sum(dlogvar)   # () summed over the broadcast
    return None


def _per_pixel_logvar_backward(dheads, cache, grads):
    (dlogvar,) = dheads
    xp = namespace_of(dlogvar)
    dh, grads["dec.W_logvar"], grads["dec.b_logvar"] = linear_backward(
        xp.reshape(dlogvar, (-1, dlogvar.shape[-1])), cache)
    return dh


#: ``cfg.gaussian_variance`` -> its head; None (not a Gaussian) and "fixed" learn nothing.
VARIANCE_HEADS = {
    None: VarianceHead(lambda H, D: {}, lambda params, h, cfg: ({}, None), lambda d, c, g: None),
    "fixed": VarianceHead(lambda H, D: {}, _fixed_logvar, lambda d, c, g: None),
    "shared": VarianceHead(lambda H, D: {"dec.logvar": ()},
                           lambda params, h, cfg: ({"logvar": params["dec.logvar"]}, None),
                           _shared_logvar_backward),
    "per_pixel": VarianceHead(lambda H, D: {"dec.W_logvar": (H, D), "dec.b_logvar": (D,)},
                              _per_pixel_logvar, _per_pixel_logvar_backward),
}


# --- parameters ----------------------------------------------------------------------------------

def param_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in a fixed order (encoder first)."""
    shapes = {}
    enc_sizes = (cfg.x_dim, *cfg.hidden)
    for i in range(len(cfg.hidden)):
        shapes[f"enc.W{i}"] = (enc_sizes[i], enc_sizes[i + 1])
        shapes[f"enc.b{i}"] = (enc_sizes[i + 1],)
    for head in ("mu", "logvar"):
        shapes[f"enc.W_{head}"] = (enc_sizes[-1], cfg.z_dim)
        shapes[f"enc.b_{head}"] = (cfg.z_dim,)
    dec_sizes = (cfg.z_dim, *reversed(cfg.hidden))
    for i in range(len(cfg.hidden)):
        shapes[f"dec.W{i}"] = (dec_sizes[i], dec_sizes[i + 1])
        shapes[f"dec.b{i}"] = (dec_sizes[i + 1],)
    shapes["dec.W_out"] = (dec_sizes[-1], cfg.x_dim)
    shapes["dec.b_out"] = (cfg.x_dim,)
    shapes.update(VARIANCE_HEADS[cfg.gaussian_variance].shapes(dec_sizes[-1], cfg.x_dim))
    return shapes


def n_parameters(cfg: VAEConfig) -> int:
    """How many numbers the parameters of ``cfg`` hold."""
    return sum(math.prod(shape) for shape in param_shapes(cfg).values())


def init_params(cfg: VAEConfig, seed: int = 0, backend: str = "numpy", dtype: str = "float32",
                init: str | None = None) -> dict:
    """Fresh parameters for ``cfg`` on ``backend``, as ``dict[name, array]``.

    ``init`` overrides ``cfg.init`` (``"normal"``, ``"uniform"`` or ``"glorot"``). The draws are
    made on the host in float64 and then copied, so a seed gives the same model on every backend.
    The shared ``dec.logvar`` starts at 0 (unit variance).
    """
    scheme = cfg.init if init is None else init
    backend = resolve(backend)
    rng = Generator(seed, "numpy")
    params = {}
    for name, shape in param_shapes(cfg).items():
        if shape == ():
            value = 0.0
        elif scheme == "normal":
            value = cfg.init_std * rng.normal(shape, "float64")
        else:
            weight = name.split(".")[1].startswith("W")
            fan_in = shape[0] if weight else _fan_in_of_bias(name, cfg)
            if scheme == "uniform":
                bound = 1.0 / math.sqrt(fan_in)
            elif weight:
                bound = math.sqrt(6.0 / (shape[0] + shape[1]))
            else:
                bound = 0.0  # glorot: zero biases
            value = bound * (2.0 * rng.uniform(shape, "float64") - 1.0)
        params[name] = from_numpy(value, backend, dtype)
    return params


def _fan_in_of_bias(name: str, cfg: VAEConfig) -> int:
    return param_shapes(cfg)[name.replace(".b", ".W", 1)][0]


# --- the networks ------------------------------------------------------------------------------

def _mlp_forward(params, prefix, h, n_layers, activation):
    """Hidden layers ``h <- act(h @ W_i + b_i)``; returns the last ``h`` and per-layer caches."""
    act_forward, _ = ACTIVATIONS[activation]
    caches = []
    for i in range(n_layers):
        a, lin_cache = linear_forward(h, params[f"{prefix}.W{i}"], params[f"{prefix}.b{i}"])
        h, act_cache = act_forward(a)
        caches.append((lin_cache, act_cache))
    return h, caches


def _mlp_backward(dh, caches, prefix, activation, grads, need_dx):
    """Backward through ``_mlp_forward``; fills ``grads`` and returns the input's gradient."""
    _, act_backward = ACTIVATIONS[activation]
    for i in reversed(range(len(caches))):
        lin_cache, act_cache = caches[i]
        da = act_backward(dh, act_cache)
        dh, grads[f"{prefix}.W{i}"], grads[f"{prefix}.b{i}"] = linear_backward(
            da, lin_cache, need_dx=need_dx or i > 0)
    return dh


class ForwardCache(NamedTuple):
    """What ``forward`` keeps for ``backward``: the data, the sizes, and each stage's cache."""
    x: object            # (B, D)
    sizes: tuple         # (L, B, Z)
    enc: tuple           # (the encoder's per-layer caches, the mu head's, the logvar head's)
    rep: tuple           # the reparameterization's (std, eps)
    dec: tuple           # (the decoder's per-layer caches, the output head's, the logvar head's)
    lik: tuple           # log p(x|z)'s
    kl: object           # KL(q || p)'s, and with free bits the charged units


def _encode(params, x, cfg):
    h, mlp_caches = _mlp_forward(params, "enc", x, len(cfg.hidden), cfg.activation)   # (B, H)
    mu, mu_cache = linear_forward(h, params["enc.W_mu"], params["enc.b_mu"])              # (B, Z)
    logvar, lv_cache = linear_forward(h, params["enc.W_logvar"], params["enc.b_logvar"])  # (B, Z)
    return mu, logvar, (mlp_caches, mu_cache, lv_cache)


def _decode(params, z, cfg):
    """z: (N, Z). Returns the likelihood's parameters as a dict of (N, D) arrays, and caches."""
    h, mlp_caches = _mlp_forward(params, "dec", z, len(cfg.hidden), cfg.activation)  # (N, H)
    out, out_cache = linear_forward(h, params["dec.W_out"], params["dec.b_out"])      # (N, D)
    logvar, lv_cache = VARIANCE_HEADS[cfg.gaussian_variance].forward(params, h, cfg)  # a Gaussian's
    return {LIKELIHOOD_TABLE[cfg.likelihood].heads[0]: out, **logvar}, (mlp_caches, out_cache, lv_cache)


def encode(params: dict, x, cfg: VAEConfig):
    """q(z|x): x (B, D) -> ``(mu, logvar)``, each (B, Z); ``logvar`` is log sigma^2."""
    mu, logvar, _ = _encode(params, x, cfg)
    return mu, logvar


def decode(params: dict, z, cfg: VAEConfig) -> dict:
    """p(x|z)'s parameters for z of shape (N, Z) or (L, B, Z).

    Returns ``{"logits": (..., D)}`` for the Bernoulli and continuous Bernoulli, and
    ``{"mean": (..., D), "logvar": ...}`` for the Gaussian, where ``logvar`` is (..., D) for the
    per-pixel head and a () array for the fixed and shared variances.
    """
    lead = tuple(z.shape[:-1])
    xp = namespace_of(z)
    out, _ = _decode(params, xp.reshape(z, (-1, cfg.z_dim)), cfg)
    return {k: (xp.reshape(v, (*lead, cfg.x_dim)) if v.ndim == 2 else v) for k, v in out.items()}


def _log_likelihood_forward(x, dist, cfg):
    """log p(x|z) summed over pixels: x (B, D), dist's arrays (L, B, D) -> (L, B), and a cache."""
    likelihood = LIKELIHOOD_TABLE[cfg.likelihood]
    return likelihood.log_prob_forward(x, *(dist[head] for head in likelihood.heads))


def likelihood_mean(dist: dict, cfg: VAEConfig):
    """E[x|z] under p(x|z) from ``decode``'s output: what to draw as the "reconstruction".

    Bernoulli: ``sigmoid(logits)``; continuous Bernoulli: its mean, which is *not* the sigmoid;
    Gaussian: the mean head.
    """
    likelihood = LIKELIHOOD_TABLE[cfg.likelihood]
    return likelihood.mean(*(dist[head] for head in likelihood.heads))


def log_likelihood(params: dict, x, z, cfg: VAEConfig):
    """log p(x|z) for x (B, D) and z (L, B, Z): returns (L, B)."""
    return _log_likelihood_forward(x, decode(params, z, cfg), cfg)[0]


# --- the loss and its gradient --------------------------------------------------------------------

def forward(params: dict, x, eps, cfg: VAEConfig):
    """The negative ELBO. Returns ``(loss, cache, stats)``; ``cache`` feeds ``backward``.

    x: (B, D) in the parameters' dtype and backend; eps: (L, B, Z) standard normal draws.
    ``loss`` is ``recon + cfg.beta * kl`` (the -ELBO when beta = 1 and free_bits = 0; with free bits
    each unit's mean KL is charged as ``max(free_bits, KL_j)``; ``stats["kl"]`` is always the true
    KL). It and the values of ``stats`` (``loss``, ``recon``, ``kl``) are 0-d arrays on the
    parameters' device: reading one (``float(loss)``) waits for the device, so a training loop
    collects them and reads them in batches. ``loss_and_grads`` returns them as Python floats.
    """
    xp = namespace_of(x)
    L, B, Z = eps.shape
    mu, logvar, enc_cache = _encode(params, x, cfg)                   # (B, Z) each
    z, rep_cache = reparameterize_forward(mu, logvar, eps)            # (L, B, Z)
    flat, dec_cache = _decode(params, xp.reshape(z, (L * B, Z)), cfg)
    dist = {k: (xp.reshape(v, (L, B, cfg.x_dim)) if v.ndim == 2 else v) for k, v in flat.items()}
    logp, lik_cache = _log_likelihood_forward(x, dist, cfg)          # (L, B)
    recon = -xp.sum(logp) / (L * B)
    kl_loss, kl_mean, kl_cache = _kl_charge(mu, logvar, cfg)          # () each
    loss = recon + cfg.beta * kl_loss if cfg.beta != 1.0 else recon + kl_loss
    cache = ForwardCache(x, (L, B, Z), enc_cache, rep_cache, dec_cache, lik_cache, kl_cache)
    return loss, cache, {"loss": loss, "recon": recon, "kl": kl_mean}


def _kl_charge(mu, logvar, cfg):
    """What the loss charges for KL(q(z|x) || p(z)), the batch's mean KL, and a cache: the mean KL
    itself, or with free bits each unit's mean KL as ``max(KL_j, lambda)`` (below lambda: no gradient)."""
    xp = namespace_of(mu)
    B = mu.shape[0]
    if not cfg.free_bits:
        kl, kl_cache = gaussian_kl_forward(mu, logvar)                # (B,)
        kl_mean = xp.sum(kl) / B
        return kl_mean, kl_mean, kl_cache
    kl_terms, kl_cache = gaussian_kl_forward(mu, logvar, per_dim=True)  # (B, Z)
    kl_dims = xp.sum(kl_terms, axis=0) / B                            # (Z,) each unit's mean KL
    charged = kl_dims > cfg.free_bits                                 # (Z,)
    kl_loss = xp.sum(xp.maximum(kl_dims, xp.full_like(kl_dims, cfg.free_bits)))
    return kl_loss, xp.sum(kl_dims), (kl_cache, charged)


def _kl_charge_backward(kl_cache, cfg, B: int, x):
    """The gradient of ``cfg.beta`` times ``_kl_charge``'s charge: ``(dmu, dlogvar)``, each (B, Z).
    d loss / d KL_b = beta/B; with free bits d loss / d KL_bj = beta/B for the charged units j and
    0 for the free ones."""
    xp = namespace_of(x)
    if not cfg.free_bits:  # the two-argument call: a learner's own gaussian_kl_backward plugs in
        dkl = xp.full((B,), cfg.beta / B, dtype=x.dtype, device=x.device)
        return gaussian_kl_backward(dkl, kl_cache)
    kl_cache, charged = kl_cache
    dkl = xp.astype(charged, x.dtype) * (cfg.beta / B)                # (Z,)
    return gaussian_kl_backward(dkl, kl_cache, per_dim=True)


def backward(cache, cfg: VAEConfig) -> dict:
    """The gradient of ``forward``'s loss with respect to every parameter (same names and shapes)."""
    x, (L, B, Z), enc_cache, rep_cache, dec_cache, lik_cache, kl_cache = cache
    xp = namespace_of(x)
    grads = {}
    # d loss / d log p(x|z_lb) = -1/(L B)
    dlogp = xp.full((L, B), -1.0 / (L * B), dtype=x.dtype, device=x.device)
    dmu_kl, dlogvar_kl = _kl_charge_backward(kl_cache, cfg, B, x)                 # (B, Z) each

    # likelihood -> decoder heads
    mlp_caches, out_cache, lv_cache = dec_cache
    dout, *dlogvar = LIKELIHOOD_TABLE[cfg.likelihood].log_prob_backward(dlogp, lik_cache)  # (L, B, D)
    dh, grads["dec.W_out"], grads["dec.b_out"] = linear_backward(
        xp.reshape(dout, (L * B, cfg.x_dim)), out_cache)                          # (L B, H)
    dh_lv = VARIANCE_HEADS[cfg.gaussian_variance].backward(dlogvar, lv_cache, grads)
    if dh_lv is not None:
        dh += dh_lv  # h fans out to the mean and the log-variance heads

    # decoder trunk -> z -> (mu, logvar)
    dz = _mlp_backward(dh, mlp_caches, "dec", cfg.activation, grads, need_dx=True)  # (L B, Z)
    dmu, dlogvar = reparameterize_backward(xp.reshape(dz, (L, B, Z)), rep_cache)      # (B, Z)
    dmu += dmu_kl           # mu and logvar fan out to the sample and the KL
    dlogvar += dlogvar_kl

    # encoder heads -> encoder trunk (no gradient for the data x)
    enc_mlp_caches, mu_cache, lv_enc_cache = enc_cache
    need_dh = len(cfg.hidden) > 0
    dh_mu, grads["enc.W_mu"], grads["enc.b_mu"] = linear_backward(dmu, mu_cache, need_dx=need_dh)
    dh_lv, grads["enc.W_logvar"], grads["enc.b_logvar"] = linear_backward(
        dlogvar, lv_enc_cache, need_dx=need_dh)
    if need_dh:
        _mlp_backward(dh_mu + dh_lv, enc_mlp_caches, "enc", cfg.activation, grads, need_dx=False)
    return {name: grads[name] for name in param_shapes(cfg)}


def relu_masks(cache) -> list:
    """The on/off pattern ``a > 0`` of every ReLU layer in a ``forward`` cache (encoder, decoder).

    A ReLU layer's cache is its pre-activation ``a``; the gradient checker compares these masks
    across a stencil's points to find elements whose stencil straddles a kink.
    """
    encoder_layers, decoder_layers = cache.enc[0], cache.dec[0]
    return [act_cache > 0 for _, act_cache in (*encoder_layers, *decoder_layers)]


def loss_and_grads(params: dict, x, eps, cfg: VAEConfig):
    """The negative ELBO and its gradient: returns ``(loss, grads, stats)``.

    params: from ``init_params``; x: (B, D); eps: (n_samples, B, z_dim) standard normal draws.
    ``loss`` is -ELBO averaged over the batch (summed over pixels and latent dimensions, averaged
    over the L samples), a Python float. ``grads`` has exactly the keys and shapes of ``params``.
    ``stats`` has ``loss``, ``recon`` (mean -log p(x|z)) and ``kl`` (mean KL(q(z|x) || p(z))), as
    Python floats. (Reading them waits for the device; ``train`` uses ``forward`` and ``backward``,
    which keep them on it.)
    """
    _, cache, stats = forward(params, x, eps, cfg)
    stats = {k: float(v) for k, v in stats.items()}
    return stats["loss"], backward(cache, cfg), stats

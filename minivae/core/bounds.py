"""Bounds on log p(x): the ELBO, the importance-weighted bound, and active latent units.

For one example x and K draws z_k ~ q(z|x), the log importance weights are

    log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),

the ELBO is E_q[log w] and the importance-weighted bound (Burda et al. 2015) is

    L_K = log (1/K) sum_k w_k  <=  log p(x),

which rises with K towards log p(x) (L_1 is the ELBO). Everything here is per example, shape (B,),
in nats, and runs on any backend; the random draws come from a ``backend.Generator``.
"""

from __future__ import annotations

import math

from ..backend import dtype_name, namespace_of, to_numpy
from .distributions import gaussian_kl_forward, gaussian_log_prob_forward, reparameterize_forward
from .model import encode, log_likelihood


def logmeanexp(a, axis: int = 0):
    """``log mean exp(a)`` along ``axis``, shifted by the max so nothing overflows."""
    xp = namespace_of(a)
    m = xp.max(a, axis=axis, keepdims=True)
    out = m + xp.log(xp.mean(xp.exp(a - m), axis=axis, keepdims=True))
    return xp.squeeze(out, axis=axis)


def log_weights(params, x, eps, cfg, q=None):
    """``log p(x|z) + log p(z) - log q(z|x)`` for ``z = mu + std * eps``; eps (K, B, Z) -> (K, B).

    ``q = (mu, logvar)`` is the encoder's output for x, computed here when not given.
    """
    xp = namespace_of(x)
    mu, logvar = encode(params, x, cfg) if q is None else q
    z, _ = reparameterize_forward(mu, logvar, eps)
    zero = xp.zeros((), dtype=z.dtype, device=z.device)
    log_pz, _ = gaussian_log_prob_forward(z, zero, zero)
    log_qz, _ = gaussian_log_prob_forward(z, mu, logvar)
    return log_likelihood(params, x, z, cfg) + log_pz - log_qz


def iwae_bound(params, x, cfg, k: int, rng, chunk: int = 100, q=None):
    """The importance-weighted bound L_k per example, (B,), drawing k samples ``chunk`` at a time.

    Memory is bounded by ``chunk * B * x_dim`` whatever k is (k = 5000 runs in a few MB per batch);
    the chunks' log-mean-exps are combined exactly. The encoder runs once, not once per chunk.
    """
    xp = namespace_of(x)
    q = encode(params, x, cfg) if q is None else q
    B = x.shape[0]
    parts, sizes = [], []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = rng.normal((n, B, cfg.z_dim), dtype_name(x))
        parts.append(logmeanexp(log_weights(params, x, eps, cfg, q), axis=0))
        sizes.append(n)
    # log mean over all k = logsumexp_c (lme_c + log n_c) - log k
    stacked = xp.stack([p + math.log(n) for p, n in zip(parts, sizes)], axis=0)
    return logmeanexp(stacked, axis=0) + math.log(len(parts)) - math.log(k)


def elbo(params, x, cfg, rng, n_samples: int = 1, q=None):
    """The ELBO per example with the analytic KL: returns ``(elbo, log_px_z, kl)``, each (B,).

    ``elbo = log_px_z - kl`` with ``log_px_z = mean_l log p(x|z_l)`` over ``n_samples`` draws and
    ``kl = KL(q(z|x) || p(z))``. ``q = (mu, logvar)`` as in ``log_weights``.
    """
    xp = namespace_of(x)
    mu, logvar = encode(params, x, cfg) if q is None else q
    eps = rng.normal((n_samples, x.shape[0], cfg.z_dim), dtype_name(x))
    z, _ = reparameterize_forward(mu, logvar, eps)
    recon = xp.mean(log_likelihood(params, x, z, cfg), axis=0)
    kl, _ = gaussian_kl_forward(mu, logvar)
    return recon - kl, recon, kl


ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015


def active_units(mu, threshold: float = ACTIVE_THRESHOLD):
    """Latent dimensions whose posterior mean varies over the data: ``Cov_x(E_q[z_j]) > threshold``.

    mu: (N, Z), the encoder means over a data set. Returns ``(count, variances)`` with variances (Z,).
    (Burda et al. 2015 use threshold 0.01.)
    """
    count, variances = _active(mu, threshold)
    return int(count), variances


def _active(mu, threshold: float):
    """``active_units`` on the device: the count as a 0-d array in mu's dtype, and the variances."""
    xp = namespace_of(mu)
    variances = xp.var(mu, axis=0)
    return xp.sum(xp.astype(variances > threshold, variances.dtype)), variances


def likelihood_is_density(cfg, x) -> bool:
    """Whether p(x|z) is a probability (mass or density) for the data x, so that the ELBO and L_k
    bound a log-likelihood. The Bernoulli formula is one for binary x only: on grayscale pixels
    it is a number (tutorial 5 shows it does not integrate to 1 over [0, 1]), not a log-likelihood."""
    if cfg.likelihood != "bernoulli":
        return True
    xp = namespace_of(x)
    return bool(xp.all((x == 0.0) | (x == 1.0)))


def evaluate(params, x, cfg, rng, k: int = 0, batch_size: int = 500, chunk: int = 100,
             iwae_rng=None, on_batch=None) -> dict:
    """Average bounds over a data set x (N, D): ELBO, recon, KL, active units, and L_k if k > 0.

    The ELBO's draws come from ``rng``, the importance samples from ``iwae_rng`` (default: ``rng``),
    so an ELBO computed with and without L_k from the same ``rng`` is the same number. The ELBO's
    draws (one per example) do not depend on ``batch_size``, on any backend, when the importance
    samples have their own ``iwae_rng`` (which importance samples an example gets does depend on
    it). The sums stay on the device until one read at the end. ``on_batch(n)``, if given, is
    called after each batch of ``n`` examples is queued (the command line's progress bar: L_k with
    a large k takes a while).
    """
    xp = namespace_of(x)
    N = x.shape[0]
    names = ["elbo", "recon", "kl"] + ([f"iwae_{k}"] if k else [])
    sums, mus = [], []  # per batch, on the device: read once at the end, not once per batch
    for start in range(0, N, batch_size):
        xb = x[start:min(start + batch_size, N), ...]
        q = encode(params, xb, cfg)
        e, log_px_z, kl = elbo(params, xb, cfg, rng, q=q)
        row = [xp.sum(e), xp.sum(-log_px_z), xp.sum(kl)]
        if k:
            row.append(xp.sum(iwae_bound(params, xb, cfg, k, iwae_rng or rng, chunk, q)))
        sums.append(xp.stack(row))
        mus.append(q[0])
        if on_batch is not None:
            on_batch(xb.shape[0])  # on a GPU: batches queued, not finished
    count, _ = _active(xp.concat(mus, axis=0), ACTIVE_THRESHOLD)
    table = to_numpy(xp.concat([xp.reshape(xp.stack(sums), (-1,)), xp.reshape(count, (1,))]))
    per_batch = table[:-1].reshape(len(sums), len(names))
    out = {}
    for j, name in enumerate(names):  # summed on the host in float64, batch after batch
        total = 0.0
        for value in per_batch[:, j]:
            total += float(value)
        out[name] = total / N
    out["active_units"] = int(table[-1])
    return out

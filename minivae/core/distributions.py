"""The probability pieces of the VAE, each a forward/backward pair like the layers.

Notation, used everywhere in minivae:

- ``logvar`` is log sigma^2 -- the log of the *variance* -- and ``std = exp(0.5 * logvar)``.
- ``eps`` is always an argument, never drawn here, so every function is deterministic and can be
  checked with finite differences.
- Shapes: ``L`` Monte-Carlo samples per example (the paper's L), ``B`` examples, ``Z`` latent
  dimensions, ``D`` data dimensions (pixels). Log-densities are summed over the last axis.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

from ..backend import namespace_of
from .layers import sigmoid, softplus

LOG_2PI = math.log(2.0 * math.pi)


# --- the reparameterized sample --------------------------------------------------------------

def reparameterize_forward(mu, logvar, eps):
    """The reparameterization trick: ``z = mu + exp(0.5 * logvar) * eps``.

    mu, logvar: (B, Z); eps: (L, B, Z), standard normal. Returns z: (L, B, Z) and a cache.
    """
    std = namespace_of(logvar).exp(0.5 * logvar)  # (B, Z)
    return mu + std * eps, (std, eps)


def reparameterize_backward(dz, cache):
    """Gradients of ``z = mu + std * eps`` with ``std = exp(0.5 logvar)``.

    dz: (L, B, Z). Returns ``(dmu, dlogvar)``, each (B, Z): ``mu`` and ``logvar`` fan out to all L
    samples, so their gradients sum over L; ``dz/dlogvar = 0.5 * std * eps``.
    """
    std, eps = cache
    xp = namespace_of(dz)
    dmu = xp.sum(dz, axis=0)
    dlogvar = 0.5 * std * xp.sum(dz * eps, axis=0)
    return dmu, dlogvar


# --- the KL term --------------------------------------------------------------------------------

def gaussian_kl_forward(mu, logvar, per_dim: bool = False):
    """Analytic ``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per example.

    ``KL = 0.5 * sum_j (exp(logvar_j) + mu_j^2 - 1 - logvar_j)``.
    mu, logvar: (B, Z). Returns kl: (B,), or with ``per_dim`` the terms of the sum, (B, Z); and a cache.
    """
    xp = namespace_of(mu, logvar)
    var = xp.exp(logvar)
    kl = 0.5 * (var + mu * mu - 1.0 - logvar)
    return (kl if per_dim else xp.sum(kl, axis=-1)), (mu, var)


def gaussian_kl_backward(dkl, cache, per_dim: bool = False):
    """dkl: (B,), or with ``per_dim`` one per term, anything that broadcasts against (B, Z).
    Returns ``(dmu, dlogvar)``: ``dKL/dmu = mu``, ``dKL/dlogvar = 0.5 (exp(logvar) - 1)``."""
    mu, var = cache
    dkl = dkl if per_dim else dkl[..., None]
    return dkl * mu, dkl * 0.5 * (var - 1.0)


# --- log-likelihoods log p(x | decoder output) ----------------------------------------------
# x: (B, D); the decoder's outputs: (L, B, D) (or anything that broadcasts against x).
# Each forward returns the log-density summed over D, shape (L, B), and a cache.

def bernoulli_log_prob_forward(x, logits):
    """Bernoulli log-likelihood on logits: ``sum_d x_d log y_d + (1 - x_d) log(1 - y_d)``.

    With ``y = sigmoid(logits)`` this is ``x * logits - softplus(logits)``: no ``log(0)`` for any
    logits (e.g. +-1e4). For x in {0, 1} it is a log-probability; for grayscale x in (0, 1) it is
    the negative binary cross-entropy, which is *not* a normalized density (see the continuous
    Bernoulli below).
    """
    xp = namespace_of(x, logits)
    e = xp.exp(-xp.abs(logits))  # shared by softplus here and sigmoid in the backward pass
    return xp.sum(x * logits - softplus(logits, e), axis=-1), (x, logits, e)


def bernoulli_log_prob_backward(dlogp, cache):
    """dlogp: (L, B). Returns dlogits: (L, B, D) = ``dlogp * (x - sigmoid(logits))``."""
    x, logits, e = cache
    return dlogp[..., None] * (x - sigmoid(logits, e))


# Below this |logits| the continuous Bernoulli's normalizer uses its Taylor series: the closed form
# is 0/0 at logits = 0 and loses digits to cancellation near it.
CB_TAYLOR_CUTOFF = 0.1


def continuous_bernoulli_log_norm(logits):
    """``log C(lambda)`` of the continuous Bernoulli, written in the logits ``eta``.

    With ``lambda = sigmoid(eta)``: ``C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) = eta / tanh(eta/2)``,
    an even function of eta equal to 2 at eta = 0. Near 0 (|eta| < CB_TAYLOR_CUTOFF) the series
    ``log 2 + u^2/3 - 7u^4/90 + 62u^6/2835 - 127u^8/18900`` with ``u = eta/2`` is used.
    """
    xp = namespace_of(logits)
    small = xp.abs(logits) < CB_TAYLOR_CUTOFF
    safe = xp.where(small, CB_TAYLOR_CUTOFF, logits)  # keeps the unused branch away from 0/0
    exact = xp.log(safe / xp.tanh(0.5 * safe))
    u2 = 0.25 * logits * logits
    taylor = math.log(2.0) + u2 * (1.0 / 3 + u2 * (-7.0 / 90 + u2 * (62.0 / 2835 - u2 * 127.0 / 18900)))
    return xp.where(small, taylor, exact)


def continuous_bernoulli_log_norm_grad(logits):
    """``d log C / d eta = 1/eta - 1/sinh(eta)``, with its Taylor series near 0.

    ``1/sinh`` is computed as ``2 e / (1 - e^2)`` with ``e = exp(-|eta|)`` so large |eta| cannot
    overflow.
    """
    xp = namespace_of(logits)
    small = xp.abs(logits) < CB_TAYLOR_CUTOFF
    safe = xp.where(small, CB_TAYLOR_CUTOFF, logits)
    e = xp.exp(-xp.abs(safe))
    csch = xp.sign(safe) * 2.0 * e / (1.0 - e * e)
    exact = 1.0 / safe - csch
    t2 = logits * logits
    taylor = logits * (1.0 / 6 + t2 * (-7.0 / 360 + t2 * (31.0 / 15120 - t2 * 127.0 / 604800)))
    return xp.where(small, taylor, exact)


def continuous_bernoulli_mean(logits):
    """The mean of the continuous Bernoulli: ``1/2 + (coth(u) - 1/u) / 2`` with ``u = eta/2``.

    This, not ``sigmoid(logits)``, is the expected pixel value under the model (Loaiza-Ganem &
    Cunningham 2019, eq. 6 rewritten in the logits).
    """
    xp = namespace_of(logits)
    u = 0.5 * logits
    small = xp.abs(logits) < CB_TAYLOR_CUTOFF
    safe = xp.where(small, 0.5 * CB_TAYLOR_CUTOFF, u)
    exact = 0.5 + 0.5 * (1.0 / xp.tanh(safe) - 1.0 / safe)
    u2 = u * u
    taylor = 0.5 + u * (1.0 / 6 + u2 * (-1.0 / 90 + u2 * (1.0 / 945 - u2 / 9450)))
    return xp.where(small, taylor, exact)


def continuous_bernoulli_log_prob_forward(x, logits):
    """Continuous Bernoulli log-density on [0, 1]: the Bernoulli term plus ``log C(lambda)``.

    ``log p(x | lambda) = x log lambda + (1 - x) log(1 - lambda) + log C(lambda)``: the normalizer
    that makes the Bernoulli formula a proper density for grayscale x in [0, 1].
    """
    xp = namespace_of(x, logits)
    e = xp.exp(-xp.abs(logits))
    logp = xp.sum(x * logits - softplus(logits, e) + continuous_bernoulli_log_norm(logits), axis=-1)
    return logp, (x, logits, e)


def continuous_bernoulli_log_prob_backward(dlogp, cache):
    """dlogp: (L, B). Returns dlogits = ``dlogp * (x - sigmoid(eta) + 1/eta - 1/sinh(eta))``."""
    x, logits, e = cache
    return dlogp[..., None] * (x - sigmoid(logits, e) + continuous_bernoulli_log_norm_grad(logits))


def gaussian_log_prob_forward(x, mean, logvar):
    """Diagonal Gaussian log-density ``log N(x; mean, exp(logvar) I)``, summed over the last axis.

    ``-0.5 * sum_d (log 2 pi + logvar_d + (x_d - mean_d)^2 exp(-logvar_d))``.
    ``logvar`` broadcasts against ``mean``: a () array (a fixed or a shared learned variance) or
    the shape of ``mean`` (a per-pixel head, the paper's C.2). Also used for q(z|x) and p(z).
    """
    xp = namespace_of(x, mean, logvar)
    diff = x - mean
    inv_var = xp.exp(-logvar)
    logp = -0.5 * xp.sum(LOG_2PI + logvar + diff * diff * inv_var, axis=-1)
    return logp, (diff, inv_var)


def gaussian_log_prob_backward(dlogp, cache):
    """dlogp: (L, B). Returns ``(dmean, dlogvar)``, both of the broadcast shape (L, B, D).

    ``d/dmean = (x - mean) / var``; ``d/dlogvar = 0.5 ((x - mean)^2 / var - 1)``. A caller whose
    ``logvar`` was broadcast (a shared scalar) sums ``dlogvar`` back to its own shape.
    """
    diff, inv_var = cache
    dlogp = dlogp[..., None]
    scaled = diff * inv_var
    return dlogp * scaled, dlogp * 0.5 * (diff * scaled - 1.0)


# --- the likelihoods as a table, as layers.ACTIVATIONS: what the model looks up ---------------------

class Likelihood(NamedTuple):
    """One choice of p(x|z): the decoder's output heads (the first is ``dec.W_out``'s), log p(x|z)
    summed over pixels with its backward (one gradient per head), and the mean E[x|z]."""
    heads: tuple[str, ...]
    log_prob_forward: Callable    # (x, *heads) -> (log p (L, B), cache)
    log_prob_backward: Callable   # (dlogp (L, B), cache) -> (d head, ...), each (L, B, D)
    mean: Callable                # (*heads) -> E[x|z]


LIKELIHOOD_TABLE = {
    "bernoulli": Likelihood(
        ("logits",), bernoulli_log_prob_forward,
        lambda dlogp, cache: (bernoulli_log_prob_backward(dlogp, cache),), sigmoid),
    "continuous_bernoulli": Likelihood(  # its mean is *not* the sigmoid of the logits
        ("logits",), continuous_bernoulli_log_prob_forward,
        lambda dlogp, cache: (continuous_bernoulli_log_prob_backward(dlogp, cache),),
        continuous_bernoulli_mean),
    "gaussian": Likelihood(
        ("mean", "logvar"), gaussian_log_prob_forward, gaussian_log_prob_backward,
        lambda mean, logvar: mean),
}

"""First-order update rules, in the style of CS231n's ``optim.py``.

Every rule has one interface::

    next_w, config = update(w, dw, config)

``w`` is a parameter array, ``dw`` the gradient of the loss (to be *minimized*) with respect to it,
and ``config`` a dict of hyperparameters and state (Adam's moments, Adagrad's sum of squares), with
defaults filled in by ``config.setdefault``. As in CS231n, the update happens **in place**: ``w``
and the state arrays are modified with the array API's in-place operators (``-=``, ``*=``), so a
training step allocates no new parameter or moment arrays, and ``next_w`` is ``w`` itself.

Weight decay: every rule takes ``weight_decay`` (default 0), which adds ``weight_decay * w`` to the
gradient. That is the MAP term of a Gaussian prior on the weights: with the loss averaged over the
batch, the paper's prior p(theta) = N(0, I) over a training set of N examples is
``weight_decay = 1 / N`` (its negative log-density, divided by N, has gradient ``w / N``).
"""

from __future__ import annotations

import math

from ..backend import namespace_of

def _decayed(w, dw, config):
    wd = config.setdefault("weight_decay", 0.0)
    return dw + wd * w if wd else dw


def _state(config, key, w):
    """The state array ``config[key]``, created as zeros like ``w`` on first use."""
    if config.get(key) is None:
        config[key] = namespace_of(w).zeros_like(w)
    return config[key]


def sgd(w, dw, config=None):
    """Plain gradient descent: ``w <- w - lr * dw``. Hyperparameters: ``lr`` (1e-2)."""
    config = {} if config is None else config
    config.setdefault("lr", 1e-2)
    w -= config["lr"] * _decayed(w, dw, config)
    return w, config


def momentum(w, dw, config=None):
    """Heavy-ball momentum: ``v <- mu v - lr dw``; ``w <- w + v``. ``lr`` (1e-2), ``momentum`` (0.9)."""
    config = {} if config is None else config
    config.setdefault("lr", 1e-2)
    config.setdefault("momentum", 0.9)
    v = _state(config, "velocity", w)
    v *= config["momentum"]
    v -= config["lr"] * _decayed(w, dw, config)
    w += v
    return w, config


def adagrad(w, dw, config=None):
    """Adagrad (Duchi et al. 2011), the paper's choice: ``G <- G + dw^2``; ``w <- w - lr dw / (sqrt(G) + eps)``.

    ``lr`` (1e-2; the paper picks a global step from {0.01, 0.02, 0.1}), ``eps`` (1e-8).
    """
    config = {} if config is None else config
    config.setdefault("lr", 1e-2)
    config.setdefault("eps", 1e-8)
    xp = namespace_of(w)
    dw = _decayed(w, dw, config)
    G = _state(config, "sum_sq", w)
    G += dw * dw
    w -= config["lr"] * dw / (xp.sqrt(G) + config["eps"])
    return w, config


def adam(w, dw, config=None):
    """Adam (Kingma & Ba 2015) with bias correction, written as PyTorch's ``torch.optim.Adam`` is.

    ``m <- b1 m + (1 - b1) dw``; ``v <- b2 v + (1 - b2) dw^2``; ``t <- t + 1``;
    ``w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``, which is the paper's
    ``w - lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)``.
    It is computed as ``w - lr_t * m / (sqrt(v) + eps * sqrt(1 - b2^t))`` with
    ``lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`` (multiply the fraction through by sqrt(1 - b2^t)).
    ``lr`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999), ``eps`` (1e-8), as in PyTorch.
    """
    config = {} if config is None else config
    config.setdefault("lr", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("eps", 1e-8)
    config.setdefault("t", 0)
    xp = namespace_of(w)
    dw = _decayed(w, dw, config)
    b1, b2 = config["beta1"], config["beta2"]
    m, v = _state(config, "m", w), _state(config, "v", w)
    m *= b1
    m += (1 - b1) * dw
    v *= b2
    v += (1 - b2) * (dw * dw)
    t = config["t"] + 1
    config["t"] = t
    # the bias corrections folded into two scalars (Kingma & Ba's "more efficient" order, end of
    # their section 2): one elementwise pass fewer than dividing sqrt(v) itself
    root_c2 = math.sqrt(1 - b2**t)
    denom = xp.sqrt(v)
    denom += config["eps"] * root_c2
    update = m / denom
    update *= config["lr"] * root_c2 / (1 - b1**t)
    w -= update
    return w, config


RULES = {"sgd": sgd, "momentum": momentum, "adagrad": adagrad, "adam": adam}
STATE_KEYS = {"sgd": (), "momentum": ("velocity",), "adagrad": ("sum_sq",), "adam": ("m", "v")}


def step(params: dict, grads: dict, state: dict, rule: str, **hyper) -> None:
    """Update every parameter in place with ``rule``; ``state[name]`` is that parameter's config.

    ``hyper`` (lr, weight_decay, ...) is written into every parameter's config at every call, so a
    learning-rate schedule is just a different ``lr`` from one call to the next.
    """
    update = RULES[rule]
    for name, w in params.items():
        config = state.setdefault(name, {})
        config.update(hyper)
        update(w, grads[name], config)

"""First-order update rules, in the style of CS231n's ``optim.py``.

Every rule has one interface::

    next_w, config = update(w, dw, config)

``w`` is a parameter array, ``dw`` the gradient of the loss (to be *minimized*) with respect to it,
and ``config`` a dict of hyperparameters and state (Adam's moments, Adagrad's sum of squares), with
defaults filled in by ``config.setdefault``. State arrays live on ``w``'s backend and in its dtype.

Weight decay: every rule takes ``weight_decay`` (default 0), which adds ``weight_decay * w`` to the
gradient. That is the MAP term of a Gaussian prior on the weights: with the loss averaged over the
batch, the paper's prior p(theta) = N(0, I) over a training set of N examples is
``weight_decay = 1 / N`` (its negative log-density, divided by N, has gradient ``w / N``).
"""

from __future__ import annotations

from .backend import namespace_of


def _decayed(w, dw, config):
    wd = config.setdefault("weight_decay", 0.0)
    return dw + wd * w if wd else dw


def sgd(w, dw, config=None):
    """Plain gradient descent: ``w <- w - lr * dw``. Hyperparameters: ``lr`` (1e-2)."""
    config = {} if config is None else config
    config.setdefault("lr", 1e-2)
    return w - config["lr"] * _decayed(w, dw, config), config


def momentum(w, dw, config=None):
    """Heavy-ball momentum: ``v <- mu v - lr dw``; ``w <- w + v``. ``lr`` (1e-2), ``momentum`` (0.9)."""
    config = {} if config is None else config
    config.setdefault("lr", 1e-2)
    config.setdefault("momentum", 0.9)
    v = config.get("velocity")
    if v is None:
        v = namespace_of(w).zeros_like(w)
    v = config["momentum"] * v - config["lr"] * _decayed(w, dw, config)
    config["velocity"] = v
    return w + v, config


def adagrad(w, dw, config=None):
    """Adagrad (Duchi et al. 2011), the paper's choice: ``G <- G + dw^2``; ``w <- w - lr dw / (sqrt(G) + eps)``.

    ``lr`` (1e-2; the paper picks a global step from {0.01, 0.02, 0.1}), ``eps`` (1e-8).
    """
    config = {} if config is None else config
    config.setdefault("lr", 1e-2)
    config.setdefault("eps", 1e-8)
    xp = namespace_of(w)
    dw = _decayed(w, dw, config)
    G = config.get("sum_sq")
    G = dw * dw if G is None else G + dw * dw
    config["sum_sq"] = G
    return w - config["lr"] * dw / (xp.sqrt(G) + config["eps"]), config


def adam(w, dw, config=None):
    """Adam (Kingma & Ba 2015) with bias correction.

    ``m <- b1 m + (1 - b1) dw``; ``v <- b2 v + (1 - b2) dw^2``; ``t <- t + 1``;
    ``w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
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
    m = config.get("m")
    v = config.get("v")
    m = (1 - b1) * dw if m is None else b1 * m + (1 - b1) * dw
    v = (1 - b2) * dw * dw if v is None else b2 * v + (1 - b2) * dw * dw
    t = config["t"] + 1
    config.update(m=m, v=v, t=t)
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return w - config["lr"] * m_hat / (xp.sqrt(v_hat) + config["eps"]), config


RULES = {"sgd": sgd, "momentum": momentum, "adagrad": adagrad, "adam": adam}


def step(params: dict, grads: dict, state: dict, rule: str, **hyper) -> None:
    """Update every parameter in place in ``params`` with ``rule``; ``state[name]`` is its config.

    ``hyper`` (lr, weight_decay, ...) seeds each parameter's config the first time it is seen.
    """
    if rule not in RULES:
        raise ValueError(f"optimizer: expected one of {sorted(RULES)}, got {rule!r}")
    update = RULES[rule]
    for name, w in params.items():
        config = state.setdefault(name, dict(hyper))
        params[name], state[name] = update(w, grads[name], config)

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

from .backend import backend_of, namespace_of

# NumPy parameters are updated in pieces of this many elements, so the half-dozen elementwise
# passes of an update run in the CPU cache instead of streaming a 400k-element matrix through
# memory each time (about 2x faster for Adam on the 784-500-20 model). Elementwise rules give
# bit-identical results however the array is cut.
CHUNK = 65536


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
_STATE_KEYS = {"sgd": (), "momentum": ("velocity",), "adagrad": ("sum_sq",), "adam": ("m", "v")}


def step(params: dict, grads: dict, state: dict, rule: str, **hyper) -> None:
    """Update every parameter in place with ``rule``; ``state[name]`` is that parameter's config.

    ``hyper`` (lr, weight_decay, ...) is written into every parameter's config at every call, so a
    learning-rate schedule is just a different ``lr`` from one call to the next.
    NumPy parameters larger than ``CHUNK`` are updated piece by piece through views (same result,
    faster); other backends update whole arrays, which is what a GPU wants.
    """
    if rule not in RULES:
        raise ValueError(f"optimizer: expected one of {sorted(RULES)}, got {rule!r}")
    update = RULES[rule]
    for name, w in params.items():
        config = state.setdefault(name, {})
        config.update(hyper)
        size = 1
        for n in w.shape:
            size *= n
        if size <= CHUNK or backend_of(w) != "numpy" or not w.flags["C_CONTIGUOUS"]:
            update(w, grads[name], config)
            continue
        for key in _STATE_KEYS[rule]:
            _state(config, key, w)
        flat = {"w": w.reshape(-1), "dw": grads[name].reshape(-1),
                **{key: config[key].reshape(-1) for key in _STATE_KEYS[rule]}}
        for start in range(0, size, CHUNK):
            piece = {**config, **{k: flat[k][start:start + CHUNK] for k in _STATE_KEYS[rule]}}
            update(flat["w"][start:start + CHUNK], flat["dw"][start:start + CHUNK], piece)
        # the pieces share every scalar (defaults, Adam's step count t): keep the last one's
        config.update({k: v for k, v in piece.items() if k not in _STATE_KEYS[rule]})


class Flat:
    """``rule`` over every parameter at once, as one flat buffer: a dozen array operations per step
    instead of a dozen per parameter tensor. On a GPU each operation is a kernel launch, and Adam
    over the 10 tensors of a 784-500-20 VAE was 120 launches a step; flat, it is 12 (and one
    ``concat`` of the gradients). The rules are elementwise, so the result is the same, bit for bit,
    as ``step`` tensor by tensor. On NumPy, where a launch costs nothing, ``step`` runs on the views.

    Making one moves the parameters and the rule's state arrays into flat buffers and leaves views
    of them in ``params`` and ``state``: checkpoints, evaluation and learners keep seeing one array
    per tensor (and per-tensor scalars such as Adam's ``t``), which ``step`` updates in place. An
    array taken out of ``params`` before that is a copy that no longer changes.
    (NumPy, CuPy and array-api-strict slice and reshape contiguous arrays as views; the standard
    leaves writes through views to the library, which is why this class, not the rules, relies on it.)
    """

    def __init__(self, params: dict, state: dict, rule: str):
        if rule not in RULES:
            raise ValueError(f"optimizer: expected one of {sorted(RULES)}, got {rule!r}")
        self.rule, self.params, self.state = rule, params, state
        self.names = list(params)
        self.shapes = [tuple(params[n].shape) for n in self.names]
        self.xp = xp = namespace_of(*params.values())
        # On the CPU there are no launches to save, and gathering the gradients into one buffer
        # costs a copy (7% of a 784-500-20 step): NumPy runs ``step`` on the views instead.
        self.on_host = backend_of(next(iter(params.values()))) == "numpy"
        self.w = self._flatten(params[n] for n in self.names)                # (P,)
        self._point(params, None, self.w)
        first = state.get(self.names[0], {})
        self.config = {k: v for k, v in first.items() if k not in _STATE_KEYS[rule]}
        for key in _STATE_KEYS[rule]:
            have = [state.get(n, {}).get(key) is not None for n in self.names]
            if any(have) and not all(have):
                raise ValueError(f"optimizer state: {key!r} is there for some parameters, not all")
            flat = (self._flatten(state[n][key] for n in self.names) if all(have)
                    else xp.zeros_like(self.w))
            self.config[key] = flat
            self._point(state, key, flat)

    def _flatten(self, arrays):
        return self.xp.concat([self.xp.reshape(a, (-1,)) for a in arrays])

    def _point(self, target: dict, key, flat) -> None:
        """Replace ``target[name]`` (or ``target[name][key]``) by views of ``flat``."""
        start = 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            view = self.xp.reshape(flat[start:start + size], shape)
            start += size
            if key is None:
                target[name] = view
            else:
                target.setdefault(name, {})[key] = view

    def step(self, grads: dict, **hyper) -> None:
        """One update of every parameter with ``grads`` (same keys as ``params``)."""
        if self.on_host:  # the views are updated in place, tensor by tensor, in cache-sized pieces
            step(self.params, grads, self.state, self.rule, **hyper)
            return
        dw = self._flatten(grads[n] for n in self.names)
        self.config.update(hyper)
        step({"all": self.w}, {"all": dw}, {"all": self.config}, self.rule)
        scalars = {k: v for k, v in self.config.items() if k not in _STATE_KEYS[self.rule]}
        for name in self.names:  # each tensor's config, as ``step`` keeps it (what checkpoints save)
            self.state.setdefault(name, {}).update(scalars)

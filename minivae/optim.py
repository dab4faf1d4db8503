"""The optimizer as training runs it: the update rules of ``core/optim.py``, made fast.

``step`` updates a NumPy parameter larger than ``CHUNK`` piece by piece through views, and ``Flat``
runs a rule over every parameter at once as one flat buffer (on a GPU, a dozen kernel launches a
step instead of a dozen per tensor). The rules are elementwise, so both give the same numbers, bit
for bit, as ``core.optim.step`` tensor by tensor. The rules themselves (``sgd``, ``momentum``,
``adagrad``, ``adam``) and their docstrings are in ``minivae.core.optim``, re-exported here.
"""

from __future__ import annotations

import math

from .backend import backend_of, namespace_of
from .core.optim import RULES, STATE_KEYS, _state, adagrad, adam, momentum, sgd  # noqa: F401  (re-exported)

# NumPy parameters are updated in pieces of this many elements, so the half-dozen elementwise
# passes of an update run in the CPU cache instead of streaming a 400k-element matrix through
# memory each time (about 2x faster for Adam on the 784-500-20 model). Elementwise rules give
# bit-identical results however the array is cut.
CHUNK = 65536




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
        for key in STATE_KEYS[rule]:
            _state(config, key, w)
        flat = {"w": w.reshape(-1), "dw": grads[name].reshape(-1),
                **{key: config[key].reshape(-1) for key in STATE_KEYS[rule]}}
        for start in range(0, size, CHUNK):
            piece = {**config, **{k: flat[k][start:start + CHUNK] for k in STATE_KEYS[rule]}}
            update(flat["w"][start:start + CHUNK], flat["dw"][start:start + CHUNK], piece)
        # the pieces share every scalar (defaults, Adam's step count t): keep the last one's
        config.update({k: v for k, v in piece.items() if k not in STATE_KEYS[rule]})


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
        self.config = {k: v for k, v in first.items() if k not in STATE_KEYS[rule]}
        for key in STATE_KEYS[rule]:
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
        scalars = {k: v for k, v in self.config.items() if k not in STATE_KEYS[self.rule]}
        for name in self.names:  # each tensor's config, as ``step`` keeps it (what checkpoints save)
            self.state.setdefault(name, {}).update(scalars)

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
        size = math.prod(w.shape)
        if size <= CHUNK or backend_of(w) != "numpy" or not w.flags["C_CONTIGUOUS"]:
            update(w, grads[name], config)
            continue
        for key in STATE_KEYS[rule]:
            _state(config, key, w)
        flat = {**config, **{key: config[key].reshape(-1) for key in STATE_KEYS[rule]}}
        dw = grads[name].reshape(-1)
        _update_in_pieces(update, w.reshape(-1), flat, STATE_KEYS[rule],
                          ((start, min(start + CHUNK, size), dw[start:start + CHUNK])
                           for start in range(0, size, CHUNK)))
        config.update({k: v for k, v in flat.items() if k not in STATE_KEYS[rule]})


def _update_in_pieces(update, w, config: dict, keys, pieces) -> None:
    """Run ``update`` on pieces of the flat array ``w`` and of the flat state arrays ``config[key]``
    (``key`` in ``keys``): ``pieces`` yields ``(start, stop, dw)``, ``dw`` that piece's gradient.
    Every piece starts from the same scalars (Adam's step count ``t``); ``config`` keeps the last
    piece's, which are those of every piece."""
    piece = config
    for start, stop, dw in pieces:
        piece = {**config, **{key: config[key][start:stop] for key in keys}}
        update(w[start:stop], dw, piece)
    config.update({k: v for k, v in piece.items() if k not in keys})


def plan_pieces(sizes: list[int], limit: int | None) -> list[tuple[int, int]]:
    """Cut a flat buffer of tensors of ``sizes`` (in order) into ``(start, stop)`` pieces of at most
    ``limit`` elements: a tensor larger than ``limit`` is cut on its own, and smaller neighbours
    share a piece (so the dozen operations of an update run once for the biases and small matrices
    between two big weights, not once each). ``limit=None``: one piece, all of it."""
    total = sum(sizes)
    if limit is None:
        return [(0, total)]
    bounds, start = [0], 0
    for size in sizes:
        stop = start + size
        if size > limit:
            if bounds[-1] != start:
                bounds.append(start)
            bounds.extend(range(start + limit, stop, limit))
            bounds.append(stop)
        elif stop - bounds[-1] > limit:
            bounds.append(start)
        start = stop
    if bounds[-1] != total:
        bounds.append(total)
    return list(zip(bounds[:-1], bounds[1:]))


class Flat:
    """``rule`` over every parameter at once, as one flat buffer: a dozen array operations per piece
    of the buffer instead of a dozen per parameter tensor. The rules are elementwise, so the result
    is the same, bit for bit, as ``step`` tensor by tensor.

    On a GPU the buffer is one piece: each operation is a kernel launch, and Adam over the 10 tensors
    of a 784-500-20 VAE was 120 launches a step; flat, it is 12 (and one ``concat`` of the
    gradients). On NumPy the pieces are ``CHUNK`` elements at most, so that the passes run in the
    CPU's cache (``plan_pieces``): a big weight matrix is cut into pieces, and the small tensors
    between two of them share one, whose gradient is gathered (a copy), where each tensor alone
    would pay a dozen calls of NumPy's fixed overhead. A piece inside one tensor takes its gradient
    as a view. On the 784-500-20 model that is 14 updates a step instead of 20 (the seven tensors
    between the two 392,000-element matrices, 31,040 numbers, are one piece), and Adam went from
    1.07x the time of the hand-fused benchmark step's Adam over one buffer to 1.03x
    (benchmarks/README.md).

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
        on_host = backend_of(self.w) == "numpy"
        self.pieces = [(start, stop, self._parts(start, stop))
                       for start, stop in plan_pieces([math.prod(s) for s in self.shapes],
                                                      CHUNK if on_host else None)]

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

    def _parts(self, start: int, stop: int) -> list:
        """The tensors the piece ``[start, stop)`` of the buffer covers: ``(name, lo, hi)``, the
        range ``[lo, hi)`` of each one's flattened elements (None, None for all of it)."""
        parts, offset = [], 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            lo, hi = max(start, offset) - offset, min(stop, offset + size) - offset
            if lo < hi:
                parts.append((name, *((None, None) if (lo, hi) == (0, size) else (lo, hi))))
            offset += size
        return parts

    def _gradient(self, flat_grads: dict, parts: list):
        """The gradient of one piece from the flattened gradients: a view of one tensor's, or the
        covered ones gathered."""
        pieces = [flat_grads[name] if lo is None else flat_grads[name][lo:hi] for name, lo, hi in parts]
        return pieces[0] if len(pieces) == 1 else self.xp.concat(pieces)

    def step(self, grads: dict, **hyper) -> None:
        """One update of every parameter with ``grads`` (same keys as ``params``)."""
        self.config.update(hyper)
        keys = STATE_KEYS[self.rule]
        flat_grads = {name: self.xp.reshape(grads[name], (-1,)) for name in self.names}
        _update_in_pieces(RULES[self.rule], self.w, self.config, keys,
                          ((start, stop, self._gradient(flat_grads, parts))
                           for start, stop, parts in self.pieces))
        scalars = {k: v for k, v in self.config.items() if k not in keys}
        for name in self.names:  # each tensor's config, as ``step`` keeps it (what checkpoints save)
            self.state.setdefault(name, {}).update(scalars)

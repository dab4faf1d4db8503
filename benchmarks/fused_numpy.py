"""A hand-fused NumPy training step for the benchmark's model: how much restructuring could buy.

minivae's training step is its reference layers composed (``vae.forward``, ``vae.backward``,
``optim.step``). This module writes the same step the way the performance issue suggests, to
measure what that is worth here:

- every parameter is a view into one flat float32 buffer, and so is every gradient, so Adam runs
  once over the flat buffers (``optim.step`` on a single array: minivae's own update rule);
- every batch-sized intermediate array is an ``out=`` buffer allocated once, reused at every step;
- the mu and logvar heads are one (H, 2Z) matrix, so they cost one matrix product each way;
- no input gradient for the first layer, one random draw per step (as minivae already does).

It is a measuring stick, not library code: NumPy only, one architecture (D-H-Z with one tanh layer
each side, Bernoulli likelihood, L = 1), and the math written a second time. ``train_speed.py``
checks its gradient against minivae's before timing it, and ``tests/test_benchmarks.py`` does too.

Shapes: B examples, D pixels, H hidden units, Z latent dimensions.
"""

from __future__ import annotations

import math

import numpy as np

from minivae import VAEConfig, optim
from minivae.core.gradcheck import rel_error


class FusedStep:
    """One model's parameters, gradients, Adam state and scratch buffers, laid out once.

    ``params`` (minivae's dict, copied in) and ``cfg`` must describe a D-H-Z tanh Bernoulli VAE
    with one sample per example; ``batch`` is the fixed batch size B.
    """

    def __init__(self, params: dict, cfg: VAEConfig, batch: int):
        if (len(cfg.hidden) != 1 or cfg.activation != "tanh" or cfg.likelihood != "bernoulli"
                or cfg.n_samples != 1):
            raise ValueError("FusedStep covers one architecture: one tanh layer each side, Bernoulli, "
                             f"L = 1; got {cfg}")
        D, H, Z = cfg.x_dim, cfg.hidden[0], cfg.z_dim
        dtype = np.asarray(params["enc.W0"]).dtype
        self.B, self.Z = batch, Z
        # the flat layout: the two encoder heads side by side in one (H, 2Z) block
        shapes = {"W1": (D, H), "b1": (H,), "W_heads": (H, 2 * Z), "b_heads": (2 * Z,),
                  "W3": (Z, H), "b3": (H,), "W4": (H, D), "b4": (D,)}
        size = sum(math.prod(s) for s in shapes.values())
        self.flat_params = np.empty(size, dtype)
        self.flat_grads = np.zeros(size, dtype)
        self.p = _views(self.flat_params, shapes)
        self.g = _views(self.flat_grads, shapes)
        for name, view in self.as_minivae(self.p).items():
            view[...] = np.asarray(params[name])
        self.adam_state: dict = {}
        B = batch
        scratch = lambda *shape: np.empty(shape, dtype)  # noqa: E731
        self.h1, self.heads, self.std, self.z = scratch(B, H), scratch(B, 2 * Z), scratch(B, Z), scratch(B, Z)
        self.h3, self.logits, self.e, self.t = scratch(B, H), scratch(B, D), scratch(B, D), scratch(B, D)
        self.negative = np.empty((B, D), bool)
        self.dh3, self.dheads, self.dh1, self.dz = scratch(B, H), scratch(B, 2 * Z), scratch(B, H), scratch(B, Z)

    def as_minivae(self, views: dict) -> dict:
        """``self.p`` or ``self.g`` under minivae's names and shapes (views, no copies)."""
        Z = self.Z
        return {"enc.W0": views["W1"], "enc.b0": views["b1"],
                "enc.W_mu": views["W_heads"][:, :Z], "enc.b_mu": views["b_heads"][:Z],
                "enc.W_logvar": views["W_heads"][:, Z:], "enc.b_logvar": views["b_heads"][Z:],
                "dec.W0": views["W3"], "dec.b0": views["b3"], "dec.W_out": views["W4"], "dec.b_out": views["b4"]}

    def loss_and_grads(self, x, eps) -> float:
        """The negative ELBO of the batch x (B, D); its gradient lands in ``self.g``. eps: (1, B, Z)."""
        p, g, Z = self.p, self.g, self.Z
        inv_B = x.dtype.type(1.0 / self.B)
        h1, heads, std, z, h3, logits, e, t = (self.h1, self.heads, self.std, self.z, self.h3,
                                               self.logits, self.e, self.t)
        eps = eps[0]
        # forward: h1 = tanh(x W1 + b1); [mu | logvar] = h1 W_heads + b_heads; z = mu + std * eps
        np.matmul(x, p["W1"], out=h1)
        np.add(h1, p["b1"], out=h1)
        np.tanh(h1, out=h1)
        np.matmul(h1, p["W_heads"], out=heads)
        np.add(heads, p["b_heads"], out=heads)
        mu, logvar = heads[:, :Z], heads[:, Z:]
        np.multiply(logvar, 0.5, out=std)
        np.exp(std, out=std)
        np.multiply(std, eps, out=z)
        np.add(z, mu, out=z)
        # decoder: h3 = tanh(z W3 + b3); logits = h3 W4 + b4
        np.matmul(z, p["W3"], out=h3)
        np.add(h3, p["b3"], out=h3)
        np.tanh(h3, out=h3)
        np.matmul(h3, p["W4"], out=logits)
        np.add(logits, p["b4"], out=logits)
        # -log p(x|z) = sum softplus(logits) - x * logits, with e = exp(-|logits|)
        np.abs(logits, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.log1p(e, out=t)
        recon = float(np.sum(t)) + float(np.sum(np.maximum(logits, 0, out=t))) - float(np.vdot(x, logits))
        kl = 0.5 * float(np.sum(std * std + mu * mu - 1.0 - logvar))
        # backward: dlogits = (sigmoid(logits) - x) / B, sigmoid = 1/(1+e) or e/(1+e) by the sign
        np.add(e, 1.0, out=t)
        np.divide(1.0, t, out=t)
        np.less(logits, 0, out=self.negative)
        np.multiply(t, e, out=t, where=self.negative)
        np.subtract(t, x, out=t)
        np.multiply(t, inv_B, out=t)
        np.matmul(h3.T, t, out=g["W4"])
        np.sum(t, axis=0, out=g["b4"])
        np.matmul(t, p["W4"].T, out=self.dh3)
        np.multiply(h3, h3, out=h3)          # h3 is not needed any more: 1 - h3^2 in its place
        np.subtract(1.0, h3, out=h3)
        np.multiply(self.dh3, h3, out=self.dh3)
        np.matmul(z.T, self.dh3, out=g["W3"])
        np.sum(self.dh3, axis=0, out=g["b3"])
        np.matmul(self.dh3, p["W3"].T, out=self.dz)
        # the heads: dmu = dz + mu / B;  dlogvar = 0.5 std eps dz + 0.5 (std^2 - 1) / B
        dmu, dlogvar = self.dheads[:, :Z], self.dheads[:, Z:]
        np.multiply(mu, inv_B, out=dmu)
        np.add(dmu, self.dz, out=dmu)
        np.multiply(self.dz, eps, out=dlogvar)
        np.multiply(dlogvar, std, out=dlogvar)
        np.add(dlogvar, (std * std - 1.0) * inv_B, out=dlogvar)
        np.multiply(dlogvar, 0.5, out=dlogvar)
        np.matmul(h1.T, self.dheads, out=g["W_heads"])
        np.sum(self.dheads, axis=0, out=g["b_heads"])
        np.matmul(self.dheads, p["W_heads"].T, out=self.dh1)
        np.multiply(h1, h1, out=h1)
        np.subtract(1.0, h1, out=h1)
        np.multiply(self.dh1, h1, out=self.dh1)
        np.matmul(x.T, self.dh1, out=g["W1"])
        np.sum(self.dh1, axis=0, out=g["b1"])
        return (recon + kl) / self.B

    def adam(self, lr: float = 1e-3) -> None:
        """One Adam step on the flat buffers, with minivae's own update rule."""
        optim.step({"all": self.flat_params}, {"all": self.flat_grads}, self.adam_state, "adam", lr=lr)


def _views(flat, shapes: dict) -> dict:
    views, start = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        views[name] = flat[start:start + n].reshape(shape)
        start += n
    return views


def max_relative_gap(fused: FusedStep, reference_grads: dict) -> float:
    """The gradient checker's measure, max|fused - reference| / max|reference|, worst tensor."""
    return max(rel_error(got, reference_grads[name]) for name, got in fused.as_minivae(fused.g).items())

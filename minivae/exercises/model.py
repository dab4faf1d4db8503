"""The small model the derivation exercises are graded on: a 1-D latent, where every integral is exact.

It lives in a module of its own, with NumPy its only import, because the process that runs a
learner's answer builds one too (see ``sandbox``): the grader sends the numbers that define it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class SmallModel:
    """A VAE with a 1-D latent and 4 binary pixels, and a fixed q(z|x) = N(q_mean, exp(q_logvar)).

    p(z) = N(0, 1);  p(x|z) = prod_d Bernoulli(x_d; sigmoid(w_d * tanh(z) * 3 + b_d)). The tanh makes
    the true posterior p(z|x) non-Gaussian, so q cannot match it and KL(q || p(z|x)) > 0.
    Functions of z take arrays of any shape. ``z`` is a grid on [-15, 15] fine enough that the
    trapezoid rule is exact to about 1e-12 for every integrand here; ``integral(values)`` applies it.
    """
    x: tuple = (1.0, 0.0, 1.0, 1.0)
    w: tuple = (1.2, -0.7, 0.4, 2.0)
    b: tuple = (0.3, 0.1, -0.5, 0.2)
    q_mean: float = 0.6
    q_logvar: float = math.log(0.3)

    def __post_init__(self):
        self.z = np.linspace(-15.0, 15.0, 30001)
        self.dz = float(self.z[1] - self.z[0])

    def integral(self, values) -> float:
        """The trapezoid rule of ``values`` (on ``self.z``) over z."""
        v = np.asarray(values, dtype=np.float64)
        return float(self.dz * (np.sum(v) - 0.5 * (v[0] + v[-1])))

    def log_px_given_z(self, z):
        z = np.asarray(z, dtype=np.float64)
        logits = np.multiply.outer(3 * np.tanh(z), np.array(self.w)) + np.array(self.b)
        x = np.array(self.x)
        return np.sum(x * logits - np.logaddexp(0.0, logits), axis=-1)

    def px_given_z(self, z):
        return np.exp(self.log_px_given_z(z))

    def log_prior(self, z):
        z = np.asarray(z, dtype=np.float64)
        return -0.5 * (math.log(2 * math.pi) + z * z)

    def prior(self, z):
        return np.exp(self.log_prior(z))

    def log_q(self, z):
        z = np.asarray(z, dtype=np.float64)
        return -0.5 * (math.log(2 * math.pi) + self.q_logvar + (z - self.q_mean) ** 2 / math.exp(self.q_logvar))

    def q(self, z):
        return np.exp(self.log_q(z))

    def E_q(self, f) -> float:
        """E_{q(z|x)}[f(z)] by quadrature (``f`` takes the grid)."""
        return self.integral(self.q(self.z) * f(self.z))

    # the exact answers, by quadrature: the derivation chains use them as terms
    def log_px(self) -> float:
        """log p(x) = log of the integral of p(x|z) p(z) over z, computed stably."""
        a = self.log_px_given_z(self.z) + self.log_prior(self.z)
        top = float(np.max(a))
        v = np.exp(a - top)
        return top + math.log(self.dz * (float(np.sum(v)) - 0.5 * float(v[0] + v[-1])))

    def log_post(self, z):
        """log p(z|x) = log p(x|z) + log p(z) - log p(x) (Bayes)."""
        return self.log_px_given_z(z) + self.log_prior(z) - self.log_px()

    def kl_q_prior(self) -> float:
        """KL(q(z|x) || p(z)) in closed form."""
        var = math.exp(self.q_logvar)
        return 0.5 * (var + self.q_mean ** 2 - 1.0 - self.q_logvar)

    def spec(self) -> dict:
        """The numbers that define the model (what the grader sends to the process that builds it)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def random_model(rng: np.random.Generator) -> SmallModel:
    """A fresh model: random pixels, weights and q. q's variance stays in [0.2, 2] and its mean in
    [-1, 1], so that no density on the grid underflows (the smallest, q at z = 15, is about 1e-278):
    an answer run under ``np.seterr(all="raise")`` meets no floating-point error from the model."""
    x = tuple(float(v) for v in rng.integers(0, 2, 4))
    if len(set(x)) == 1:  # both pixel values, so that no term is trivially symmetric
        x = (1.0, 0.0) + x[2:]
    return SmallModel(x=x, w=tuple(float(v) for v in rng.uniform(-2.0, 2.0, 4)),
                      b=tuple(float(v) for v in rng.uniform(-0.5, 0.5, 4)),
                      q_mean=float(rng.uniform(-1.0, 1.0)),
                      q_logvar=float(np.log(rng.uniform(0.2, 2.0))))

"""The model's configuration, in one dataclass, validated when it is made."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

ACTIVATION_NAMES = ("tanh", "softplus", "relu")
LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")
VARIANCES = ("fixed", "shared", "per_pixel")
INITS = ("normal", "uniform", "glorot")


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and objective of a VAE (Kingma & Welling 2013, Appendix C).

    x_dim:      D, the data dimension (784 for 28x28 images).
    hidden:     widths of the hidden layers, any length, ``()`` for a linear encoder and decoder.
                The encoder is ``x_dim -> hidden[0] -> ... -> hidden[-1] -> z_dim``; the decoder
                mirrors it, ``z_dim -> hidden[-1] -> ... -> hidden[0] -> x_dim``.
    z_dim:      Z, the latent dimension.
    activation: ``"tanh"`` (the paper's), ``"softplus"`` or ``"relu"``.
    likelihood: ``"bernoulli"`` (C.1, on logits), ``"gaussian"`` (C.2) or ``"continuous_bernoulli"``.
    variance:   for ``"gaussian"`` only: ``"fixed"`` (variance ``sigma**2``, the "MSE" VAE),
                ``"shared"`` (one learned scalar ``dec.logvar``) or ``"per_pixel"`` (a learned
                ``dec.W_logvar, dec.b_logvar`` head beside the mean head, as in C.2).
    sigma:      the standard deviation of the fixed-variance Gaussian.
    n_samples:  L, Monte-Carlo samples of z per example.
    init:       ``"normal"`` (every parameter from N(0, init_std^2), the paper's N(0, 0.01) read as
                std 0.01), ``"uniform"`` (PyTorch's ``nn.Linear`` default, U(+-1/sqrt(fan_in))), or
                ``"glorot"`` (U(+-sqrt(6 / (fan_in + fan_out))), zero biases; the IWAE paper's).
    init_std:   the standard deviation of the ``"normal"`` init.
    beta:       the weight of the KL term in the training loss, ``recon + beta * KL`` (Higgins et al.
                2017's beta-VAE; 1 is the ELBO). ELBOs and bounds are always reported with beta = 1.
    free_bits:  lambda, nats per latent dimension (Kingma et al. 2016's free bits): the training loss
                charges each dimension's batch-mean KL as ``max(lambda, KL_j)``, so below lambda a
                unit's KL costs nothing and nothing pushes it to the prior. 0 is the ELBO.
    """

    x_dim: int
    hidden: tuple[int, ...] = (500,)
    z_dim: int = 20
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    variance: str = "fixed"
    sigma: float = 1.0
    n_samples: int = 1
    init: str = "normal"
    init_std: float = 0.01
    beta: float = 1.0
    free_bits: float = 0.0

    def __post_init__(self):
        hidden = self.hidden
        if isinstance(hidden, int) and not isinstance(hidden, bool):
            hidden = (hidden,)
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise ValueError(f"hidden: expected a tuple of layer widths such as (500,) or (), "
                             f"got {self.hidden!r}") from None
        # any integral or real type (np.int64(6), np.float32(0.5)) is stored as a Python int or float
        hidden = tuple(_positive_int(f"hidden[{i}]", width) for i, width in enumerate(hidden))
        object.__setattr__(self, "hidden", hidden)
        for name in ("x_dim", "z_dim", "n_samples"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        _one_of("activation", self.activation, ACTIVATION_NAMES)
        _one_of("likelihood", self.likelihood, LIKELIHOODS)
        _one_of("variance", self.variance, VARIANCES)
        _one_of("init", self.init, INITS)
        if self.likelihood != "gaussian" and self.variance != "fixed":
            raise ValueError(f"variance={self.variance!r} applies to likelihood='gaussian' only; "
                             f"got likelihood={self.likelihood!r}: drop the variance argument")
        for name in ("sigma", "init_std"):
            object.__setattr__(self, name, _real(name, getattr(self, name), "a positive finite number"))
        object.__setattr__(self, "beta", _real("beta", self.beta, "a finite KL weight >= 0 (1 is the ELBO)",
                                               positive=False))
        object.__setattr__(self, "free_bits", _real("free_bits", self.free_bits, "a finite number of nats "
                                                    ">= 0 per latent dimension (0 is the ELBO)", positive=False))

    @property
    def gaussian_variance(self) -> str | None:
        """The variance mode when the likelihood is Gaussian, else ``None``."""
        return self.variance if self.likelihood == "gaussian" else None

    @property
    def pixels_in_unit_interval(self) -> bool:
        """Bernoulli-type likelihoods are defined for x in [0, 1] only."""
        return self.likelihood in ("bernoulli", "continuous_bernoulli")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        if not isinstance(d, dict):
            raise ValueError(f"VAEConfig.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"VAEConfig: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _real(name: str, value, expected: str, positive: bool = True) -> float:
    """``value`` as a float if it is a finite real number, > 0 (or >= 0 when not ``positive``)."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value)
                                       and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return float(value)


def _one_of(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


# The CLI's likelihood modes: name -> (likelihood, variance).
LIKELIHOOD_MODES = {
    "bernoulli": ("bernoulli", "fixed"),
    "continuous_bernoulli": ("continuous_bernoulli", "fixed"),
    "gaussian": ("gaussian", "fixed"),
    "gaussian_shared": ("gaussian", "shared"),
    "gaussian_per_pixel": ("gaussian", "per_pixel"),
}

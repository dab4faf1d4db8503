"""The configurations: the model's (``VAEConfig``) and training's (``TrainConfig``), each a dataclass
checked when it is made (by checks.py), so that the code that uses one never checks it again."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .backend import resolve
from .checks import integer, one_of, real
from .core.optim import RULES
from .data import BINARIZE, DATASETS

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
        hidden = tuple(integer(f"hidden[{i}]", width, 1, "a positive integer")
                       for i, width in enumerate(hidden))
        object.__setattr__(self, "hidden", hidden)
        for name in ("x_dim", "z_dim", "n_samples"):
            object.__setattr__(self, name, integer(name, getattr(self, name), 1, "a positive integer"))
        one_of("activation", self.activation, ACTIVATION_NAMES)
        one_of("likelihood", self.likelihood, LIKELIHOODS)
        one_of("variance", self.variance, VARIANCES)
        one_of("init", self.init, INITS)
        if self.likelihood != "gaussian" and self.variance != "fixed":
            raise ValueError(f"variance={self.variance!r} applies to likelihood='gaussian' only; "
                             f"got likelihood={self.likelihood!r}: drop the variance argument")
        for name in ("sigma", "init_std"):
            object.__setattr__(self, name, real(name, getattr(self, name), "a positive finite number"))
        object.__setattr__(self, "beta", real("beta", self.beta, "a finite KL weight >= 0 (1 is the ELBO)",
                                               positive=False))
        object.__setattr__(self, "free_bits", real("free_bits", self.free_bits, "a finite number of nats "
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


# The CLI's likelihood modes: name -> (likelihood, variance).
LIKELIHOOD_MODES = {
    "bernoulli": ("bernoulli", "fixed"),
    "continuous_bernoulli": ("continuous_bernoulli", "fixed"),
    "gaussian": ("gaussian", "fixed"),
    "gaussian_shared": ("gaussian", "shared"),
    "gaussian_per_pixel": ("gaussian", "per_pixel"),
}


MAX_KEEP = 100  # checkpoints kept; each is a whole copy of the model and its optimizer state
MAX_THREADS = 1024  # more BLAS threads than cores only wait for each other


@dataclass
class TrainConfig:
    """How to train. ``lr=None`` takes the optimizer's default (Adam 1e-3, Adagrad/SGD 1e-2).

    ``backend="auto"`` is resolved when the config is made (cupy where usable, else numpy).
    ``sync_every``: the step's loss and statistics stay on the device and are read back to the host
    every this many steps (and before every checkpoint), where the NaN guard looks at them: on a GPU
    each read stalls the pipeline, so a step itself never reads anything back.
    ``kl_warmup``: epochs over which the KL weight rises linearly from 0 to the model's ``beta``
    (Bowman et al. 2016; Sonderby et al. 2016); 0 means no warm-up.
    ``keep``: checkpoints kept, the newest and ``keep - 1`` before it, so that one damaged file
    never costs the run.
    """
    dataset: str = "digits"
    epochs: int = 50
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float | None = None
    weight_decay: float = 0.0
    opt_eps: float | None = None
    binarize: str = "none"
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float32"
    max_steps: int | None = None
    data_dir: str | None = None
    threads: int | None = None
    sync_every: int = 25
    kl_warmup: float = 0.0
    keep: int = 2

    def __post_init__(self):
        one_of("dataset", self.dataset, DATASETS)
        if self.optimizer not in RULES:
            raise ValueError(f"optimizer: expected one of {sorted(RULES)}, got {self.optimizer!r}")
        one_of("binarize", self.binarize, BINARIZE)
        for name in ("epochs", "batch_size", "sync_every", "keep"):
            setattr(self, name, integer(name, getattr(self, name), low=1))
        if self.threads is not None and self.threads > MAX_THREADS:
            raise ValueError(f"threads: expected an integer <= {MAX_THREADS} (more threads than cores only "
                             f"wait for each other), got {self.threads:,}")
        if self.keep > MAX_KEEP:
            raise ValueError(f"keep: expected an integer <= {MAX_KEEP} (each checkpoint is a whole copy "
                             f"of the model and its optimizer state), got {self.keep:,}")
        self.seed = integer("seed", self.seed, low=0)
        for name in ("max_steps", "threads"):
            if getattr(self, name) is not None:
                setattr(self, name, integer(name, getattr(self, name), low=1))
        if self.lr is not None:
            self.lr = real("lr", self.lr, "a positive learning rate")
        if self.opt_eps is not None:
            self.opt_eps = real("opt_eps", self.opt_eps, "a positive epsilon such as 1e-8")
        self.weight_decay = real("weight_decay", self.weight_decay, "0 or a positive number (1/N_train "
                                 "is the paper's prior)", positive=False)
        self.kl_warmup = real("kl_warmup", self.kl_warmup, "0 (no warm-up) or a number of epochs",
                              positive=False)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir: expected a folder name or None, got {self.data_dir!r}")
        if self.data_dir is not None:  # run.json must not depend on the folder it was started in
            self.data_dir = os.path.abspath(self.data_dir)
        self.backend = resolve(self.backend)

    def hyper(self) -> dict:
        """The optimizer's hyperparameters for ``optim.step``."""
        h = {"weight_decay": self.weight_decay}
        if self.lr is not None:
            h["lr"] = self.lr
        if self.opt_eps is not None:
            h["eps"] = self.opt_eps
        return h

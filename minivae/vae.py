"""The public API: each function checks its inputs once (checks.py), then calls the core
(core/model.py, core/bounds.py), which never checks. Same arguments and results as the core; bad
input raises one ValueError that says what is wrong and how to fix it.

Shapes: B examples, D = x_dim, Z = z_dim, L = n_samples. Parameters are a flat
``dict[str, array]``; ``param_shapes(cfg)`` lists every name and shape. The math, with its
docstrings, is in ``minivae.core.model``; ``backward``, ``likelihood_mean``, ``param_shapes``,
``n_parameters`` and ``relu_masks`` are the core's own (a cache or a config has nothing to check).
"""

from __future__ import annotations

from .backend import dtype_name, resolve
from .checks import importance_samples, params_like, same_backend, validate_data, validate_eps, validate_z
from .config import INITS, VAEConfig
from .core import bounds, model
from .core.model import backward, likelihood_mean, n_parameters, param_shapes, relu_masks
from .memory import itemsize, require_on

__all__ = ["VAEConfig", "param_shapes", "n_parameters", "init_params", "encode", "decode",
           "log_likelihood", "likelihood_mean", "forward", "backward", "loss_and_grads", "evaluate",
           "relu_masks", "validate_config", "validate_params", "validate_inputs", "validate_data"]


def validate_config(cfg) -> None:
    """Raise ValueError unless ``cfg`` is a VAEConfig."""
    if not isinstance(cfg, VAEConfig):
        raise ValueError(f"cfg: expected a VAEConfig, got {type(cfg).__name__}; make one with "
                         f"VAEConfig(x_dim=...), or VAEConfig.from_dict(d) from a dict")


def validate_params(params: dict, cfg: VAEConfig) -> None:
    """Raise ValueError unless ``params`` has exactly the names and shapes of ``cfg``, in one float
    dtype and one backend, with finite values."""
    validate_config(cfg)
    params_like(params, param_shapes(cfg))


def validate_inputs(params, cfg, **arrays) -> str:
    """The checks of the public entry points: ``params`` against ``cfg`` (names, shapes, one float dtype,
    one backend, finite) and each named array on the same backend. Returns the parameters' dtype."""
    validate_params(params, cfg)
    same_backend(params, *arrays.items())
    return dtype_name(next(iter(params.values())))


def init_params(cfg: VAEConfig, seed: int = 0, backend: str = "numpy", dtype: str = "float32",
                init: str | None = None) -> dict:
    """``core.model.init_params``, refused (TooBig) when the parameters cannot fit in memory."""
    scheme = cfg.init if init is None else init
    backend = resolve(backend)
    n = n_parameters(cfg)  # drawn in float64 on the host, then copied in dtype
    require_on(backend, 8 * n, n * itemsize(dtype), f"the {n:,} parameters of this model",
               "choose smaller hidden widths or z_dim")
    if scheme not in INITS:
        raise ValueError(f"init: expected 'normal', 'uniform' or 'glorot', got {scheme!r}")
    return model.init_params(cfg, seed, backend, dtype, init)


def encode(params: dict, x, cfg: VAEConfig):
    """q(z|x): x (B, D) -> ``(mu, logvar)``, each (B, Z); ``logvar`` is log sigma^2."""
    validate_data(x, cfg, validate_inputs(params, cfg, x=x))
    return model.encode(params, x, cfg)


def decode(params: dict, z, cfg: VAEConfig) -> dict:
    """p(x|z)'s parameters for z of shape (N, Z) or (L, B, Z): ``{"logits"}`` or ``{"mean", "logvar"}``."""
    validate_z(z, cfg, validate_inputs(params, cfg, z=z))
    return model.decode(params, z, cfg)


def log_likelihood(params: dict, x, z, cfg: VAEConfig):
    """log p(x|z) for x (B, D) and z (L, B, Z): returns (L, B)."""
    dtype = validate_inputs(params, cfg, x=x)
    validate_data(x, cfg, dtype)
    same_backend(params, ("z", z))
    validate_z(z, cfg, dtype)
    return model.log_likelihood(params, x, z, cfg)


def _check_loss_inputs(params, x, eps, cfg) -> None:
    dtype = validate_inputs(params, cfg, x=x, eps=eps)
    validate_data(x, cfg, dtype)
    validate_eps(eps, cfg, x.shape[0], dtype)


def forward(params: dict, x, eps, cfg: VAEConfig):
    """The negative ELBO: ``(loss, cache, stats)``, with the loss and stats left on the device."""
    _check_loss_inputs(params, x, eps, cfg)
    return model.forward(params, x, eps, cfg)


def loss_and_grads(params: dict, x, eps, cfg: VAEConfig):
    """The negative ELBO and its gradient: ``(loss, grads, stats)``, the loss and stats as floats."""
    _check_loss_inputs(params, x, eps, cfg)
    return model.loss_and_grads(params, x, eps, cfg)


def evaluate(params, x, cfg, rng, k: int = 0, batch_size: int = 500, chunk: int = 100,
             iwae_rng=None, on_batch=None) -> dict:
    """``core.bounds.evaluate`` (ELBO, recon, KL, active units, L_k) after checking params and x."""
    importance_samples(k)
    validate_data(x, cfg, validate_inputs(params, cfg, x=x))
    return bounds.evaluate(params, x, cfg, rng, k, batch_size, chunk, iwae_rng, on_batch)

"""minivae: a Variational Autoencoder from scratch, with hand-written and gradient-checked backprop.

    from minivae import VAEConfig, init_params, loss_and_grads
"""

from .config import VAEConfig
from .vae import (
    backward,
    decode,
    encode,
    evaluate,
    forward,
    init_params,
    likelihood_mean,
    log_likelihood,
    loss_and_grads,
    param_shapes,
)

__version__ = "0.2.0"  # 0.2: checkpoints are one safetensors file (0.1 wrote an .npz + .json pair)

__all__ = ["VAEConfig", "init_params", "loss_and_grads", "encode", "decode", "forward", "evaluate",
           "backward", "likelihood_mean", "log_likelihood", "param_shapes", "__version__"]

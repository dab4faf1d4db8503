"""Exercise: the whole VAE's backward pass (Bernoulli decoder, one tanh hidden layer, L samples).

Forward (minivae.core.model.forward), for the config the grader uses
(VAEConfig(x_dim=5, hidden=(4,), z_dim=2, n_samples=3)):

    encoder:  a = x @ enc.W0 + enc.b0;  h = tanh(a)
              mu = h @ enc.W_mu + enc.b_mu;   logvar = h @ enc.W_logvar + enc.b_logvar
    sample:   z = mu + exp(0.5 logvar) * eps                      (L, B, Z) -> reshaped to (L*B, Z)
    decoder:  a' = z @ dec.W0 + dec.b0;  h' = tanh(a');  logits = h' @ dec.W_out + dec.b_out
    loss:     mean over B of [ -(1/L) sum_l log p(x | logits_l) + KL(q(z|x) || p(z)) ]

The cache is the tuple forward() builds; unpack it as below. You may call the library's layer
backward functions (linear_backward, tanh_backward, reparameterize_backward, gaussian_kl_backward,
bernoulli_log_prob_backward): the exercise is to wire them together in the right order, with the
right upstream gradients, adding where a value is used twice.

Check your answer:  python -m minivae.exercises check vae
"""

import numpy as np  # noqa: F401

from minivae.core.distributions import (  # noqa: F401
    bernoulli_log_prob_backward, gaussian_kl_backward, reparameterize_backward,
)
from minivae.core.layers import linear_backward, tanh_backward  # noqa: F401


def vae_backward(cache, cfg):
    """Returns a dict with the gradient of the loss for every parameter name (same shapes)."""
    x, (L, B, Z), enc_cache, rep_cache, dec_cache, lik_cache, kl_cache = cache
    (enc_layers, mu_cache, logvar_cache) = enc_cache        # enc_layers: [(linear cache, tanh cache)]
    (dec_layers, out_cache, _) = dec_cache                  # dec_layers: [(linear cache, tanh cache)]
    grads = {}
    # START OF YOUR CODE
    # END OF YOUR CODE
    return grads

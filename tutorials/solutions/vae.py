"""Worked solution: the whole VAE's backward pass (Bernoulli decoder, one tanh hidden layer, L samples).

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
    n_layers = len(enc_layers)
    # d loss / d log p(x|z_lb) = -1/(L B) (the loss averages over samples and examples);
    # d loss / d KL_b = beta / B
    dlogp = np.full((L, B), -1.0 / (L * B))
    dkl = np.full((B,), cfg.beta / B)

    # 1. the likelihood head: logits = h' @ W_out + b_out, reshaped to (L, B, D)
    dlogits = bernoulli_log_prob_backward(dlogp, lik_cache)                    # (L, B, D)
    dh, grads["dec.W_out"], grads["dec.b_out"] = linear_backward(dlogits.reshape(L * B, -1), out_cache)

    # 2. the decoder trunk, last layer first: tanh, then the linear layer that fed it
    for i in reversed(range(n_layers)):
        lin_cache, act_cache = dec_layers[i]
        da = tanh_backward(dh, act_cache)
        dh, grads[f"dec.W{i}"], grads[f"dec.b{i}"] = linear_backward(da, lin_cache)
    dz = dh.reshape(L, B, Z)                                                   # the decoder's input is z

    # 3. the encoder heads: mu and logvar feed both the sample z and the KL, so the two gradients add
    dmu, dlogvar = reparameterize_backward(dz, rep_cache)
    dmu_kl, dlogvar_kl = gaussian_kl_backward(dkl, kl_cache)
    dmu = dmu + dmu_kl
    dlogvar = dlogvar + dlogvar_kl
    dh_mu, grads["enc.W_mu"], grads["enc.b_mu"] = linear_backward(dmu, mu_cache)
    dh_lv, grads["enc.W_logvar"], grads["enc.b_logvar"] = linear_backward(dlogvar, logvar_cache)

    # 4. the encoder trunk: h feeds both heads, so dh is their sum
    dh = dh_mu + dh_lv
    for i in reversed(range(n_layers)):
        lin_cache, act_cache = enc_layers[i]
        da = tanh_backward(dh, act_cache)
        dh, grads[f"enc.W{i}"], grads[f"enc.b{i}"] = linear_backward(da, lin_cache)
    # END OF YOUR CODE
    return grads

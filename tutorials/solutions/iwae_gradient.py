"""Worked solution: the importance-weighted bound's gradient, and the weight it gives each sample.

For one example and K draws z_k = mu + sigma * eps_k, the log importance weights are
log w_k = log p(x, z_k) - log q(z_k|x), and the bound is

    L_K = log (1/K) sum_k exp(log w_k).

Derive, on paper first, the gradient of L_K with respect to each log-weight, d L_K / d log w_k.
(Write a_k = log w_k: what is d/da_k of log sum_j exp(a_j)? Where does the 1/K go?) By the chain
rule the bound's gradient with respect to any parameter is then

    grad L_K = sum_k (d L_K / d log w_k) * grad log w_k,

so your answer is the weight each sample gets in the gradient. Compare it with the ELBO's estimate
(1/K) sum_k log w_k, whose gradient gives every sample the same weight 1/K.

    log_w: (K, B), K samples for each of B examples      returns: (K, B), d L_K / d log_w

Write it so it works for any log-weights (near +-1e4, or spread over thousands within a column).

The grader compares your answer with finite differences of L_K itself, then at extreme log-weights;
then checks that each column sums to 1, and uses your weights to compute the bound's gradient with
respect to q's mean on a model with a 1-D latent, against finite differences of L_16 in that mean.

Check your answer:  python -m minivae.exercises check iwae_gradient
"""

import numpy as np  # noqa: F401


def iwae_weights(log_w):
    """d L_K / d log_w[k] per column, for any log-weights: (K, B) -> (K, B)."""
    # START OF YOUR CODE
    # L_K = log sum_k exp(a_k) - log K; d/da_k = exp(a_k) / sum_j exp(a_j): a softmax over axis 0.
    # Shifting each column by its max changes neither the ratio nor the result, and nothing overflows
    w = np.exp(log_w - np.max(log_w, axis=0, keepdims=True))
    weights = w / np.sum(w, axis=0, keepdims=True)
    # END OF YOUR CODE
    return weights

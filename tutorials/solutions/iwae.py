"""Worked solution: the importance-weighted bound (Burda et al. 2015), computed without overflow.

For one example and K draws z_k ~ q(z|x), the log importance weights are
log w_k = log p(x, z_k) - log q(z_k|x), and the bound is

    L_K = log (1/K) sum_k w_k = log mean_k exp(log w_k)   <=   log p(x).

log w is often around -100 or -1e4 (a log-likelihood summed over 784 pixels): exp of that is 0 or inf
in float64, so a direct exp, mean, log fails. Write it so it works for any log-weights.

    log_w: (K, B), K samples for each of B examples      returns: (B,), L_K per example

The grader feeds log-weights near +1e4 and -1e4, checks L_1 = log w (the one-sample ELBO estimate),
and that the average L_K over many draws rises with K towards log p(x) on a model where log p(x) is
known exactly.

Check your answer:  python -m minivae.exercises check iwae
"""

import numpy as np  # noqa: F401


def iwae_bound(log_w):
    """L_K = log mean_k exp(log_w[k]) per column, for any log-weights: (K, B) -> (B,)."""
    # START OF YOUR CODE
    # log mean_k exp(a_k) = m + log mean_k exp(a_k - m) for any m; with m = each column's max, the
    # largest term is exp(0) = 1: nothing overflows, and the sum is at least 1 (no log of 0)
    m = np.max(log_w, axis=0)                               # (B,)
    bound = m + np.log(np.mean(np.exp(log_w - m), axis=0))  # reduce over the K samples
    # END OF YOUR CODE
    return bound

"""Exercise: the gradient of the Gaussian log-likelihood with a learned log-variance (the paper's C.2).

Forward (minivae.core.distributions.gaussian_log_prob_forward):
    log N(x; mean, exp(logvar)) = -0.5 * sum_d [log(2 pi) + logvar_d + (x_d - mean_d)^2 * exp(-logvar_d)]
    x: (B, D)   mean, logvar: (L, B, D)   logp: (L, B)   (x broadcasts over the L samples)
    cache = (diff, inv_var) with diff = x - mean and inv_var = exp(-logvar)

Check your answer:  python -m minivae.exercises check gaussian
"""


def gaussian_log_prob_backward(dlogp, cache):
    """dlogp: (L, B). Returns (dmean, dlogvar), each (L, B, D)."""
    diff, inv_var = cache
    dlogp = dlogp[..., None]  # (L, B, 1): broadcasts over the pixels
    # START OF YOUR CODE
    dmean = dlogvar = None
    # END OF YOUR CODE
    return dmean, dlogvar

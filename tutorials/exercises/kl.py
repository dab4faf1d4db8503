"""Exercise: the backward pass of the analytic KL term.

Forward (minivae.core.distributions.gaussian_kl_forward):
    KL(N(mu, diag(exp(logvar))) || N(0, I)) = 0.5 * sum_j (exp(logvar_j) + mu_j^2 - 1 - logvar_j)
    mu, logvar: (B, Z)   kl: (B,)   cache = (mu, var) with var = exp(logvar)

Check your answer:  python -m minivae.exercises check kl
"""


def gaussian_kl_backward(dkl, cache):
    """dkl: (B,), the gradient of the loss with respect to each example's KL.

    Returns (dmu, dlogvar), each (B, Z).
    """
    mu, var = cache
    dkl = dkl[:, None]  # (B, 1): broadcasts over the latent dimensions
    # START OF YOUR CODE
    dmu = dlogvar = None
    # END OF YOUR CODE
    return dmu, dlogvar

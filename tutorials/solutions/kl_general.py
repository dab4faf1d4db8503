"""Worked solution: the KL divergence between two diagonal Gaussians, in closed form.

    KL(q || p) = E_q[log q(z) - log p(z)],   q = N(mu_q, diag(exp(logvar_q))),  p = N(mu_p, diag(exp(logvar_p)))

The VAE's KL term is the special case p = N(0, I) (minivae.core.distributions.gaussian_kl_forward); here
p is any diagonal Gaussian, as in a VAE with a learned prior or in the KL between two encoders.
logvar is log sigma^2, the log of the *variance*, everywhere.

    mu_q, logvar_q, mu_p, logvar_p: (B, Z)     returns: (B,), one KL per row (summed over Z)

The grader compares your closed form with numerical integration (each dimension on a fine grid) to
1e-8, and prints a Monte-Carlo estimate with its standard error beside it.

Check your answer:  python -m minivae.exercises check kl_general
"""

import numpy as np  # noqa: F401


def kl_diag_gaussians(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per row: (B, Z) inputs -> (B,)."""
    # START OF YOUR CODE
    # per dimension: E_q[log q - log p] with both Gaussian log-densities written out, and
    # E_q[(z - mu_p)^2] = var_q + (mu_q - mu_p)^2
    var_q, var_p = np.exp(logvar_q), np.exp(logvar_p)
    per_dim = 0.5 * (logvar_p - logvar_q + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0)
    kl = per_dim.sum(axis=-1)   # a diagonal Gaussian's dimensions are independent: the KLs add
    # END OF YOUR CODE
    return kl

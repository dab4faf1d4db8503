"""Worked solution: the backward pass of the reparameterized sample.

Forward (minivae.core.distributions.reparameterize_forward):
    std = exp(0.5 * logvar)          logvar is log sigma^2, the log of the *variance*
    z = mu + std * eps               cache = (std, eps)
    mu, logvar: (B, Z)   eps: (L, B, Z)   z: (L, B, Z)   (broadcast over the L samples)

Check your answer:  python -m minivae.exercises check reparameterize
"""

import numpy as np  # noqa: F401  (the grader passes NumPy arrays)


def reparameterize_backward(dz, cache):
    """dz: (L, B, Z), the gradient of the loss with respect to z.

    Returns (dmu, dlogvar), each (B, Z).
    """
    std, eps = cache
    # START OF YOUR CODE
    # z = mu + std * eps with std = exp(0.5 * logvar); mu and logvar are shared by all L samples
    dmu = dz.sum(axis=0)                          # dz/dmu = 1; sum the L samples -> (B, Z)
    dlogvar = (dz * eps * 0.5 * std).sum(axis=0)  # dz/dlogvar = eps * d std / d logvar = eps * 0.5 std
    # END OF YOUR CODE
    return dmu, dlogvar

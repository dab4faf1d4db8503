"""Exercise: the backward pass of the reparameterized sample.

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
    dmu = dlogvar = None
    # END OF YOUR CODE
    return dmu, dlogvar

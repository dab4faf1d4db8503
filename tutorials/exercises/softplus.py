"""Exercise: the backward pass of softplus.

Forward (minivae.core.layers.softplus_forward):   h = log(1 + exp(a)),   cache = a     (any shape)
You may use minivae.core.layers.sigmoid, which is stable for any a.

Check your answer:  python -m minivae.exercises check softplus
"""

from minivae.core.layers import sigmoid  # noqa: F401  (you may need it)


def softplus_backward(dh, cache):
    """dh: the gradient of the loss with respect to h (shape of a). Returns da (shape of a)."""
    a = cache
    # START OF YOUR CODE
    da = None
    # END OF YOUR CODE
    return da

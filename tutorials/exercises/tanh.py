"""Exercise: the backward pass of tanh.

Forward (minivae.core.layers.tanh_forward):   h = tanh(a),   cache = h     (any shape)

Check your answer:  python -m minivae.exercises check tanh
"""


def tanh_backward(dh, cache):
    """dh: the gradient of the loss with respect to h (shape of a). Returns da (shape of a)."""
    h = cache
    # START OF YOUR CODE
    da = None
    # END OF YOUR CODE
    return da

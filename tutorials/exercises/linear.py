"""Exercise: the backward pass of a linear layer.

Forward (minivae.core.layers.linear_forward):   y = x @ W + b,   cache = (x, W)
    x: (N, D)   W: (D, M)   b: (M,)   y: (N, M)

Check your answer:  python -m minivae.exercises check linear
"""


def linear_backward(dy, cache):
    """Gradients of a scalar loss with respect to x, W and b.

    dy: (N, M), the gradient of the loss with respect to y.
    Returns (dx, dW, db) with shapes (N, D), (D, M), (M,).
    """
    x, W = cache
    # START OF YOUR CODE
    dx = dW = db = None
    # END OF YOUR CODE
    return dx, dW, db

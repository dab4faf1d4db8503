"""Worked solution: the backward pass of a linear layer.

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
    # y = x @ W + b, so each gradient is a product with dy, shaped like what it differentiates:
    dx = dy @ W.T          # (N, M) @ (M, D) -> (N, D): every output y_nm depends on x_n through W
    dW = x.T @ dy          # (D, N) @ (N, M) -> (D, M): sums over the N rows, each used once
    db = dy.sum(axis=0)    # b is added to every row of y: collect dy from all N rows -> (M,)
    # END OF YOUR CODE
    return dx, dW, db

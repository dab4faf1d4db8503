"""Exercise: the gradient of the Bernoulli log-likelihood with respect to the logits.

Forward (minivae.core.distributions.bernoulli_log_prob_forward):
    log p(x | logits) = sum_d [x_d * logits_d - softplus(logits_d)]     (= x log y + (1-x) log(1-y), y = sigmoid(logits))
    x: (B, D)   logits: (L, B, D)   logp: (L, B)
    cache = (x, logits, e) with e = exp(-|logits|), which the forward pass already computed
You may use minivae.core.layers.sigmoid (sigmoid(logits), or sigmoid(logits, e) to reuse e).

Check your answer:  python -m minivae.exercises check bernoulli
"""

from minivae.core.layers import sigmoid  # noqa: F401  (you may need it)


def bernoulli_log_prob_backward(dlogp, cache):
    """dlogp: (L, B), the gradient of the loss with respect to each log p. Returns dlogits (L, B, D)."""
    x, logits, e = cache
    # START OF YOUR CODE
    dlogits = None
    # END OF YOUR CODE
    return dlogits

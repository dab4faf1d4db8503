"""Worked solution: the score-function (REINFORCE) estimator of a gradient the reparameterized one also gives.

We want the gradient of E_{z ~ q}[f(z)] with respect to the parameters of q = N(mu, diag(exp(logvar))).
The reparameterization trick writes z = mu + exp(0.5 logvar) eps and differentiates f. The score
function (log-derivative) trick needs no derivative of f at all:

    grad E_q[f(z)] = E_q[f(z) * grad log q(z)]

Write the per-sample estimates f(z_n) * d log q(z_n) / d mu and f(z_n) * d log q(z_n) / d logvar.

    f_z: (N,) the values f(z_n)      z: (N, Z) draws from q      mu, logvar: (Z,)
    returns (dmu, dlogvar), each (N, Z): one estimate per draw (the grader averages them)

The grader draws 100,000 fresh samples for each of two functions f it does not tell you: a smooth
one, and a step function, whose derivative is 0 wherever it exists (there the reparameterized
estimator, which differentiates f, sees nothing). It checks that your estimates are unbiased (their
mean within 5 standard errors of the exact gradient; the textbook's per-sample estimate is accepted
exactly) and prints how much larger their variance is than the reparameterized estimator's.

Check your answer:  python -m minivae.exercises check score_function
"""

import numpy as np  # noqa: F401


def score_function_gradient(f_z, z, mu, logvar):
    """Per-sample score-function estimates of d E_q[f] / d mu and d E_q[f] / d logvar."""
    # START OF YOUR CODE
    # log q(z) = -0.5 (log 2 pi + logvar + (z - mu)^2 exp(-logvar)), per dimension
    var = np.exp(logvar)
    dmu = f_z[:, None] * (z - mu) / var                            # f(z) * d log q / d mu
    dlogvar = f_z[:, None] * 0.5 * ((z - mu) ** 2 / var - 1.0)     # f(z) * d log q / d logvar
    # END OF YOUR CODE
    return dmu, dlogvar

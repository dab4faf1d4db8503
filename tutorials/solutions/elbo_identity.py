"""Worked solution: the ELBO identity, log p(x) = ELBO + KL(q(z|x) || p(z|x)), computed on a model you can
integrate exactly.

The model (minivae.exercises.derivations.SmallModel, passed to you as `model`) has a 1-D latent z,
the prior p(z) = N(0, 1), four binary pixels x with p(x|z) Bernoulli, and a fixed approximate
posterior q(z|x) = N(model.q_mean, exp(model.q_logvar)). Because z is one-dimensional, every
integral over z can be done on a grid:

    model.z                  the grid, 30001 points on [-15, 15]; model.dz its spacing
    model.log_px_given_z(z)  log p(x|z) for an array of z      model.px_given_z(z)  p(x|z)
    model.log_prior(z)       log p(z)                          model.prior(z)       p(z)
    model.log_q(z)           log q(z|x)                        model.q(z)           q(z|x)
    model.integral(values)   the integral over z of values given on the grid (trapezoid rule)
    model.E_q(f)             E_q[f(z)] = model.integral(model.q(model.z) * f(model.z))

Write the three numbers below with these (not with model.log_px or model.log_post, which are the
answers). The grader checks each against its own quadrature to 1e-8, and that
log p(x) = ELBO + KL(q || p(z|x)) holds to 1e-8.

Check your answer:  python -m minivae.exercises check elbo_identity
"""

import numpy as np  # noqa: F401


def log_px(model):
    """log p(x) = log of the integral of p(x|z) p(z) over z. Returns a float."""
    # START OF YOUR CODE
    # log of the integral of p(x|z) p(z) dz on the grid, in log space: shift by the max so that
    # exp never underflows to 0 everywhere
    a = model.log_px_given_z(model.z) + model.log_prior(model.z)
    top = np.max(a)
    value = float(top + np.log(model.integral(np.exp(a - top))))
    # END OF YOUR CODE
    return value


def elbo(model):
    """The ELBO, E_q[log p(x|z)] - KL(q(z|x) || p(z)). Returns a float."""
    # START OF YOUR CODE
    # ELBO = E_q[log p(x|z) + log p(z) - log q(z|x)], by quadrature under q
    value = model.E_q(lambda z: model.log_px_given_z(z) + model.log_prior(z) - model.log_q(z))
    # END OF YOUR CODE
    return value


def kl_to_posterior(model):
    """KL(q(z|x) || p(z|x)), where p(z|x) = p(x|z) p(z) / p(x) (you may call log_px(model)). A float."""
    # START OF YOUR CODE
    # KL(q || p(z|x)) = E_q[log q - log p(z|x)], with Bayes' rule for the posterior
    lp = log_px(model)
    value = model.E_q(lambda z: model.log_q(z) - (model.log_px_given_z(z) + model.log_prior(z) - lp))
    # END OF YOUR CODE
    return value

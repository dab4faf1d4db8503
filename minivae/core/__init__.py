"""The algorithm a learner studies: arrays and configs in, arrays out.

    layers.py         linear, tanh, softplus, relu, sigmoid: forward -> (out, cache); backward(dout, cache)
    distributions.py  the reparameterized sample, the analytic KL, the likelihoods' log-densities and
                      their table (name -> heads, forward, backward, mean)
    model.py          parameter shapes and init, encoder and decoder, the negative ELBO's forward and
                      backward
    bounds.py         the ELBO, the importance-weighted bound L_k, active units, evaluate over a data set
    optim.py          sgd, momentum, adagrad, adam: update(w, dw, config) -> (w, config)
    gradcheck.py      numerical gradients, the relative error, layer and whole-model checks

Nothing here checks its inputs, reads or writes files, probes memory or shows progress: the public
API (``minivae.vae``) and training check once, then call these functions (training through
``minivae.optim``, which runs these rules in cache-sized pieces or as one flat buffer).
"""

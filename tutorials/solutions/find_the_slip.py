"""Worked solution: find the slips in a derivation by checking every step with numbers.

A derivation is a chain of expressions that should all be equal. The checker reads each step's text,
computes its value on a small model on which every term is exact, and reports the first step whose
value differs from the step before it: that is where the slip is. The value comes from the text, so
a step cannot say one thing and compute another.

The model (minivae.exercises.model.SmallModel) has a 1-D latent, so every expectation is a
quadrature. A step's text may use these words (brackets [ ] or ( ) alike):

    p(x|z)   p(z)   p(x, z)   p(z|x)   p(x)   q(z|x) (or q)     the densities; p_prior(z) = p(z)
    log p(z)   log(p(x|z) p(z))   exp(...)   + - * /   numbers   log takes the next term or bracket
    E_q[...]   E_{q(z|x)}[...]   int ... dz                    an expectation under q, an integral
    KL(q || p(z))   D_KL(q(z|x) || p(z|x))   ELBO               KL of densities over z

so "= -int log p(z|x) q(z|x) dz" reads as the integral of log p(z|x) times q(z|x). "log p(x, z) / q"
can be read two ways, and the checker asks you to write log(p(x, z) / q) or log p(x, z) - log q.

NOTES_DERIVATION below is a derivation of the ELBO from lecture notes that learners asked about,
transcribed step by step exactly as written there, slips included; beside each text is what the
notes meant it to compute. Run

    python -m minivae.exercises check find_the_slip

to see where each of its three chains first goes wrong. Then write the three chains correctly in
my_chains(): each must start where the notes' does and hold at every step (at least 3 steps each).
You can check any chain of your own the same way, e.g. in a notebook:

    from minivae.exercises import check_chain
    check_chain(["log p(x)", "= E_q[log p(x|z)] - KL(q || p(z)) + KL(q || p(z|x))"])

Two of the notes' slips cannot be computed and so are not in the chains: in its third chain it writes
log q_phi(x|z), the arguments of q swapped (q is a distribution over z given x), and its gradient line
writes grad_phi inside the grad_theta equation (tutorial 1 discusses both).
"""

NOTES_DERIVATION = {
    # D_KL(q(z|x) || p(z|x)) expanded with Bayes' rule
    "kl_expansion": [
        ("D_KL(q(z|x) || p(z|x))",
         lambda m: m.E_q(lambda z: m.log_q(z) - m.log_post(z))),
        ("= -E_q[log(p(z|x) / q(z|x))]",
         lambda m: -m.E_q(lambda z: m.log_post(z) - m.log_q(z))),
        ("= -int log p(z|x) q(z|x) dz + int log q(z|x) q(z|x) dz",
         lambda m: -m.E_q(m.log_post) + m.E_q(m.log_q)),
        ("= -int log[p(x|z) p_prior(z) / p(x)] q(z|x) dz + int log q(z|x) q(z|x) dz",
         lambda m: -m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_px()) + m.E_q(m.log_q)),
        ("= -E_q(log p(x|z)) - E_q(p_prior(z)) + log p(x) + E_q(log q(z|x))",
         lambda m: -m.E_q(m.log_px_given_z) - m.E_q(m.prior) + m.log_px() + m.E_q(m.log_q)),
    ],
    # "It follows that we can express the log-likelihood as ..."
    "log_likelihood": [
        ("log p(x)",
         lambda m: m.log_px()),
        ("= E_q(log p(x|z)) + E_q(p_prior(z)) - E_q(log q(z|x)) + D_KL(q(z|x) || p(z|x))",
         lambda m: m.E_q(m.log_px_given_z) + m.E_q(m.prior) - m.E_q(m.log_q)
         + m.E_q(lambda z: m.log_q(z) - m.log_post(z))),
        ("= E_q(p(x|z)) + D_KL(q(z|x) || p_prior(z)) + D_KL(q(z|x) || p(z|x))",
         lambda m: m.E_q(m.px_given_z) + m.kl_q_prior() + m.E_q(lambda z: m.log_q(z) - m.log_post(z))),
    ],
    # "Rewriting p(x, z) = p(x|z) p_prior(z) ... we get ELBO = ..."
    "elbo": [
        ("ELBO = E_q(log p(x, z) / q(z|x))",
         lambda m: m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))),
        ("= E_q(log p(x|z)) - E_q(q(z|x)) + E_q(log p_prior(z))",
         lambda m: m.E_q(m.log_px_given_z) - m.E_q(m.q) + m.E_q(m.log_prior)),
        ("= E_q(log p(x|z)) + E_q(log(log p_prior(z) / log q(z|x)))",
         lambda m: m.E_q(m.log_px_given_z)
         + m.E_q(lambda z: __import__("numpy").log(m.log_prior(z) / m.log_q(z)))),
        ("= E_q(log p(x|z)) - D_KL(q(z|x) || p_prior(z))",
         lambda m: m.E_q(m.log_px_given_z) - m.kl_q_prior()),
    ],
}


def my_chains():
    """Your corrected derivation: the same three chains, every step equal to the one before.

    Returns {"kl_expansion": [...], "log_likelihood": [...], "elbo": [...]}, each a list of step
    texts (strings) starting at KL(q(z|x) || p(z|x)), log p(x) and the ELBO.
    """
    # START OF YOUR CODE
    # Each step is a text the grader reads and computes; every step equals the one before.
    chains = {
        # Bayes' rule inside the log, then the expectation of each term
        "kl_expansion": [
            "KL(q(z|x) || p(z|x))",
            "= E_q[log q(z|x) - log p(z|x)]",
            "= E_q[log q(z|x)] - E_q[log p(x|z) + log p(z) - log p(x)]",
            "= E_q[log q(z|x)] - E_q[log p(x|z)] - E_q[log p(z)] + log p(x)",   # log p(x) has no z
        ],
        # solve the last line for log p(x), then gather log p(z) - log q into minus the KL to the prior
        "log_likelihood": [
            "log p(x)",
            "= E_q[log p(x|z)] + E_q[log p(z)] - E_q[log q(z|x)] + KL(q(z|x) || p(z|x))",
            "= E_q[log p(x|z)] - KL(q(z|x) || p(z)) + KL(q(z|x) || p(z|x))",
        ],
        # p(x, z) = p(x|z) p(z): the log of a product is a sum of logs
        "elbo": [
            "ELBO = E_q[log p(x, z) - log q(z|x)]",
            "= E_q[log p(x|z)] + E_q[log p(z) - log q(z|x)]",
            "= E_q[log p(x|z)] - KL(q(z|x) || p(z))",
        ],
    }
    # END OF YOUR CODE
    return chains

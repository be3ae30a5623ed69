"""Conjugate-exponential structure, shared by CAVI (``engine="cavi"``) and collapsed Gibbs: the
variational factors of conjugate priors (``families``) and their children's expected
log-likelihoods and sufficient statistics (``likelihoods``)."""

"""Exact inference over discrete variables by variable elimination on log-space tables.

One contraction serves every query: log Z (sum-product), all family and single-variable
marginals (gradients of log Z with respect to the log tables), the most probable assignment
(the gradient of the max-product) and exact posterior draws (a sampling backward pass).
Elimination orders come from the interaction graph, so the number of variables is
unbounded; only the largest table (the induced width) costs memory, and it is checked
against a budget before anything is allocated.

Modules: ``rings`` (the semirings: sum, max, sample), ``log_ops`` (the differentiable
reductions they are made of), ``contract`` (elimination on flat factor lists, compiled once
per structure), ``factors`` (a model's tables by plate and chain, as the structured
contraction reads them), ``sum_product`` (the structured contraction: plates as products,
chains as scans), ``scan`` (the chain scans), ``posterior`` (queries answered by one
contraction), ``gaussian`` (Kalman filter and smoother), ``broadcasting`` (table
bookkeeping), ``naive`` (brute-force references for the tests).
Nothing here imports the DSL: models reach it tabulated (``genppl.tabulation``).
"""

from genppl.exact.contract import (
    Factor,
    interaction_graph,
    log_partition,
    marginals,
    plan,
)
from genppl.exact.naive import naive_log_partition, naive_map, naive_marginals
from genppl.exact.rings import MAX, SAMPLE, SUM, Ring

__all__ = [
    "MAX",
    "SAMPLE",
    "SUM",
    "Factor",
    "Ring",
    "interaction_graph",
    "log_partition",
    "marginals",
    "naive_log_partition",
    "naive_map",
    "naive_marginals",
    "plan",
]

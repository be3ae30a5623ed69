"""Finite latents summed out of the likelihood inside each particle's log density.

The model runs under Pyro's parallel enumeration (each finite latent on a tensor dimension
of its own, left of the chains' plate), so one run holds every assignment; the
log-probabilities of the finite latents and of the data are then contracted in the log
semiring plate by plate (``contract_tensor_tree``, as ``TraceEnum_ELBO`` does), leaving
log p(x | z) = log sum_d p(d | z) p(x | d, z) per particle: the factor the annealing
tempers. Continuous latents keep their own terms (the prior), so none may depend on a
finite one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree


def contracted_terms(trace: Any, names: Iterable[str], items: str | None
                     ) -> list[tuple[torch.Tensor, bool]]:
    """The log-probabilities of sites ``names`` of an enumerated ``trace`` (log-probs
    computed) with every enumeration dim summed out: tensors in the batch layout of the
    plates they keep, each with whether it lies in plate ``items``."""
    trace.pack_tensors()
    tree: OrderedDict[frozenset[str], list[torch.Tensor]] = OrderedDict()
    for name in names:
        site = trace.nodes[name]
        ordinal = frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"]
                            if f.vectorized)
        tree.setdefault(ordinal, []).append(site["packed"]["log_prob"])
    # every symbol of the trace that is not a plate's is an enumeration dim
    sum_dims = set(trace.symbol_to_dim) - set(trace.plate_to_symbol.values())
    symbol = None if items is None else trace.plate_to_symbol.get(items)
    return [(packed.unpack(term, trace.symbol_to_dim), symbol is not None and symbol in ordinal)
            for ordinal, terms in contract_tensor_tree(tree, sum_dims).items()
            for term in terms]

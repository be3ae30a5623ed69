"""Brute-force references for the elimination engine: enumerate every joint state.

Exponential in the number of variables, and kept beside the fast algorithm on purpose: tests
check ``contract`` against these on small random problems.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from genppl.exact.contract import Factor, cardinalities


def naive_joint(factors: Sequence[Factor]
                ) -> tuple[list[str], list[tuple[int, ...]], torch.Tensor]:
    """``(variables, every joint state, its log weight)``, the weights of shape
    ``(*batch, num_states)``: the reference of every ring (log-sum-exp, max, and the
    distribution the sample ring draws from)."""
    cards = cardinalities(factors)
    names = sorted(cards)
    states = list(itertools.product(*(range(cards[v]) for v in names)))
    columns = []
    for state in states:
        at = dict(zip(names, state, strict=True))
        columns.append(sum(f.log_table[(..., *(at[v] for v in f.vars))] for f in factors))
    return names, states, torch.stack(torch.broadcast_tensors(*columns), -1)


def naive_log_partition(factors: Sequence[Factor]) -> torch.Tensor:
    return torch.logsumexp(naive_joint(factors)[2], -1)


def naive_marginals(factors: Sequence[Factor]) -> dict[str, torch.Tensor]:
    cards = cardinalities(factors)
    names, states, logw = naive_joint(factors)
    p = torch.softmax(logw, -1)
    out = {}
    for i, v in enumerate(names):
        out[v] = torch.stack([p[..., [s[i] == k for s in states]].sum(-1)
                              for k in range(cards[v])], -1)
    return out


def naive_map(factors: Sequence[Factor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    names, states, logw = naive_joint(factors)
    value, best = logw.max(-1)
    table = torch.tensor(states, device=logw.device)  # (num_states, num_vars)
    chosen = table[best]
    return value, {v: chosen[..., i] for i, v in enumerate(names)}

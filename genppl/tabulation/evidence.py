"""Data given for a latent, read as evidence: which of its states each entry is (every state
where a floating entry is NaN: unobserved), checked to be one of them."""

from __future__ import annotations

import torch

from genppl.dsl.nodes import Node
from genppl.errors import ModelError


def state_index(node: Node, value: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Evidence values (support values, e.g. 0/1 or 0..K-1) as state indices, checked."""
    return _matches(node, value, support).long().argmax(-1)


def evidence_match(node: Node, value: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``_matches`` for evidence on a latent, where an entry of NaN (floating data) leaves
    that entry unobserved: every state matches."""
    if not value.is_floating_point():
        return _matches(node, value, support)
    missing = value.isnan()
    known = torch.where(missing, support[0].to(value.dtype), value)
    return _matches(node, known, support) | missing.unsqueeze(-1)


def _matches(node: Node, value: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``(*value.shape, K)``: which state each evidence value is, checked to be one."""
    match = value.unsqueeze(-1) == support.to(value.dtype)
    if not bool(match.any(-1).all()):
        raise ModelError(f"evidence for {node.name!r} ({node.declared_at}) has values outside "
                         f"its states {support.tolist()}.")
    return match

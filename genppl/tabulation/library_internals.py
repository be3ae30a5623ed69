"""The private attributes of torch and Pyro distributions the tabulation reads or writes, each
in this one place. Each has no public equivalent that does the same without a cost the
tabulation exists to avoid (say, materialising a masked table per step and sequence);
``tests/unit/test_library_internals.py`` fails by name if torch or Pyro drops one.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions.torch_distribution import MaskedDistribution


def mask_of(d: MaskedDistribution) -> torch.Tensor | bool:
    """The mask of ``base.mask(m)`` as given (Pyro's ``MaskedDistribution._mask``): the
    public route, ``log_prob``, broadcasts the base to the mask's shape first."""
    return d._mask


def categories(d: torch.distributions.Categorical) -> int:
    """A Categorical's number of categories (torch's ``Categorical._num_events``), read
    without working out ``probs`` or ``logits`` from the other (a lazy property that stores
    what it computes in the distribution)."""
    return d._num_events


def with_batch_shape(d: Any, shape: torch.Size) -> Any:
    """``d`` (a fresh shallow copy the caller owns) with its batch shape set to ``shape``
    (torch's ``Distribution._batch_shape``): for a copy whose parameters were cut down to
    their broadcast shape, which ``expand`` cannot make."""
    d._batch_shape = shape
    return d

"""Every private attribute of torch and Pyro that genppl reads or writes, each in this one
place. Each has no public equivalent that does the same without a cost genppl exists to avoid
(say, materialising a masked table per step and sequence, or working out logits from probs);
``tests/unit/test_library_internals.py`` fails by name if a new torch or Pyro drops one or
changes what it means."""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices


def mask_of(d: MaskedDistribution) -> torch.Tensor | bool:
    """The mask of ``base.mask(m)`` as given (Pyro's ``MaskedDistribution._mask``): the
    public route, ``log_prob``, broadcasts the base to the mask's shape first."""
    return d._mask


def validates(d: torch.distributions.Distribution) -> bool:
    """Whether ``d`` checks its arguments and values (torch's ``Distribution._validate_args``,
    set by its constructor or by Pyro's global switch): a wrapper reading ``d`` at other
    entries validates as ``d`` does."""
    return d._validate_args


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


def version(t: torch.Tensor) -> int:
    """``t``'s version counter (torch's ``Tensor._version``): every in-place edit bumps it, so
    caches keyed by a table's identity (scaled probabilities kept on a factor, a tabulation's
    record of its data, a CPT's cast log-table) notice edits. -1 for an inference tensor,
    which has none (it cannot be edited outside inference mode). Read on every query of a
    network, once per table: the common case pays one attribute read."""
    try:
        return t._version
    except RuntimeError:  # "Inference tensors do not track version counter"
        return -1


#: Where torch's ``Multinomial`` and ``OneHotCategorical`` keep the ``Categorical`` whose
#: ``log_prob`` they use (replaced by an exact one in ``genppl.distributions``).
INNER_CATEGORICAL = "_categorical"


def inner_categorical(d: Any) -> torch.distributions.Categorical:
    """The ``Categorical`` inside a ``Multinomial`` or ``OneHotCategorical``."""
    return getattr(d, INNER_CATEGORICAL)


def given_parameter(d: Any) -> Any:
    """The parameter a ``Categorical``-like distribution was made from (torch's ``_param``):
    ``probs`` when made from probs, whose logits, if worked out, are torch's clamped ones."""
    return vars(d).get("_param")


def fused_kernel_devices() -> list[str]:
    """The device types with fused optimiser kernels (torch's
    ``torch.utils._foreach_utils._get_fused_kernels_supported_devices``)."""
    return _get_fused_kernels_supported_devices()

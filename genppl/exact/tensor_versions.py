"""Torch's version counter of a tensor, read in this one place.

Every in-place edit of a tensor bumps its counter; caches keyed by a table's identity
(scaled probabilities kept on a factor, a tabulation's record of its data) compare it to
notice edits. Torch exposes it only as the private ``Tensor._version``; if torch renames or
drops it, ``tests/unit/test_library_internals.py`` says so by name.
"""

from __future__ import annotations

import torch


def version(t: torch.Tensor) -> int:
    """``t``'s version counter; -1 for an inference tensor, which has none (it cannot be
    edited outside inference mode). Read on every query of a network, once per table: the
    common case pays one attribute read."""
    try:
        return t._version
    except RuntimeError:  # "Inference tensors do not track version counter"
        return -1

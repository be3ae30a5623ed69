"""Broadcast bookkeeping of log tables: cutting broadcast axes down (so a table shared by
every step and sequence costs one copy) and summing a gradient back to its input's shape."""

from __future__ import annotations

import torch


def compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` with every broadcast (stride-0) axis cut to size 1: a transition table that is
    the same at every step and for every sequence then costs one K x K matrix, not a copy
    per step and sequence."""
    index = tuple(slice(0, 1) if stride == 0 and size > 1 else slice(None)
                  for size, stride in zip(t.shape, t.stride(), strict=True))
    return t[index]


def sum_to_shape(grad: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Sum ``grad`` down to ``shape`` (the inverse of broadcasting an input to its shape)."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    dims = [i for i, (g, s) in enumerate(zip(grad.shape, shape, strict=True)) if s == 1 != g]
    return grad.sum(dims, keepdim=True) if dims else grad

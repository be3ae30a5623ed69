"""The semirings of exact inference, as objects (after ``pyro.ops.rings``): one contraction,
and the ring decides what it answers.

Tables hold log weights in every ring; a ring says how an eliminated axis is reduced and how
two matrices multiply, and the backward pass of its reduction is the query's second half:

- ``SUM`` (log-sum-exp): log Z; its gradients are marginals.
- ``MAX`` (max-product): the max log joint; its gradient is the indicator of one most
  probable assignment (Viterbi / MAP backtracking).
- ``SAMPLE``: log-sum-exp forward, a backward pass that draws each eliminated variable given
  those drawn before it (forward filtering, backward sampling): an exact joint posterior
  draw per backward pass.

Engines pick a ring once per query and the contraction picks its reduction once per plan
(``reducer``), so the elimination's loops call plain torch functions, never the ring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from genppl.exact.log_ops import LogMatMulExp, LogSumExp, SampleLogSumExp, max_values

#: A reduction of a log table over ``dim``: one axis, or a tuple of axes reduced as one.
Reduce = Callable[[torch.Tensor, Any], torch.Tensor]


class Ring(ABC):
    """A semiring on log weights: its product is ``+``, its sum ``reducer``'s."""

    name: str
    #: Whether ``matmul`` materialises every term ``(..., I, J, K)`` (a reduction over the
    #: inner axis) rather than running one BLAS product: what a chain's parallel scan costs.
    materialises_products: bool = True

    @abstractmethod
    def reducer(self, differentiable: bool) -> Reduce:
        """The function that eliminates axes of a log table in this ring. ``differentiable``
        asks for the backward pass the ring's queries read (the sum's NaN-free one; the max
        and the sample have only theirs); without it the sum takes torch's plain
        ``logsumexp``, which builds no graph."""

    def matmul(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The ring's matrix product of log tables ``x (..., I, J)`` and ``y (..., J, K)``
        (batched and broadcast), differentiable."""
        return self.reducer(True)(x.unsqueeze(-1) + y.unsqueeze(-3), -2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LogSumRing(Ring):
    """Sum-product in log space: log Z, and marginals as its gradients."""

    name = "sum"
    materialises_products = False

    def reducer(self, differentiable: bool) -> Reduce:
        return LogSumExp.apply if differentiable else torch.logsumexp

    def matmul(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log(exp(x) @ exp(y))`` by one matmul of shifted exponentials, exact where the
        shifted product underflows (``LogMatMulExp``)."""
        return LogMatMulExp.apply(x, y)


class MaxRing(Ring):
    """Max-product: the max log joint, and a most probable assignment as its gradient."""

    name = "max"

    def reducer(self, differentiable: bool) -> Reduce:
        return max_values


class SampleRing(Ring):
    """Log-sum-exp forward, sampling backward: exact joint posterior draws."""

    name = "sample"

    def reducer(self, differentiable: bool) -> Reduce:
        return SampleLogSumExp.apply


SUM = LogSumRing()
MAX = MaxRing()
SAMPLE = SampleRing()

"""Distributions the DSL's factories need beyond Pyro's.

``WordCounts``: a document's word counts, a multinomial whose total differs between batch
elements (documents of different lengths). torch's (and so Pyro's) ``Multinomial`` takes one
integer total for a whole batch: the common workaround, ``Multinomial(int(n.max()), ...)``,
evaluates the right density only because torch reads ``n`` off the value, and draws every
document at the longest length. Naive Bayes, LDA-style models and ProdLDA read it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all, lazy_property


class WordCounts(TorchDistribution):
    """Word counts of a document of ``total_count`` tokens, each drawn independently from
    ``probs`` (or ``softmax(logits)``): a multinomial whose total may differ between batch
    elements. Engines read ``probs`` as a Multinomial's (EM's and CAVI's closed forms).

    ``log p(x) = log n! - sum_v log x_v! + sum_v x_v log p_v`` with ``n = total_count``; a
    count vector whose sum is not ``total_count`` is outside the support (a ``ValueError``
    under validation)."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "total_count": constraints.nonnegative_integer, "probs": constraints.simplex,
        "logits": constraints.real_vector}

    def __init__(self, total_count: torch.Tensor, logits: torch.Tensor | None = None, *,
                 probs: torch.Tensor | None = None, validate_args: bool | None = None) -> None:
        if (logits is None) == (probs is None):
            raise ValueError("WordCounts: give exactly one of logits and probs.")
        given = logits if probs is None else probs
        assert given is not None
        total_count = torch.as_tensor(total_count, dtype=given.dtype, device=given.device)
        batch_shape = torch.broadcast_shapes(total_count.shape, given.shape[:-1])
        full = batch_shape + given.shape[-1:]
        self.total_count = total_count.expand(batch_shape)
        if probs is not None:
            self.probs = probs.expand(full)
        else:
            assert logits is not None
            self.logits = (logits - logits.logsumexp(-1, keepdim=True)).expand(full)
        super().__init__(batch_shape, given.shape[-1:], validate_args=validate_args)

    @lazy_property
    def logits(self) -> torch.Tensor:
        """Normalised log-probabilities."""
        probs = self.probs
        return probs.log() - probs.sum(-1, keepdim=True).log()

    @lazy_property
    def probs(self) -> torch.Tensor:
        return self.logits.exp()

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.multinomial(self.total_count)

    def expand(self, batch_shape: Any, _instance: Any = None) -> WordCounts:
        new = self._get_checked_instance(WordCounts, _instance)
        batch_shape = torch.Size(batch_shape)
        new.total_count = self.total_count.expand(batch_shape)
        for name in ("probs", "logits"):  # whichever were given or worked out
            if name in self.__dict__:
                setattr(new, name, getattr(self, name).expand(batch_shape + self.event_shape))
        super(WordCounts, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return self.total_count.unsqueeze(-1) * self.logits.exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
            if not bool((value.sum(-1) == self.total_count).all()):
                raise ValueError("WordCounts: a count vector does not sum to its total_count "
                                 "(the document length); pass length = counts.sum(-1).")
        logits, value = broadcast_all(self.logits, value)
        n = value.sum(-1)
        return (torch.lgamma(n + 1) - torch.lgamma(value + 1).sum(-1)
                + (value * logits).sum(-1))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Draw ``max(total_count)`` categorical tokens per document and count the first
        ``total_count`` of them."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            longest = int(self.total_count.max()) if self.total_count.numel() else 0
            counts = self.logits.new_zeros(shape)
            if longest == 0:
                return counts
            tokens = torch.distributions.Categorical(logits=self.logits).sample(
                torch.Size([longest]) + sample_shape).movedim(0, -1)
            kept = (torch.arange(longest, device=self.logits.device)
                    < self.total_count.unsqueeze(-1)).to(self.logits.dtype)
            return counts.scatter_add_(-1, tokens, kept.expand(tokens.shape))


#: Distributions whose value is a vector of counts per entry (EM's and CAVI's closed forms
#: add it whole where a Categorical adds one count).
COUNT_VECTORS = (dist.Multinomial, WordCounts)

"""A distribution of the enclosing plate, read at each copy of a ragged plate.

A word whose parents all lie outside its ragged plate (a document's class, its mixture, the
globals) has one distribution per *document*: ``lambda c, words: Categorical(words[c])``.
Calling the factory with each parent gathered per word builds one row of parameters per word
(naive Bayes on BBC: 229k tokens x 2000 words, 3.7 GB in float64, per SVI step, and as much
again for its gradient). ``AtEntries`` instead keeps the factory's result for the D
documents and reads it at each word's document: its log-probability table has one row per
document (``D x V``), and ``log_prob`` and ``sample`` read one cell per word, so memory is
O(N + D V), not O(N V).

It takes distributions of one scalar draw per entry with a finite support ``0 .. V - 1``
(Categorical, Bernoulli, Binomial with one total; masked or made exact by
``genppl.distributions.exact_log_probs`` alike, since the table is the base's own
``log_prob`` of each state); ``at_entries`` returns None for any other, whose node keeps the
per-word gather.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pyro.distributions.torch_distribution import MaskedDistribution, TorchDistribution
from torch.distributions import Categorical, Distribution, constraints

from genppl.library_internals import mask_of, validates


def at_entries(base: Distribution, entries: torch.Tensor, dim: int, rows: int
               ) -> Distribution | None:
    """``base`` (batch axis ``dim`` of size ``rows``: one per entry of the enclosing plate)
    read at ``entries``, or ``base`` itself when it does not vary along ``dim`` (it
    broadcasts to every copy as it is), or None when ``AtEntries`` cannot read it (see the
    module doc)."""
    shape = base.batch_shape
    if len(shape) < -dim or shape[dim] == 1:
        return base
    if shape[dim] != rows or not _indexed_states(base):
        return None
    return AtEntries(base, entries, dim)


def _indexed_states(base: Distribution) -> bool:
    """Whether ``base`` draws one scalar per entry from the states ``0 .. V - 1``, the same
    for every entry (so a state is also its row in the log-probability table)."""
    if base.event_shape != () or not base.has_enumerate_support:
        return False
    try:
        states = base.enumerate_support(expand=False).reshape(-1)
    except (NotImplementedError, ValueError, RuntimeError):  # (a support varying by entry)
        return False
    return bool((states == torch.arange(states.numel(), device=states.device)).all())


class AtEntries(TorchDistribution):
    """``base`` (one batch entry per entry of the enclosing plate along ``dim``) read at
    ``entries`` (the enclosing entry of each flat copy): entry ``n`` of the batch axis
    ``dim`` is ``base``'s entry ``entries[n]``, the other batch axes are ``base``'s."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(self, base: Distribution, entries: torch.Tensor, dim: int) -> None:
        self.base_dist = base
        self.entries = entries
        self.dim = dim
        shape = list(base.batch_shape)
        shape[dim] = entries.shape[0]
        super().__init__(torch.Size(shape), base.event_shape, validate_args=validates(base))

    @property
    def support(self) -> Any:
        return self.base_dist.support

    has_enumerate_support = True

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        states = self.base_dist.enumerate_support(expand=False).reshape(
            -1, *(1 for _ in self.batch_shape))
        return states.expand(-1, *self.batch_shape) if expand else states

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self._read(self._table(), value.long())

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Inverse-CDF draws: a binary search per copy over its entry's cumulative
        probabilities (``log2 V`` reads of one cell each), never a row per copy."""
        with torch.no_grad():
            cdf = self._table(cumulative=True)
            states = cdf.shape[-1] // max(self.base_dist.batch_shape[self.dim], 1)
            shape = torch.Size(sample_shape) + self.batch_shape
            last = torch.full(shape, states - 1, dtype=torch.long, device=cdf.device)
            u = torch.rand(shape, dtype=cdf.dtype, device=cdf.device) * self._read(cdf, last)
            lo, hi = torch.zeros_like(last), last
            for _ in range(max(states - 1, 1).bit_length()):
                mid = (lo + hi) // 2
                right = self._read(cdf, mid) <= u
                lo, hi = torch.where(right, mid + 1, lo), torch.where(right, hi, mid)
        return lo.to(self.enumerate_support(expand=False).dtype)

    def _table(self, cumulative: bool = False) -> torch.Tensor:
        """The base's log-probability of every state (or, ``cumulative``, its cumulative
        probabilities), laid out for ``_read``: the other batch axes first, then one flat
        axis of ``rows x states`` (row-major)."""
        table = log_probs(self.base_dist)  # (*batch of the base, V)
        if cumulative:
            table = table.exp().cumsum(-1)
        table = table.movedim(self.dim - 1, -2)
        return table.reshape(*table.shape[:-2], -1)

    def _read(self, table: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``table``'s cell of each copy's entry and state ``value`` (broadcast against the
        batch shape): one gather of the flat ``rows x states`` axis."""
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        rows = self.base_dist.batch_shape[self.dim]
        states = table.shape[-1] // max(rows, 1)
        index = value.expand(shape).movedim(self.dim, -1) + self.entries * states
        lead = torch.broadcast_shapes(table.shape[:-1], index.shape[:-1])
        out = table.expand(*lead, table.shape[-1]).gather(-1, index.expand(*lead, -1))
        return out.movedim(-1, self.dim)


def log_probs(d: Distribution) -> torch.Tensor:
    """``d``'s log-probability of each state, states on a last axis: a Categorical's (exact,
    normalised) logits as they are, a mask applied, other families through their own
    ``log_prob`` of each state (a Categorical's would broadcast its logits to one row per
    state and entry, and its gradient would fill them: V x D x V numbers)."""
    if isinstance(d, MaskedDistribution):
        table = log_probs(d.base_dist)
        mask = mask_of(d)
        if isinstance(mask, bool):
            return table if mask else torch.zeros_like(table)
        return table.masked_fill(~mask.unsqueeze(-1), 0.0).expand(*d.batch_shape, -1)
    if isinstance(d, Categorical):
        return d.logits.expand(*d.batch_shape, -1)
    table = d.log_prob(d.enumerate_support(expand=False))  # (V, *batch)
    return table.expand(-1, *d.batch_shape).movedim(0, -1)

"""Distributions the DSL's factories need beyond Pyro's, and exact log-probabilities.

``exact_log_probs``: torch computes a probs-parameterised discrete distribution's
log-probabilities through logits clamped to ``[eps, 1 - eps]``, so a probability of exactly 0
scores log eps (-36.04 in float64, -15.9 in float32) instead of -inf, and one below eps scores
too high: an HMM with structural zeros in its transition table then reports the wrong log p(x),
posterior and Viterbi path, and Baum-Welch moves mass into cells the table forbids.
``exact_log_probs`` turns such a distribution into an equivalent one whose log-probabilities
are exact; the tabulation and the compiled Pyro program apply it to every factory's result,
so every model gets it without changing a factory.

``WordCounts``: a document's word counts, a multinomial whose total differs between batch
elements (documents of different lengths). torch's (and so Pyro's) ``Multinomial`` takes one
integer total for a whole batch: the common workaround, ``Multinomial(int(n.max()), ...)``,
evaluates the right density only because torch reads ``n`` off the value, and draws every
document at the longest length. Naive Bayes, LDA-style models and ProdLDA read it.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import (
    ExpandedDistribution,
    MaskedDistribution,
    TorchDistribution,
)
from pyro.ops.special import log_binomial
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all, lazy_property

from genppl.library_internals import INNER_CATEGORICAL, given_parameter, inner_categorical


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
        return _log(probs) - probs.sum(-1, keepdim=True).log()

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
                + _times(value, logits).sum(-1))

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


# ---------------------------------------------------------------------- exact log-probabilities
def _log(x: torch.Tensor) -> torch.Tensor:
    """``log x`` with log 0 = -inf and a zero gradient there: the true one (1/0) times the zero
    weight an impossible state gets makes NaN, which would poison SVI's step on a probs param
    holding a zero."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).log(), -math.inf)


def _log1m(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - x)`` (``log1p``, accurate for small x) with log 0 = -inf and a zero gradient
    there, as ``_log``."""
    below = x < 1
    return torch.where(below, (-torch.where(below, x, 0.0)).log1p(), -math.inf)


def _times(k: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``k * log_p`` with 0 * -inf = 0 (no occurrences of an impossible outcome), value and
    gradients free of NaN."""
    return k * torch.where(k == 0, 0.0, log_p)


def _powers(p: torch.Tensor, successes: torch.Tensor, failures: torch.Tensor) -> torch.Tensor:
    """``successes * log p + failures * log(1 - p)``, exact at p = 0 and p = 1."""
    return _times(successes, _log(p)) + _times(failures, _log1m(p))


class _ExactFromProbs:
    """A ``log_prob`` read from ``probs`` itself, not from torch's clamped logits, for a
    distribution made from ``probs`` (made from logits -- Pyro builds marginals as
    ``type(fn)(logits=...)`` -- it is the parent class's). Subclasses say how the log
    probability follows from ``probs`` (``_exact``)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if not _given_probs(self):
            return super().log_prob(value)  # type: ignore[misc]
        if self._validate_args:  # type: ignore[attr-defined]
            self._validate_sample(value)  # type: ignore[attr-defined]
        return self._exact(value)

    def _exact(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Bernoulli(_ExactFromProbs, dist.Bernoulli):
    """Pyro's Bernoulli with an exact ``log_prob`` (torch's goes through logits, and at logits
    of +-inf it returns NaN, so the logits cannot be made exact instead). Made by
    ``exact_log_probs``, so the class name stays Bernoulli."""

    def _exact(self, value: torch.Tensor) -> torch.Tensor:
        p, value = broadcast_all(self.probs, value)
        return _powers(p, value, 1 - value)


class Binomial(_ExactFromProbs, dist.Binomial):
    """Pyro's Binomial with an exact ``log_prob``, as ``Bernoulli``."""

    def _exact(self, value: torch.Tensor) -> torch.Tensor:
        n, p, value = broadcast_all(self.total_count, self.probs, value)
        return log_binomial(n, value, tol=self.approx_log_prob_tol) + _powers(p, value, n - value)


class Geometric(_ExactFromProbs, dist.Geometric):
    """Pyro's Geometric (failures before the first success) with an exact ``log_prob``, as
    ``Bernoulli`` (Pyro's reads clamped logits: at p = 1 a failure scores log eps)."""

    def _exact(self, value: torch.Tensor) -> torch.Tensor:
        p, value = broadcast_all(self.probs, value)
        return _powers(p, torch.ones_like(value), value)


_CATEGORICAL = (torch.distributions.Categorical, dist.Categorical)
_VIA_CATEGORICAL = (torch.distributions.OneHotCategorical, dist.OneHotCategorical,
                    torch.distributions.Multinomial, dist.Multinomial)
_EXACT: dict[type, type] = {
    dist.Bernoulli: Bernoulli, torch.distributions.Bernoulli: Bernoulli,
    dist.Binomial: Binomial, torch.distributions.Binomial: Binomial,
    dist.Geometric: Geometric, torch.distributions.Geometric: Geometric}
_WRAPPERS = (torch.distributions.Independent, ExpandedDistribution, MaskedDistribution)


def exact_log_probs(d: Any) -> Any:
    """``d``, or an equivalent distribution whose log-probabilities are exact: -inf where a
    probability is 0, log p (not log eps) where it is below eps.

    Only what was given ``probs`` changes (logits given are the user's numbers), of these
    kinds, also under ``Independent``, ``.expand`` and ``.mask`` wrappers:

    - Categorical, and OneHotCategorical and Multinomial through the Categorical inside them:
      the same class with exact ``logits`` (their ``log_prob`` reads the logits, and Pyro's
      enumeration and ``infer_discrete`` read both);
    - Bernoulli, Binomial, Geometric: this module's subclasses of the same name, whose
      ``log_prob`` reads ``probs``.

    ``probs`` stays the same tensor, so sampling, and whatever reads the parameter (EM's and
    CAVI's closed forms), see what the factory made. A new object; ``d`` is not changed. Exact
    types only: a user's subclass keeps its own ``log_prob``. (``WordCounts`` is exact itself.)
    """
    kind = type(d)
    if isinstance(d, _WRAPPERS):
        return _with(d, "base_dist", exact_log_probs(d.base_dist))
    if kind in _VIA_CATEGORICAL:
        return _with(d, INNER_CATEGORICAL, exact_log_probs(inner_categorical(d)))
    if kind in _CATEGORICAL and _given_probs(d):
        return _with(d, "logits", _log(d.probs))  # the probs are normalised already
    if kind in _EXACT and _given_probs(d):
        return _with(d, "__class__", _EXACT[kind])
    return d


def _with(d: Any, name: str, value: Any) -> Any:
    """A shallow copy of ``d`` with attribute ``name`` set to ``value`` (``d`` itself when it
    holds that already; read from its ``__dict__``, as reading a lazy property such as
    ``logits`` would store torch's clamped one in ``d``)."""
    if vars(d).get(name) is value:
        return d
    new = copy.copy(d)
    setattr(new, name, value)
    return new


def _given_probs(d: Any) -> bool:
    """Whether ``d`` was made from ``probs`` (its logits, if already worked out, are then
    torch's clamped ones): torch keeps the given parameter as ``_param``."""
    state = vars(d)
    return "probs" in state and ("logits" not in state or given_parameter(d) is state["probs"])

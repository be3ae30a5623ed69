"""Variational factors of conjugate-exponential priors: the ``q`` of CAVI.

In a conjugate-exponential model the optimal mean-field factor of a latent with a Dirichlet,
Beta, Normal or Gamma prior is in its prior's family (Jordan et al. 1999; Winn & Bishop
2005), and its coordinate update adds the expected sufficient statistics its children send
to the prior's natural parameters. Each class here is one such family: built from the
prior, it gives the moments its children's expected log-likelihoods need (``moments``),
takes the children's statistics in one closed-form update (``update``), and its KL
divergence from the prior (the ELBO's global term).

A factor keeps its parameters flat by *rows*: a Dirichlet's rows are its batch elements (each
a probability vector), the other families' rows are single elements. Children address rows
through the row maps of ``genppl.conjugacy.likelihoods``.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

from genppl.errors import ModelError
from genppl.pyro.program import default_tensor_context


class ConjugateFactor:
    """One latent's variational factor; subclasses are the families.

    ``shape`` is the latent's shape (batch then event), ``rows`` the number of rows.
    ``statistics`` names the sums its children add (each a tensor of ``stat_shape``).
    """

    #: The family: Pyro's distribution class, torch's (which priors may be, and which Pyro's
    #: subclasses), and its parameters.
    kind: type = dist.Distribution
    torch_kind: type = torch.distributions.Distribution
    parameters: tuple[str, ...] = ()
    #: Names of the children's sums that ``update`` takes.
    statistics: tuple[str, ...] = ()

    def __init__(self, name: str, shape: torch.Size, prior: dict[str, torch.Tensor]) -> None:
        self.name = name
        self.shape = shape
        self.prior = prior
        self.params = {k: v.clone() for k, v in prior.items()}

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1]) if self.event else math.prod(self.shape)

    @property
    def event(self) -> bool:
        """Whether the last axis is an event axis (a Dirichlet's categories)."""
        return False

    @property
    def stat_shape(self) -> tuple[int, ...]:
        return (self.rows, self.shape[-1]) if self.event else (self.rows,)

    def zeros(self) -> dict[str, torch.Tensor]:
        """Empty children's sums, to be added to."""
        like = next(iter(self.params.values()))
        return {k: like.new_zeros(self.stat_shape) for k in self.statistics}

    @property
    def family(self) -> str:
        return self.kind.__name__

    def distribution(self, params: dict[str, torch.Tensor] | None = None) -> Any:
        """``q`` (or, given them, the distribution of ``params``) in the latent's shape."""
        params = self.params if params is None else params
        return self.kind(*(self.shaped(params[k]) for k in self.parameters))

    def mean(self) -> torch.Tensor:
        return self.distribution().mean

    def moments(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def update(self, sums: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def kl(self) -> torch.Tensor:
        """KL(q || prior), summed over the latent's elements."""
        return kl_divergence(self.distribution(), self.distribution(self.prior)).sum()

    def assign(self, q: Any) -> None:
        """Take the parameters of ``q``, a distribution of this family and shape."""
        base, cls = _family(q)
        shape = q.batch_shape + q.event_shape
        if cls is not type(self) or shape != self.shape:
            raise ModelError(f"latent {self.name!r}: a factor to hold must be a {self.family} "
                             f"of shape {tuple(self.shape)}, got {type(base).__name__} of "
                             f"shape {tuple(shape)}.")
        like = self.params[self.parameters[0]]
        self.params = {k: torch.broadcast_to(getattr(base, k), shape).reshape(like.shape)
                       .to(like).clone() for k in self.parameters}

    def shaped(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.shape)


class DirichletFactor(ConjugateFactor):
    """Dirichlet ``q`` of probability vectors read as Categorical ``probs``: the update adds
    expected counts to the concentration."""

    kind = dist.Dirichlet
    torch_kind = torch.distributions.Dirichlet
    parameters = ("concentration",)
    statistics = ("counts",)

    @property
    def event(self) -> bool:
        return True

    def moments(self) -> dict[str, torch.Tensor]:
        alpha = self.params["concentration"]
        return {"log_probs": torch.digamma(alpha) - torch.digamma(alpha.sum(-1, keepdim=True))}

    def update(self, sums: dict[str, torch.Tensor]) -> None:
        self.params["concentration"] = self.prior["concentration"] + sums["counts"]


class BetaFactor(ConjugateFactor):
    """Beta ``q`` of probabilities read as Bernoulli ``probs``: successes and failures add to
    its two concentrations."""

    kind = dist.Beta
    torch_kind = torch.distributions.Beta
    parameters = ("concentration1", "concentration0")
    statistics = ("ones", "zeros")

    def moments(self) -> dict[str, torch.Tensor]:
        a, b = self.params["concentration1"], self.params["concentration0"]
        total = torch.digamma(a + b)
        return {"log_p": torch.digamma(a) - total, "log_1mp": torch.digamma(b) - total}

    def update(self, sums: dict[str, torch.Tensor]) -> None:
        self.params["concentration1"] = self.prior["concentration1"] + sums["ones"]
        self.params["concentration0"] = self.prior["concentration0"] + sums["zeros"]


class NormalFactor(ConjugateFactor):
    """Normal ``q`` of a mean read as Normal ``loc``: precision-weighted data add to the
    prior's natural parameters (precision, precision times mean)."""

    kind = dist.Normal
    torch_kind = torch.distributions.Normal
    parameters = ("loc", "scale")
    statistics = ("precision", "weighted")

    def moments(self) -> dict[str, torch.Tensor]:
        loc, scale = self.params["loc"], self.params["scale"]
        return {"mean": loc, "second": loc ** 2 + scale ** 2}

    def update(self, sums: dict[str, torch.Tensor]) -> None:
        prior_precision = self.prior["scale"] ** -2
        precision = prior_precision + sums["precision"]
        self.params["loc"] = (prior_precision * self.prior["loc"] + sums["weighted"]) / precision
        self.params["scale"] = precision.rsqrt()


class GammaFactor(ConjugateFactor):
    """Gamma ``q`` of a precision (read as Normal ``scale = precision ** -0.5``) or of a
    Poisson ``rate``: children add to its shape and rate."""

    kind = dist.Gamma
    torch_kind = torch.distributions.Gamma
    parameters = ("concentration", "rate")
    statistics = ("shape", "rate")

    def moments(self) -> dict[str, torch.Tensor]:
        a, b = self.params["concentration"], self.params["rate"]
        return {"mean": a / b, "log_mean": torch.digamma(a) - b.log()}

    def update(self, sums: dict[str, torch.Tensor]) -> None:
        self.params["concentration"] = self.prior["concentration"] + sums["shape"]
        self.params["rate"] = self.prior["rate"] + sums["rate"]


#: The prior families with a conjugate factor.
FAMILIES: tuple[type[ConjugateFactor], ...] = (DirichletFactor, BetaFactor, NormalFactor,
                                               GammaFactor)


def _family(d: Any) -> tuple[Any, type[ConjugateFactor] | None]:
    """The distribution under ``.expand``/``.to_event`` and its conjugate family, if any
    (torch's classes match too: Pyro's subclass them)."""
    base = d
    while isinstance(base, dist.Independent | dist.ExpandedDistribution
                     | torch.distributions.Independent):
        base = base.base_dist
    return base, next((f for f in FAMILIES if isinstance(base, f.torch_kind)), None)


def factor_of(name: str, prior: Any) -> ConjugateFactor | None:
    """The variational factor of latent ``name`` with ``prior``, a Dirichlet, Beta, Normal or
    Gamma, possibly ``.expand``-ed or ``.to_event``-ed (the prior's parameters broadcast to
    the latent's full shape); None for any other prior."""
    shape = prior.batch_shape + prior.event_shape
    base, cls = _family(prior)
    if cls is None:
        return None
    event = (shape[-1],) if cls is DirichletFactor else ()
    flat = (math.prod(shape[:-1]), *event) if event else (math.prod(shape),)
    params = {k: torch.broadcast_to(getattr(base, k), shape).reshape(flat).clone()
              for k in cls.parameters}
    return cls(name, torch.Size(shape), params)


def conjugate_roots(model: Any, engine: str, families: tuple[type[ConjugateFactor], ...],
                    alternatives: str) -> dict[str, ConjugateFactor]:
    """A factor for every continuous latent without parents of ``model`` (a latent with
    parents is left to the tabulation, which refuses a continuous one), for the engines that
    derive closed forms from conjugate priors (CAVI's updates, collapsed Gibbs's integrals).
    Each must be a global root whose prior is one of ``families``, read only by random
    nodes; a refusal names the latent or node and ``alternatives`` (the engines to use)."""
    factors: dict[str, ConjugateFactor] = {}
    for name in model.latent_names:
        node = model[name]
        if node.parents:
            continue
        with default_tensor_context(model.device, model.dtype):
            prior = node.fn()
        if prior.has_enumerate_support:
            continue
        where = f"continuous latent {name!r} ({node.declared_at})"
        if node.plates or node.chain is not None:
            raise ModelError(
                f"engine {engine!r}: {where} is in a plate or chain; engine {engine!r} takes "
                "continuous latents as global roots. Declare a per-item parameter as one "
                "latent with a batch shape, e.g. dist.Dirichlet(alpha).expand([D]).to_event(1), "
                f"read as theta[doc]. {alternatives}")
        factor = factor_of(name, prior)
        if type(factor) not in families:
            kinds = ", ".join(f.kind.__name__ for f in families)
            family = type(_family(prior)[0]).__name__
            raise ModelError(f"engine {engine!r}: {where} has a {family} prior; engine "
                             f"{engine!r} needs a conjugate prior ({kinds}). {alternatives}")
        factors[name] = factor  # type: ignore[assignment]
    for node in model.nodes.values():
        through = [p.node for p in node.parents if p.node in factors]
        if through and node.kind not in ("latent", "observed"):
            raise ModelError(
                f"engine {engine!r}: {node.kind} node {node.name!r} ({node.declared_at}) reads "
                f"latent {through[0]!r}; its closed forms need the random nodes to read it "
                f"directly (a function of it has none). {alternatives}")
    return factors

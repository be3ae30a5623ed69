"""The model as annealed importance sampling sees it: ``num_chains`` copies of its latents
(particles) in the unconstrained space, and for each particle the log densities the
tempered targets are made of: from the prior, f_b(u) = p(z(u)) |dz/du| p(x | z(u))^b; from a
guide q(z | x) (a DSL guide, say a VAE's encoder), f_b(u) = q_u(u)^(1-b) p_u(u, x)^b, where
q_u(u) = q(z(u) | x) |dz/du| and p_u(u, x) = p(z(u)) |dz/du| p(x | z(u)) -- the start is
then close to the posterior, and fewer temperatures reach the same accuracy (Wu et al. 2017
anneal from the prior; starting from q is what Grosse et al. 2015 recommend when a good
proposal exists). Either way f_0 is normalised and f_1 is p(z, x), so E[w] = p(x).

The copies are one vectorised run of the compiled model: a plate of ``num_chains`` outside
the model's own plates (as Pyro's vectorised particles are), so every chain -- and, with
``items``, every item of that plate, whose latents are its own -- is one entry of the same
tensors. Each latent is drawn by the model, or set from its unconstrained value by
``biject_to`` of its support at that point of the run, so a support that depends on a
parent's value (``Uniform(0, a)``) is mapped with that parent's current value, and the log
Jacobian of the map joins the prior's part of the density.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import sum_rightmost
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from genppl.ais.summed import contracted_terms
from genppl.dsl.model import Model
from genppl.errors import ModelError
from genppl.pyro.values import split_site

#: The name of the plate that holds the chains (outside every plate of the model).
PARTICLES = "_ais_chains"

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Items:
    """A plate whose items get an estimate each: its name, batch dim and size."""

    name: str
    dim: int
    size: int


@dataclass(frozen=True)
class Densities:
    """Per particle (shape ``(C,)``, or ``(C, items)`` with items): the log prior of the
    latents with the log Jacobian of their unconstrained map, and the log likelihood of the
    data; ``start``, the log density of the guide the path starts from, with the same
    Jacobian (None: the path starts from the prior). ``outside``, shape ``(C,)``: the log
    likelihood of data outside the items' plate (no latent reaches it, so it is the same for
    every particle); zeros without items."""

    prior: torch.Tensor
    likelihood: torch.Tensor
    outside: torch.Tensor
    start: torch.Tensor | None = None

    def tempered(self, beta: float) -> torch.Tensor:
        """log f_beta at the particles (module docstring)."""
        if self.start is None:
            return self.prior + beta * self.likelihood
        return (1.0 - beta) * self.start + beta * (self.prior + self.likelihood)

    @property
    def log_ratio(self) -> torch.Tensor:
        """log f_1 - log f_0: a temperature step from b to b' adds (b' - b) times it to the
        log weight."""
        if self.start is None:
            return self.likelihood
        return self.prior + self.likelihood - self.start

    def detach(self) -> Densities:
        return Densities(self.prior.detach(), self.likelihood.detach(), self.outside.detach(),
                         None if self.start is None else self.start.detach())


class _Unconstrained(Messenger):
    """Each latent site in ``latents`` set from its unconstrained value in ``values`` (from
    its constrained value, with ``constrained``; with ``values`` None, drawn by the model as
    usual); in every case its unconstrained value and the log Jacobian of its map are
    recorded. Finite sites in ``fixed`` are set to those values (the Gibbs path's state);
    the others run as the model has them (drawn, or enumerated under ``poutine.enum``)."""

    def __init__(self, latents: frozenset[str], values: State | None, *,
                 constrained: bool = False, fixed: State | None = None) -> None:
        super().__init__()
        self.latents, self.values, self.constrained = latents, values, constrained
        self.fixed = fixed or {}
        self.unconstrained: State = {}
        self.log_jacobian: State = {}

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["name"] in self.fixed and not msg["is_observed"]:
            msg["value"], msg["done"] = self.fixed[msg["name"]], True
            return
        if self.values is None or not self._ours(msg):
            return
        u = self.values[msg["name"]]
        if self.constrained:
            u = biject_to(msg["fn"].support).inv(u)
        msg["value"] = self._record(msg, u)
        msg["done"] = True

    def _pyro_post_sample(self, msg: dict[str, Any]) -> None:
        if self.values is None and self._ours(msg):
            self._record(msg, biject_to(msg["fn"].support).inv(msg["value"]))

    def _ours(self, msg: dict[str, Any]) -> bool:
        """A latent of ours with a continuous support (a finite one is refused later)."""
        return (msg["name"] in self.latents and not msg["is_observed"]
                and not msg["fn"].support.is_discrete)

    def _record(self, msg: dict[str, Any], u: torch.Tensor) -> torch.Tensor:
        transform = biject_to(msg["fn"].support)
        value = transform(u)
        extra = msg["fn"].event_dim - transform.codomain.event_dim
        self.unconstrained[msg["name"]] = u
        self.log_jacobian[msg["name"]] = sum_rightmost(
            transform.log_abs_det_jacobian(u, value), extra)
        return value


class TemperedTarget:
    """``num_chains`` particles of ``program``'s continuous ``latents`` given ``data`` (see
    the module doc), its finite latents ``summed`` out of the likelihood (``summed``
    module), the path starting from the prior or from ``guide`` (a Pyro guide program of
    the model, run with the params in Pyro's param store): ``draw()`` draws the particles
    from the start, ``densities(u)`` evaluates them, and ``spread``/``per_particle`` move
    between a latent's shape and the particles' shape ``(C,)`` or ``(C, items.size)``."""

    def __init__(self, model: Model, program: Callable[..., Any], data: Mapping[str, Any],
                 latents: list[str], *, summed: list[str], nesting: int, num_chains: int,
                 items: Items | None, guide: Callable[..., Any] | None = None,
                 finite: list[str] = (), gibbs: bool = False) -> None:
        self.model, self.program, self.data = model, program, dict(data)
        self.guide = guide
        self.latents, self.summed = frozenset(latents), frozenset(summed)
        #: finite latents carried in the state and moved by Gibbs (``gibbs`` module), in
        #: the model's order; with ``gibbs``, ``draw`` adds the finite latents Pyro cannot
        #: enumerate (a finite latent with event dimensions), moved coordinate by coordinate
        self.finite = tuple(finite)
        self.gibbs = gibbs
        self.nesting, self.num_chains, self.items = nesting, num_chains, items
        self.batch_dims: dict[str, int] = {}  # each latent's unconstrained batch dims

    @property
    def shape(self) -> tuple[int, ...]:
        """The particles' shape."""
        return (self.num_chains,) if self.items is None else (self.num_chains, self.items.size)

    def draw(self, given: Mapping[str, torch.Tensor] | None = None) -> tuple[State, State]:
        """The particles drawn exactly from the start (the prior, or the guide), in the
        unconstrained space, and the values of the finite latents carried in the state; or,
        with ``given``, set to those values of the latents (by name, in the model's data
        layout: one value for every chain, or a leading axis of one per chain), mapped
        there."""
        with torch.no_grad():
            handler, trace = self._run(None)
        if self.gibbs:  # the finite latents among the others join the Gibbs moves
            discrete = [n for n in trace.nodes if n in self.latents
                        and trace.nodes[n]["fn"].support.is_discrete]
            self.latents = self.latents - set(discrete)
            self.finite = tuple(n for n in trace.nodes if n in set(self.finite) | set(discrete))
        #: each carried finite latent's distribution in the prior run: its event dims (> 0:
        #: moved coordinate by coordinate) and its coordinates' states
        self.finite_fns = {n: trace.nodes[n]["fn"] for n in self.finite}
        self._check(trace)
        for name, u in handler.unconstrained.items():
            domain_event = biject_to(trace.nodes[name]["fn"].support).domain.event_dim
            self.batch_dims[name] = u.dim() - domain_event
        finite = {name: trace.nodes[name]["value"] for name in self.finite}
        if given is None and self.guide is not None:
            with torch.no_grad():
                given = {name: site["value"] for name, site in self._guide_trace(None).items()}
        if given is None:
            return dict(handler.unconstrained), finite
        values = {name: self._laid_out(name, given, trace.nodes[name]["value"])
                  for name in self.latents}
        finite = {name: self._laid_out(name, given, value, trace.nodes[name]["fn"].event_dim)
                  for name, value in finite.items()}
        with torch.no_grad():
            handler, _ = self._run(values, constrained=True, fixed=finite)
        return dict(handler.unconstrained), finite

    def _laid_out(self, name: str, given: Mapping[str, torch.Tensor], like: torch.Tensor,
                  event_dim: int = 0) -> torch.Tensor:
        """Latent ``name``'s given value in the shape of its value ``like`` in a run (the
        model's layout keeps the plates' order, so a reshape places it)."""
        node = self.model[split_site(name)[0]]
        if name not in given:
            raise ModelError(f"latent {node.name!r} ({node.declared_at}) has no starting value; "
                             "give one for every latent.")
        value = given[name]
        chain_axis = like.dim() - event_dim - self.nesting - 1 if name in self.finite else \
            self.batch_dims[name] - self.nesting - 1
        one = (*like.shape[:chain_axis], 1, *like.shape[chain_axis + 1:])
        if value.numel() == like.numel():
            return value.reshape(like.shape)
        if value.numel() * self.num_chains == like.numel():
            return value.reshape(one).expand(like.shape)
        raise ModelError(f"latent {node.name!r} ({node.declared_at}): the value given has shape "
                         f"{tuple(value.shape)}; give {math.prod(one)} numbers (one value for "
                         f"every chain) or {like.numel()} (a leading axis of {self.num_chains} "
                         "chains).")

    def densities(self, u: State, finite: State | None = None) -> Densities:
        """The particles' log densities at unconstrained values ``u`` (differentiable) and
        the finite latents carried in the state at ``finite``: theirs join the prior's."""
        handler, trace = self._run(u, enumerate=bool(self.summed), fixed=finite)
        trace.compute_log_prob()
        zeros = torch.zeros(self.shape, dtype=self.model.dtype, device=self.model.device)
        prior = likelihood = zeros
        outside = zeros.new_zeros(self.num_chains)
        sites = [(name, site) for name, site in trace.nodes.items()
                 if site["type"] == "sample" and not site_is_subsample(site)]
        for name, site in sites:
            if name in self.latents:
                prior = prior + self.per_particle(
                    site["log_prob"] + handler.log_jacobian[name], self._in_items(site))
            elif name in self.finite:
                prior = prior + self.per_particle(site["log_prob"], self._in_items(site))
        rest = [name for name, _ in sites if name not in self.latents and name not in self.finite]
        terms = (contracted_terms(trace, rest, None if self.items is None else self.items.name)
                 if self.summed else
                 [(trace.nodes[n]["log_prob"], self._in_items(trace.nodes[n])) for n in rest])
        for term, inside in terms:
            if inside:
                likelihood = likelihood + self.per_particle(term, True)
            else:
                outside = outside + self.per_particle(term, False)
        if self.items is None:
            likelihood, outside = likelihood + outside, zeros.new_zeros(self.num_chains)
        start = None
        if self.guide is not None:
            start = zeros
            values = {name: trace.nodes[name]["value"] for name in self.latents}
            for name, site in self._guide_trace(values).items():
                start = start + self.per_particle(
                    site["log_prob"] + handler.log_jacobian[name], self._in_items(site))
        return Densities(prior, likelihood, outside, start)

    def _guide_trace(self, values: State | None) -> dict[str, dict[str, Any]]:
        """The guide's latent sites, run in the chains' plate: drawn (``values`` None) or at
        the constrained ``values`` of the model's latents, with their log densities. A guide
        that leaves a continuous latent out, or draws a site the model does not anneal, is
        refused by name."""
        guide = self.guide if values is None else poutine.condition(self.guide, data=values)
        with pyro.plate(PARTICLES, self.num_chains, dim=-self.nesting - 1):
            trace = poutine.trace(guide).get_trace(**self.data)
        trace.compute_log_prob()
        sites = {name: site for name, site in trace.nodes.items()
                 if site["type"] == "sample" and not site_is_subsample(site)
                 and (values is not None or not site["is_observed"])}
        auxiliary = [name for name, site in sites.items() if site["infer"].get("is_auxiliary")]
        if auxiliary:
            raise ModelError(f"engine 'ais': the guide draws the auxiliary site "
                             f"{auxiliary[0]!r} (an autoguide's), so its density at a given "
                             "value of the latents is not available; start from a DSL guide "
                             "(model.guide()) that draws each latent itself, or from the "
                             "prior.")
        drawn, wanted = set(sites), set(self.latents)
        if drawn != wanted:
            extra, missing = sorted(drawn - wanted), sorted(wanted - drawn)
            raise ModelError(f"engine 'ais': the guide must draw exactly the continuous latents "
                             f"of {self.model.name!r} that are annealed, {sorted(wanted)}; "
                             + (f"it leaves out {missing}" if missing else "")
                             + ("; " if missing and extra else "")
                             + (f"it draws {extra}, which the model " +
                                ("sums out exactly" if set(extra) & self.summed else
                                 "does not anneal") if extra else "")
                             + ". Declare guide.latent for each continuous latent only.")
        return sites

    def per_particle(self, batch: torch.Tensor, in_items: bool = True) -> torch.Tensor:
        """A tensor of a site's batch shape summed to the particles' shape (to ``(C,)``
        alone when the site lies outside the items' plate)."""
        width = self.nesting + 1
        batch = torch.as_tensor(batch, device=self.model.device)
        if batch.dim() > width:
            raise ModelError(f"a site of {self.model.name!r} has batch shape "
                             f"{tuple(batch.shape)}, wider than its plates: declare its extra "
                             "dimensions as event dimensions (.to_event).")
        batch = batch.reshape((1,) * (width - batch.dim()) + tuple(batch.shape))
        if self.items is None or not in_items:
            return batch.reshape(batch.shape[0], -1).sum(-1).expand(self.num_chains)
        batch = batch.movedim(width + self.items.dim, 1)
        return batch.reshape(batch.shape[0], batch.shape[1], -1).sum(-1).expand(self.shape)

    def spread(self, per_particle: torch.Tensor, name: str, like: torch.Tensor) -> torch.Tensor:
        """A per-particle tensor shaped to broadcast against latent ``name``'s unconstrained
        value ``like``."""
        batch_dims = self.batch_dims[name]
        shape = [1] * like.dim()
        shape[batch_dims - self.nesting - 1] = self.num_chains
        if self.items is not None:
            shape[batch_dims + self.items.dim] = self.items.size
        return per_particle.reshape(shape)

    def squared_norm(self, values: State) -> torch.Tensor:
        """sum of squares of every latent's unconstrained entries, per particle."""
        total = torch.zeros(self.shape, dtype=self.model.dtype, device=self.model.device)
        for name, v in values.items():
            event = v.dim() - self.batch_dims[name]
            total = total + self.per_particle(sum_rightmost(v.square(), event))
        return total

    def _run(self, values: State | None, *, constrained: bool = False,
             enumerate: bool = False, fixed: State | None = None
             ) -> tuple[_Unconstrained, Any]:
        """One run of the program in the chains' plate, the finite latents in ``fixed`` set
        (with ``enumerate``, the other finite latents enumerated in parallel on dims left of
        that plate)."""
        handler = _Unconstrained(self.latents, values, constrained=constrained, fixed=fixed)
        # the handler innermost: it sets the fixed finite sites before enumeration sees them
        program = handler(self.program)
        if enumerate:
            program = poutine.enum(program, first_available_dim=-self.nesting - 2)
        with pyro.plate(PARTICLES, self.num_chains, dim=-self.nesting - 1):
            trace = poutine.trace(program).get_trace(**self.data)
        return handler, trace

    def _in_items(self, site: dict[str, Any]) -> bool:
        return self.items is not None and any(f.name == self.items.name
                                              for f in site["cond_indep_stack"])

    def _check(self, trace: Any) -> None:
        """Refuse latents AIS cannot anneal: finite ones, and (with items) ones outside the
        items' plate, whose weights would not factorise over the items."""
        for name in sorted(self.latents | self.summed | set(self.finite)):
            site = trace.nodes[name]
            node = self.model[split_site(name)[0]]
            if name in self.latents and site["fn"].support.is_discrete:
                raise ModelError(f"latent {node.name!r} ({node.declared_at}) is finite and "
                                 "not enumerated (declared enumerate=False, or with event "
                                 "dimensions, which Pyro does not enumerate): engine 'ais' "
                                 "sums finite latents out exactly only where Pyro enumerates "
                                 "them; pass finite='gibbs' to move it by Gibbs (coordinate "
                                 "by coordinate), or use engine='exact' for a model whose "
                                 "latents are all finite.")
            if self.items is not None and not self._in_items(site):
                raise ModelError(f"latent {node.name!r} ({node.declared_at}) lies outside "
                                 f"plate {self.items.name!r}, so the log evidence does not "
                                 f"split per item; move it into the plate, make it a param, "
                                 "or leave per=None for one estimate of the whole data.")

"""A model's finite latents summed out by the exact engine, for samplers of the continuous
ones (``engine="nuts", marginalise="exact"``).

Pyro's enumeration gives each finite latent its own tensor dimension, so it stops at 64 of
them and at plate structures that are not trees. Here the Pyro program runs with its finite
latents and its observed nodes hidden from the sampler, and one ``pyro.factor`` adds
log p(data, finite latents summed out | continuous values): the exact engine's contraction
of the model tabulated at the continuous values the sampler proposes, differentiable in them
through the tabulation. The continuous latents keep their own sites, priors and constraints,
so NUTS adapts to them as usual; the finite latents are drawn per posterior sample from their
exact conditional (``draw_finite``).
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import pyro
import torch
from pyro import poutine

from genppl.dsl.model import Model
from genppl.errors import ModelError
from genppl.exact.posterior import posterior_draws
from genppl.exact.sum_product import contract
from genppl.pyro.layout import resolve_sizes
from genppl.pyro.program import PyroProgram
from genppl.pyro.values import from_pyro_layout, split_site, to_sites
from genppl.tabulation.prepared import Prepared
from genppl.tabulation.tabulation import Tabulation


def continuous_below_finite(model: Model, finite: list[str], continuous: list[str]
                            ) -> list[str]:
    """The continuous latents that depend on a finite one: the tabulation at a continuous
    point needs every continuous value fixed before the finite ones are summed."""
    finite_nodes = {split_site(f)[0] for f in finite}
    return sorted(n for n in {split_site(s)[0] for s in continuous}
                  if finite_nodes & nx.ancestors(model.graph, n))


def _below(model: Model, finite: list[str], observed: list[str]) -> set[str]:
    """The finite latents, their descendants, and observed nodes that nothing outside this
    set reads: the nodes the summed-out program need not run."""
    below = {split_site(f)[0] for f in finite}
    for name in list(below):
        below |= nx.descendants(model.graph, name)
    for name in {split_site(o)[0] for o in observed}:
        if set(model.graph.successors(name)) <= below:
            below.add(name)
    return {n for n in below if n in model.nodes}


class FiniteSummedOut:
    """The callable NUTS samples (see the module doc): ``program`` with ``finite`` and
    ``observed`` sites hidden and one factor in their place."""

    def __init__(self, model: Model, program: Any, finite: list[str], observed: list[str],
                 continuous: list[str], data: dict[str, torch.Tensor]) -> None:
        readers = continuous_below_finite(model, finite, continuous)
        if readers:
            raise ModelError(f"continuous latent {readers[0]!r} ({model[readers[0]].declared_at}) "
                             "depends on a finite latent, which the exact engine can only sum "
                             "out below continuous ones; use marginalise='enum' or engine "
                             "'hmc_gibbs'.")
        self.model = model
        # The finite latents and everything below them add nothing to the potential but
        # through log Z, and no continuous site reads them: not run at all (a chain of them
        # would otherwise be walked step by step, drawing values that are then hidden).
        self.program = PyroProgram(model, program.__name__,
                                   skip=frozenset(_below(model, finite, observed)))
        self.hidden = {*finite, *observed}
        self.continuous = continuous
        self.data = data
        self.sizes, _ = resolve_sizes(model, data)
        # Tabulated once; each potential evaluation only remakes the tables' values.
        self.tabulate = Tabulation(model, data)

    @classmethod
    def of(cls, prep: Prepared) -> FiniteSummedOut:
        """The program of ``prep`` with its finite latents summed out by the exact engine."""
        if prep.gaussian is not None:
            raise ModelError("marginalise='exact' does not yet combine with linear-Gaussian "
                             "chains summed out by the Kalman filter; use marginalise='enum'.")
        return cls(prep.model, prep.program, prep.enumerated, prep.observed, prep.continuous,
                   prep.data)

    def __call__(self, **data: Any) -> None:
        trace = poutine.trace(poutine.block(
            self.program, hide_fn=lambda msg: msg["name"] in self.hidden)).get_trace(**data)
        values = self.values({s: trace.nodes[s]["value"] for s in self.continuous})
        log_z = contract(self.tabulate(point=values, grad=True))
        pyro.factor("finite_summed_out", log_z.sum())

    def values(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Continuous sites' values (Pyro layout) by node, in the data's layout."""
        dims = self.program.dims
        out = {}
        for site, value in sites.items():
            node = self.model.nodes[split_site(site)[0]]
            out[node.name] = from_pyro_layout(node, value, dims, node.event_dim)
        return out

    def draw_finite(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An exact joint draw of the finite latents given continuous sites' values, as
        Pyro sites (the exact engine's sampling pass)."""
        fm = self.tabulate(point=self.values(sites))
        draws = {name: d[0, 0] for name, d in posterior_draws(fm, 1).items()}
        return to_sites(self.model, draws, self.program.dims, self.sizes)

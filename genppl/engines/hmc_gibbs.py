"""``engine="hmc_gibbs"``: NUTS (or HMC) on the continuous latents and Gibbs on the finite
ones, alternating (Metropolis-within-Gibbs, as NumPyro's ``HMCGibbs``).

For models whose discrete part is too large to sum out exactly (per-item assignments of a
big mixture, LDA's topic assignments, large MRF parts): each iteration takes one NUTS
transition of the continuous latents with the discrete ones held at their current values,
then one Gibbs sweep of the discrete latents (``genppl.gibbs``) given the new continuous
values -- the model tabulated at those values, every colour of conditionally independent
instances drawn at once. NUTS's potential reads the discrete values from the same place the
sweep writes them, and its cached energy is dropped after each sweep, so every transition
targets the current conditional.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from pyro import poutine
from pyro.infer import HMC, NUTS
from pyro.infer.mcmc.util import initialize_model

from genppl.dsl.model import Model
from genppl.engines.chains import run_chains, stack_chains
from genppl.engines.common import (
    Prepared,
    init_values,
    prepare,
    progress_bar,
    seed_everything,
    with_params,
)
from genppl.engines.registry import register
from genppl.errors import ModelError
from genppl.exact.from_model import model_factors
from genppl.gibbs.grounding import FactorGraph, ground
from genppl.gibbs.kernel import colouring, sweep
from genppl.pyro.layout import resolve_sizes, to_pyro_layout
from genppl.pyro.values import from_pyro_layout, split_site
from genppl.results import Posterior


@with_params
def infer(model: Model, data: dict[str, Any] | None = None, *, num_samples: int = 500,
          warmup_steps: int | None = None, num_chains: int = 1, seed: int | None = None,
          kernel: str = "nuts", target_accept_prob: float = 0.8, max_tree_depth: int = 10,
          init: dict[str, Any] | None = None, executor: str = "auto",
          progress: bool = True) -> Posterior:
    """``num_samples`` iterations per chain after ``warmup_steps`` (default as many, during
    which NUTS adapts its step size and mass matrix); chain c is seeded ``seed + c``
    (``executor``: see ``genppl.engines.chains``); ``init`` gives starting values of
    continuous latents by name."""
    if kernel not in ("nuts", "hmc"):
        raise ModelError(f"engine 'hmc_gibbs': kernel must be 'nuts' or 'hmc', got {kernel!r}.")
    start = time.perf_counter()
    prep = prepare(model, data)
    if not prep.continuous:
        raise ModelError(f"model {model.name!r} has no continuous latents; use engine "
                         "'gibbs' (or 'exact').")
    if not prep.enumerated:
        raise ModelError(f"model {model.name!r} has no finite latents; use engine 'nuts'.")
    chained = sorted(n for n in prep.discrete_nodes if model.nodes[n].chain is not None)
    if chained:
        raise ModelError(f"engine 'hmc_gibbs' does not yet sample finite chain latents "
                         f"({chained}); sum them out with engine 'nuts'.")
    warmup = num_samples if warmup_steps is None else warmup_steps
    base = int(torch.randint(2**31 - num_chains, ())) if seed is None else seed
    make = NUTS if kernel == "nuts" else HMC
    options = ({"target_accept_prob": target_accept_prob, "max_tree_depth": max_tree_depth}
               if kernel == "nuts" else {})

    def chain(index: int) -> dict[str, torch.Tensor]:
        seed_everything(base + index)
        return _Chain(prep, data or {}, init, make, options).run(
            warmup, num_samples, progress and num_chains == 1)

    samples = stack_chains(run_chains(chain, num_chains, executor=executor,
                                      device=model.device))
    return Posterior(model.name, "hmc_gibbs", samples=samples,
                     seconds=time.perf_counter() - start,
                     info={"num_chains": num_chains, "kernel": kernel})


class _Chain:
    """One chain's state: the discrete values (Pyro layout, read by NUTS's potential through
    ``poutine.condition``), the NUTS kernel, and the colouring of the discrete instances."""

    def __init__(self, prep: Prepared, data: dict[str, Any], init: dict[str, Any] | None,
                 make: Any, options: dict[str, Any]) -> None:
        self.prep = prep
        self.data = data
        self.sizes, _ = resolve_sizes(prep.model, prep.data)
        self.discrete: dict[str, torch.Tensor] = {}
        with torch.no_grad():  # a forward draw from the prior gives the starting discrete values
            trace = poutine.trace(prep.program).get_trace(**prep.data)
        for site in prep.enumerated:
            self.discrete[site] = trace.nodes[site]["value"]
        params, potential, self.transforms, _ = initialize_model(
            poutine.condition(prep.program, data=self.discrete), model_kwargs=prep.data,
            max_plate_nesting=prep.max_plate_nesting, init_strategy=init_values(prep, init))
        self.params = params
        self.kernel = make(potential_fn=potential, transforms=self.transforms, **options)
        self.kernel.initial_params = params
        self.colours: list[torch.Tensor] | None = None

    def run(self, warmup: int, num_samples: int, progress: bool) -> dict[str, torch.Tensor]:
        self.kernel.setup(warmup)
        draws: list[dict[str, torch.Tensor]] = []
        for t in progress_bar(range(warmup + num_samples), total=warmup + num_samples,
                              desc="hmc_gibbs", enabled=progress):
            self.params = self.kernel.sample(self.params)
            continuous = self._continuous()
            graph = ground(model_factors(self.prep.model, self.data, point=continuous))
            if self.colours is None:
                self.colours = colouring(graph)
            self._set_discrete(graph, sweep(graph, self.colours, self._instances(graph)))
            self.kernel.clear_cache()  # its energy was for the previous discrete values
            if t >= warmup:
                draws.append({**continuous, **self._compact_discrete()})
        self.kernel.cleanup()
        return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}

    def _continuous(self) -> dict[str, torch.Tensor]:
        """The continuous latents' current values, constrained, in compact layout."""
        out = {}
        for site in self.prep.continuous:
            node = self.prep.model.nodes[split_site(site)[0]]
            value = self.transforms[site].inv(self.params[site]).detach()
            out[node.name] = from_pyro_layout(node, value, self.prep.program.dims,
                                              node.event_dim)
        return out

    def _instances(self, graph: FactorGraph) -> torch.Tensor:
        """The discrete values as the grounded graph's instance states."""
        state = torch.zeros(graph.size, dtype=torch.long, device=graph.padding.device)
        for name, value in self._compact_discrete().items():
            block = graph.blocks[name]
            match = value.reshape(-1, 1) == block.states.to(value.dtype)
            state[block.offset:block.offset + block.size] = match.long().argmax(-1)
        return state

    def _set_discrete(self, graph: FactorGraph, state: torch.Tensor) -> None:
        model = self.prep.model
        for site in self.prep.enumerated:
            node = model.nodes[split_site(site)[0]]
            block = graph.blocks[node.name]
            values = block.states[state[block.offset:block.offset + block.size]]
            compact = values.reshape([self.sizes[p] for p in node.plates])
            self.discrete[site] = to_pyro_layout(node, compact, self.prep.program.dims,
                                                 self.sizes, {})

    def _compact_discrete(self) -> dict[str, torch.Tensor]:
        model, dims = self.prep.model, self.prep.program.dims
        return {split_site(site)[0]: from_pyro_layout(model.nodes[split_site(site)[0]],
                                                      value, dims, 0)
                for site, value in self.discrete.items()}


register("hmc_gibbs", "NUTS on the continuous latents alternating with Gibbs sweeps of the "
         "finite ones (for discrete parts too large to sum out)", infer=infer)

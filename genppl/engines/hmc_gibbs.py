"""``engine="hmc_gibbs"``: NUTS (or HMC) on the continuous latents and Gibbs on the finite
ones, alternating (Metropolis-within-Gibbs, as NumPyro's ``HMCGibbs``).

For models whose discrete part is too large to sum out inside every NUTS step (per-item
assignments of a big mixture, LDA's topic assignments, large MRF parts): each iteration takes
one NUTS transition of the continuous latents with the discrete ones held at their current
values, then updates the discrete latents given the new continuous values -- the model
tabulated at those values -- either by one Gibbs sweep (``discrete="gibbs"``: every colour
of conditionally independent instances drawn at once) or by one exact joint draw from their
conditional (``discrete="exact"``: the exact engine's sampling pass, e.g. forward filtering
backward sampling along a chain; the best block update where it fits in memory). NUTS's
potential reads the discrete values from the place the update writes them, and its cached
energy is dropped after each update, so every transition targets the current conditional.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model

from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError
from genppl.exact.posterior import posterior_draws
from genppl.gibbs.grounding import FactorGraph, ground, group_tables
from genppl.gibbs.kernel import colouring, sweep
from genppl.pyro.layout import resolve_sizes
from genppl.pyro.values import from_pyro_layout, split_site, to_sites
from genppl.results import Posterior
from genppl.runtime.checkpoint import digest
from genppl.runtime.hamiltonian import HamiltonianOptions, kernel_factory, recorded
from genppl.runtime.kernel_state import kernel_state, load_kernel_state
from genppl.runtime.mcmc_runner import ChainOptions, ChainStart, run_mcmc
from genppl.runtime.options import option
from genppl.tabulation.prepared import Prepared, init_values, prepare
from genppl.tabulation.tabulation import Tabulation


@dataclass(frozen=True, kw_only=True)
class HmcGibbsOptions(ChainOptions, HamiltonianOptions):
    """Options of engine ``hmc_gibbs``: the kernel options are engine ``nuts``'s
    (``max_tree_depth`` for NUTS, ``num_steps`` for HMC; one given to the other kernel is
    refused)."""

    kernel: str = option("nuts", "the kernel of the continuous latents: 'nuts' or 'hmc'")
    discrete: str = option("gibbs", "the update of the finite latents: 'gibbs' (one sweep) or "
                           "'exact' (one exact joint draw from their conditional)")
    init: dict[str, Any] | None = option(None, "starting values of continuous latents by name")


def infer(model: Model, data: dict[str, Any] | None, options: HmcGibbsOptions) -> Posterior:
    """``num_samples`` iterations per chain after ``warmup_steps`` (default as many, during
    which NUTS adapts its step size and mass matrix), run by ``genppl.runtime.mcmc_runner``;
    ``discrete`` is ``"gibbs"`` or ``"exact"`` (see above)."""
    kernel, discrete = options.kernel, options.discrete
    if kernel not in ("nuts", "hmc"):
        raise ModelError(f"engine 'hmc_gibbs': kernel must be 'nuts' or 'hmc', got {kernel!r}.")
    if discrete not in ("gibbs", "exact"):
        raise ModelError(f"engine 'hmc_gibbs': discrete must be 'gibbs' or 'exact', got "
                         f"{discrete!r}.")
    start = time.perf_counter()
    prep = prepare(model, data)
    if not prep.continuous:
        raise ModelError(f"model {model.name!r} has no continuous latents; use engine "
                         "'gibbs' (or 'exact').")
    if not prep.enumerated:
        raise ModelError(f"model {model.name!r} has no finite latents; use engine 'nuts'.")
    make = kernel_factory(kernel, options)

    def chain(index: int) -> ChainStart:
        sampler = HmcGibbsKernel(prep, data or {}, options.init, make, discrete)

        def finish(draws: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                             dict[str, Any]]:
            return draws, {"step_size": float(sampler.kernel.step_size)}

        return ChainStart(sampler, model.device, keep=sampler.current, finish=finish)

    # what a checkpoint must match (digests of the data and starting values: made only
    # for a checkpointed run, as hashing the data is a pass over it)
    def describe() -> dict[str, Any]:
        return {"kernel": kernel, "discrete": discrete, "sites": sorted(prep.continuous),
                "data": digest(prep.data), "options": recorded(make),
                "init": digest(options.init or {})}

    return run_mcmc("hmc_gibbs", model, options, start=chain, describe=describe,
                    started=start, info={"kernel": kernel, "discrete": discrete})


class HmcGibbsKernel(MCMCKernel):
    """One iteration: a NUTS/HMC transition of the continuous latents given the discrete
    values, then the discrete update given the new continuous ones. The parameters are the
    continuous latents (unconstrained, as NUTS's); the discrete values are kernel state, by
    Pyro site (Pyro layout, read by NUTS's potential through ``poutine.condition``; a chain
    node has a site per step)."""

    def __init__(self, prep: Prepared, data: dict[str, Any], init: dict[str, Any] | None,
                 make: Any, discrete: str) -> None:
        self.prep = prep
        self.data = data
        self.tabulate = Tabulation(prep.model, data)  # per iteration: only new table values
        self.exact = discrete == "exact"
        self.sizes, _ = resolve_sizes(prep.model, prep.data)
        self.sites: dict[str, list[str]] = {}  # node -> its sites, steps in order
        for site in sorted(prep.enumerated, key=lambda s: split_site(s)[1] or 0):
            self.sites.setdefault(split_site(site)[0], []).append(site)
        self.discrete: dict[str, torch.Tensor] = {}
        with torch.no_grad():  # a forward draw from the prior gives the starting discrete values
            trace = poutine.trace(prep.program).get_trace(**prep.data)
        for site in prep.enumerated:
            self.discrete[site] = trace.nodes[site]["value"]
        params, potential, self.transforms, _ = initialize_model(
            poutine.condition(prep.program, data=self.discrete), model_kwargs=prep.data,
            max_plate_nesting=prep.max_plate_nesting, init_strategy=init_values(prep, init))
        self.kernel = make(potential_fn=potential, transforms=self.transforms)
        self.kernel.initial_params = params
        self.graph: FactorGraph | None = None
        self.colours: list[torch.Tensor] | None = None
        # The discrete values in the data's layout too, kept beside their Pyro sites so
        # neither the sweep nor a kept draw converts them back each step.
        self.compact = self._compact_discrete()
        self.last: dict[str, torch.Tensor] = {}

    @property
    def initial_params(self) -> dict[str, torch.Tensor]:
        return self.kernel.initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        self.kernel.initial_params = params

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self.kernel.setup(warmup_steps)

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        params = self.kernel.sample(params)
        continuous = self._continuous(params)
        fm = self.tabulate(point=continuous)
        if self.exact:
            self._set_compact({k: v[0, 0] for k, v in posterior_draws(fm, 1).items()})
        else:
            # Grounded and coloured once: later steps only bring new table values.
            if self.graph is None:
                self.graph = graph = ground(fm)
                self.colours = colouring(graph)
            else:
                graph = self.graph.with_tables(group_tables(fm, self.graph))
            assert self.colours is not None
            start = graph.with_values(graph.padding.new_zeros(graph.size, dtype=torch.long),
                                      self.compact)
            drawn = graph.compact(sweep(graph, self.colours, start))
            self._set_compact({name: drawn[name] for name in self.sites})
        self.kernel.clear_cache()  # its energy was for the previous discrete values
        self.last = {**continuous, **self.compact}
        return params

    def current(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every latent's value after the step that returned ``params``, in the data's
        layout: the draw a step keeps."""
        return self.last

    def diagnostics(self) -> dict[str, Any]:
        return self.kernel.diagnostics()

    def state_dict(self) -> dict[str, Any]:
        return {"hmc": kernel_state(self.kernel), "discrete": dict(self.discrete)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        load_kernel_state(self.kernel, state["hmc"], device)
        # in place: NUTS's potential reads this dict
        self.discrete.update({k: v.to(device) for k, v in state["discrete"].items()})
        self.compact = self._compact_discrete()

    def _continuous(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The continuous latents' values, constrained, in compact layout."""
        out = {}
        for site in self.prep.continuous:
            node = self.prep.model.nodes[split_site(site)[0]]
            value = self.transforms[site].inv(params[site]).detach()
            out[node.name] = from_pyro_layout(node, value, self.prep.program.dims,
                                              node.event_dim)
        return out

    def _set_compact(self, values: dict[str, torch.Tensor]) -> None:
        """Store each discrete node's values (the data's layout: time axis first for chain
        nodes) at its Pyro sites."""
        self.compact.update(values)
        self.discrete.update(to_sites(self.prep.model, values, self.prep.program.dims,
                                      self.sizes))

    def _compact_discrete(self) -> dict[str, torch.Tensor]:
        model, dims = self.prep.model, self.prep.program.dims
        out = {}
        for name, sites in self.sites.items():
            node = model.nodes[name]
            values = [from_pyro_layout(node, self.discrete[s], dims, 0) for s in sites]
            out[name] = values[0] if node.chain is None else torch.stack(values)
        return out


HMC_GIBBS = register(Engine(
    "hmc_gibbs", "NUTS on the continuous latents alternating with Gibbs sweeps of the finite "
    "ones (for discrete parts too large to sum out)", returns=Returns.DRAWS,
    accepts=Feature.FINITE | Feature.CONTINUOUS | Feature.FACTORS | Feature.NEURAL,
    needs=Feature.FINITE, options=HmcGibbsOptions, infer=infer))

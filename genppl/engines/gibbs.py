"""``engine="gibbs"``: Gibbs sampling of a model whose latents are all finite.

The model is tabulated as the exact engine does (``genppl.tabulation``), grounded into
variable and factor instances (``genppl.gibbs.grounding``), and sampled by
``genppl.gibbs.kernel.GibbsKernel`` under Pyro's ``MCMC`` driver: each full conditional
reads only its instance's factors (its Markov blanket), every colour of a proper colouring
moves at once (checkerboard on grids, layer by layer on bipartite graphs), plates and
chains included. Draws come back as state values, ``(chains, draws, *shape)`` per latent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genppl.budget import memory_budget, refuse_over
from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError
from genppl.exact.posterior import posterior_draws
from genppl.gibbs.collapsed import Collapsed, SequentialSweep, collapse, collapsible_latents
from genppl.gibbs.grounding import FactorGraph, ground
from genppl.gibbs.kernel import GibbsKernel, colouring, draw, starting_state, sweep
from genppl.pyro.program import as_data
from genppl.results import Posterior
from genppl.runtime.checkpoint import digest
from genppl.runtime.mcmc_runner import ChainOptions, ChainStart, run_mcmc
from genppl.runtime.options import Role, option
from genppl.tabulation.tabulation import model_factors


@dataclass(frozen=True, kw_only=True)
class GibbsOptions(ChainOptions):
    """Options of engine ``gibbs``."""

    num_samples: int = option(1000, "sweeps kept per chain, after warm-up", role=Role.DRAWS)
    warmup_steps: int | None = option(None, "warm-up sweeps per chain (None: num_samples // 2)")
    executor: str = option(
        "auto", "where chains run: 'auto', 'serial', 'process', 'ray' (genppl.runtime.chains), "
        "or 'vectorized': every chain as one state, each colour drawn for all chains at once "
        "(fast on one device; one random stream for all chains, so other draws)")
    checkpoint_every: int = option(200, "sweeps between two checkpoint saves")
    schedule: str = option("chromatic", "'chromatic' (every colour of conditionally "
                           "independent instances at once) or 'sequential' (one at a time)")
    blocks: Sequence[Sequence[str]] | str = option(
        "auto", "lists of latents each drawn jointly from its exact conditional after the "
        "colours; 'auto': one per chain with few joint states per step (chain_blocks); () none")
    init: dict[str, Any] | None = option(
        None, "starting values of finite latents by name (the rest are drawn)")

    def warmup(self) -> int:
        return self.num_samples // 2 if self.warmup_steps is None else self.warmup_steps


def infer(model: Model, data: dict[str, Any] | None, options: GibbsOptions) -> Posterior:
    """Chains of sweeps (``genppl.runtime.mcmc_runner``); with ``executor="vectorized"``,
    every chain as one state with a chain axis. The grounded factor graph and the kept draws
    are checked against the memory budget (``genppl.budget``): a run that needs more is
    refused before it allocates."""
    num_samples, num_chains, blocks = options.num_samples, options.num_chains, options.blocks
    start = time.perf_counter()
    collapsible = collapsible_latents(model)
    collapsed = collapse(model, data or {}, collapsible) if collapsible else None
    if collapsed is not None:
        graph = collapsed.graph
    else:
        fm = model_factors(model, data or {})
        if not fm.variables:
            raise ModelError(f"model {model.name!r} has no latents for engine 'gibbs'.")
        graph = ground(fm)
    refuse_over(num_samples * num_chains * graph.size * 8, memory_budget(),
                f"keeping {num_samples:,} draws of {graph.size:,} latent instances in "
                f"{num_chains} chain(s)", "Keep fewer draws (num_samples) or chains")
    if isinstance(blocks, str):
        if blocks != "auto":
            raise ModelError(f"engine 'gibbs': blocks must be 'auto' or lists of latents, got "
                             f"{blocks!r}.")
        blocks = chain_blocks(graph) if collapsed is None else []
    elif blocks and collapsed is not None:
        raise ModelError(f"engine 'gibbs': blocks are drawn by the exact engine, which cannot "
                         f"integrate out {sorted(collapsible)}; leave blocks out (the latents "
                         "that read them are drawn one at a time from exact conditionals).")
    step = _Step(model, data or {}, graph, colouring(graph, options.schedule), blocks, collapsed)
    vectorized = options.executor == "vectorized"

    def chain(index: int) -> ChainStart:
        """Chain ``index``, or with ``vectorized`` every chain as one (chains, V) state."""
        starts = [_initial_state(model, graph, step, options.init)
                  for _ in range(num_chains if vectorized else 1)]
        kernel = GibbsKernel(step, torch.stack(starts) if vectorized else starts[0])

        def finish(states: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                              dict[str, Any]]:
            drawn = states["state"].transpose(0, 1) if vectorized else states["state"]
            out = graph.compact(drawn)
            if collapsed is not None:
                out.update(collapsed.uncollapse(drawn))
            return out, {}

        return ChainStart(kernel, graph.padding.device, finish=finish)

    # what a checkpoint must match (digests of the data and starting values: made only
    # for a checkpointed run, as hashing the data is a pass over it)
    def describe() -> dict[str, Any]:
        return {"instances": graph.size, "schedule": options.schedule,
                "blocks": [list(b) for b in blocks], "vectorized": vectorized,
                "data": digest(_given(data)), "init": digest(_given(options.init))}

    return run_mcmc("gibbs", model, options, start=chain, describe=describe, started=start,
                    vectorized=vectorized,
                    info={"colours": len(step.colours), "instances": graph.size,
                          "blocks": step.blocks, "collapsed": sorted(collapsible)})


#: A chain is drawn as a block when its latents have at most this many joint states per
#: step: forward filtering then costs a states x states table per step.
MAX_BLOCK_STATES = 1024


def chain_blocks(graph: FactorGraph) -> list[list[str]]:
    """One block per chain: its latents, drawn jointly by forward filtering backward
    sampling. Single-site updates along a chain crawl wherever neighbouring steps are
    strongly coupled (a sticky HMM), and the exact draw costs about one sweep's worth of
    work per step; chains with more than ``MAX_BLOCK_STATES`` joint states per step stay
    single-site."""
    by_chain: dict[str, list[str]] = {}
    for name, block in graph.blocks.items():
        if block.chain is not None:
            by_chain.setdefault(block.chain, []).append(name)
    return [sorted(names) for names in by_chain.values()
            if math.prod(len(graph.blocks[n].states) for n in names) <= MAX_BLOCK_STATES]


class _Step:
    """One sweep: the colours of the instances outside every block and outside the collapsed
    latents' readers, then those readers one at a time (``SequentialSweep``), then each
    block drawn jointly from its exact conditional (the model tabulated with every other
    latent as evidence at its current value)."""

    def __init__(self, model: Model, data: dict[str, Any], graph: FactorGraph,
                 colours: list[torch.Tensor], blocks: Sequence[Sequence[str]],
                 collapsed: Collapsed | None = None) -> None:
        self.model, self.data, self.graph = model, data, graph
        self.sequential = SequentialSweep(collapsed) if collapsed is not None else None
        self.blocks = [list(b) for b in blocks]
        named = [n for b in self.blocks for n in b]
        unknown = [n for n in named if n not in graph.blocks]
        if unknown or len(set(named)) < len(named):
            raise ModelError(f"engine 'gibbs': blocks must name distinct finite latents of "
                             f"{model.name!r} ({sorted(graph.blocks)}); got {self.blocks}.")
        inside = torch.zeros(graph.size, dtype=torch.bool, device=graph.padding.device)
        for name in named:
            b = graph.blocks[name]
            inside[b.offset:b.offset + b.size] = True
        self.coupled = collapsed.coupled if collapsed is not None else inside.new_zeros(
            0, dtype=torch.long)
        inside[self.coupled] = True
        self.colours = [c[~inside[c]] for c in colours if bool((~inside[c]).any())]

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        """``state`` (V,), or (chains, V) moved together (blocks and collapsed readers drawn
        chain by chain)."""
        state = sweep(self.graph, self.colours, state)
        if self.sequential is not None:
            state = (self.sequential(state) if state.dim() == 1 else
                     torch.stack([self.sequential(s) for s in state]))
        for names in self.blocks:
            state = (self.draw_block(state, names) if state.dim() == 1 else
                     torch.stack([self.draw_block(s, names) for s in state]))
        return state

    def draw_block(self, state: torch.Tensor, names: list[str]) -> torch.Tensor:
        evidence = {k: v for k, v in self.graph.compact(state).items() if k not in names}
        fm = model_factors(self.model, {**self.data, **evidence})
        drawn = posterior_draws(fm, 1)
        return self.graph.with_values(state, {n: drawn[n][0, 0] for n in names})


def _initial_state(model: Model, graph: FactorGraph, step: _Step,
                   init: dict[str, Any] | None) -> torch.Tensor:
    if not init and step.sequential is None:
        return starting_state(graph, step)
    init = init or {}
    given = torch.zeros(graph.size, dtype=torch.bool, device=graph.padding.device)
    values = {}
    for name, value in init.items():
        block = graph.blocks.get(name)
        if block is None:
            raise ModelError(f"init names {name!r}, which is not a finite latent of "
                             f"{model.name!r}; latents: {sorted(graph.blocks)}.")
        value = as_data(model, name, value)
        if value.numel() not in (1, block.size):
            raise ModelError(f"init for {name!r} must hold {block.size} value(s) among its "
                             f"states {block.states.tolist()}.")
        values[name] = value.reshape(-1).expand(block.size).reshape(block.layout)
        given[block.offset:block.offset + block.size] = True
    state = graph.with_values(torch.zeros_like(given, dtype=torch.long), values)
    # The latents init leaves out: drawn given the ones it sets (the collapsed latents'
    # readers from the other tables alone: a random start, as collapsed samplers start).
    for ids in [*step.colours, step.coupled]:
        free = ids[~given[ids]]
        if len(free):
            state[free] = draw(graph.conditionals(state)[free])
    for names in step.blocks:
        if not any(n in init for n in names):
            state = step.draw_block(state, names)
    if not bool(torch.isfinite(graph.log_joint(state))):
        raise ModelError("engine 'gibbs': the init values have probability zero under "
                         f"{model.name!r} and its data.")
    return state



def _given(values: dict[str, Any] | None) -> dict[str, Any]:
    """The values actually given (``None`` stands for absent)."""
    return {k: v for k, v in (values or {}).items() if v is not None}


GIBBS = register(Engine(
    "gibbs", "Gibbs sampling of finite latents: full conditionals from each instance's Markov "
    "blanket, a colour of conditionally independent instances per update (checkerboard on "
    "grids); conjugate continuous latents integrated out", returns=Returns.DRAWS,
    accepts=Feature.FINITE | Feature.CONTINUOUS | Feature.FACTORS | Feature.NEURAL,
    needs=Feature.FINITE, options=GibbsOptions, infer=infer))

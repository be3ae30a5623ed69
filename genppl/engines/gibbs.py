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
from pathlib import Path
from typing import Any

import torch

from genppl.budget import memory_budget, refuse_over
from genppl.dsl.model import Model
from genppl.engines.registry import register
from genppl.errors import ModelError
from genppl.exact.posterior import posterior_draws
from genppl.gibbs.collapsed import Collapsed, SequentialSweep, collapse, collapsible_latents
from genppl.gibbs.grounding import FactorGraph, ground
from genppl.gibbs.kernel import GibbsKernel, colouring, draw, starting_state, sweep
from genppl.pyro.program import as_data
from genppl.results import Posterior
from genppl.runtime.chains import Advance, run_chains, stack_chains
from genppl.runtime.checkpoint import ChainCheckpoint, check_checkpoint, digest
from genppl.runtime.driver import drive
from genppl.runtime.params import with_params
from genppl.runtime.progress import seed_everything
from genppl.tabulation.tabulation import model_factors


@with_params
def infer(model: Model, data: dict[str, Any] | None = None, *, num_samples: int = 1000,
          warmup_steps: int | None = None, num_chains: int = 1, seed: int | None = None,
          schedule: str = "chromatic", blocks: Sequence[Sequence[str]] | str = "auto",
          init: dict[str, Any] | None = None,
          executor: str = "auto", checkpoint: str | Path | None = None,
          checkpoint_every: int = 200, progress: bool = True) -> Posterior:
    """``num_samples`` sweeps per chain after ``warmup_steps`` (default: as many as
    ``num_samples // 2``); chain c is seeded with ``seed + c`` and chains run in worker
    processes or one after another (``executor``, see ``genppl.runtime.chains``), with the
    same draws either way, or (``executor="vectorized"``) as one state with a chain axis,
    every colour drawn for all chains at once -- the fast way on one device, a GPU
    especially, but one random stream for all chains (seeded ``seed``), so not the draws
    of the other executors; ``schedule`` is ``"chromatic"`` (default) or ``"sequential"``
    (one instance at a time); each of ``blocks`` (lists of latents) is drawn jointly, after
    the colours, from its exact conditional given everything else (the exact engine's
    sampling pass: forward filtering backward sampling for a chain), which mixes where
    single-site updates crawl; ``blocks="auto"`` (default) makes a block of each chain's
    latents whose joint states per step are few enough (see ``chain_blocks``), ``()`` none;
    ``init`` gives starting values of latents by name (the rest
    are drawn). With ``checkpoint`` (a directory), each chain saves its progress every
    ``checkpoint_every`` sweeps and a run started again with the same arguments resumes
    where it stopped, with the draws an uninterrupted run gives (``seed`` is then
    required). The grounded factor graph and the kept draws are checked against the memory
    budget (``genppl.budget``): a run that needs more is refused before it allocates."""
    for name, value in (("num_samples", num_samples), ("num_chains", num_chains)):
        if value < 1:
            raise ModelError(f"engine 'gibbs': {name} must be >= 1, got {value}.")
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
    step = _Step(model, data or {}, graph, colouring(graph, schedule), blocks, collapsed)
    warmup = num_samples // 2 if warmup_steps is None else warmup_steps
    check_checkpoint("engine 'gibbs'", checkpoint, seed, checkpoint_every)
    base = int(torch.randint(2**31 - num_chains, ())) if seed is None else seed
    vectorized = executor == "vectorized"
    # what a checkpoint must match (digests of the data and starting values: made only
    # for a checkpointed run, as hashing the data is a pass over it)
    run = None if checkpoint is None else {
        "engine": "gibbs", "model": model.name, "instances": graph.size,
        "schedule": schedule, "blocks": [list(b) for b in blocks], "warmup": warmup,
        "num_samples": num_samples, "seed": base, "vectorized": vectorized,
        "data": digest(_given(data)), "init": digest(_given(init))}

    def chain(index: int, advance: Advance) -> dict[str, torch.Tensor]:
        """Chain ``index``, or with ``vectorized`` every chain as one (chains, V) state."""
        seed_everything(base + index)
        store = None if run is None else ChainCheckpoint(checkpoint, index, run)
        starts = [_initial_state(model, graph, step, init)
                  for _ in range(num_chains if vectorized else 1)]
        kernel = GibbsKernel(step, torch.stack(starts) if vectorized else starts[0])
        states = drive(kernel, warmup=warmup, num_samples=num_samples, advance=advance,
                       device=graph.padding.device, store=store, every=checkpoint_every)
        drawn = states["state"].transpose(0, 1) if vectorized else states["state"]
        out = graph.compact(drawn)
        if collapsed is not None:
            out.update(collapsed.uncollapse(drawn))
        return out

    if vectorized:
        samples = run_chains(chain, 1, executor="serial", device=model.device,
                             steps=warmup + num_samples, progress=progress,
                             desc=f"gibbs, {num_chains} chains")[0]
    else:
        samples = stack_chains(run_chains(chain, num_chains, executor=executor,
                                          device=model.device, steps=warmup + num_samples,
                                          progress=progress, desc="gibbs"))
    return Posterior(model.name, "gibbs", samples=samples,
                     seconds=time.perf_counter() - start,
                     info={"num_chains": num_chains, "colours": len(step.colours),
                           "instances": graph.size, "blocks": step.blocks,
                           "collapsed": sorted(collapsible)})


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


register("gibbs", "Gibbs sampling of finite latents: full conditionals from each instance's "
         "Markov blanket, a colour of conditionally independent instances per update "
         "(checkerboard on grids), under Pyro's MCMC driver", infer=infer)

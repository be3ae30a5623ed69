"""One runner for every MCMC engine (``nuts``, ``hmc``, ``gibbs``, ``hmc_gibbs``): the part
of a sampling run that is not the sampler.

An engine hands over its options (``ChainOptions``: draws, warm-up, chains, seed, executor,
checkpoints) and a way to start chain ``index``: a ``ChainStart`` holding a transition
kernel -- anything with Pyro's ``MCMCKernel`` interface as ``genppl.runtime.driver.drive``
uses it, i.e. an ``init`` (``setup`` and ``initial_params``) and a ``step`` (``sample``) on
a state, as BlackJAX's ``SamplingAlgorithm(init, step)`` -- and what to make of the chain's
draws. The runner checks the options and the checkpoint request, draws the base seed (chain
c is seeded ``seed + c``), describes the run for its checkpoints, runs the chains through
``run_chains`` and ``drive``, stacks them and times the run, and returns the ``Posterior``.
A new sampler (e.g. annealed importance sampling's transitions) only writes its kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.errors import ModelError
from genppl.results import Posterior
from genppl.runtime.chains import Advance, run_chains, stack_chains
from genppl.runtime.checkpoint import ChainCheckpoint, check_checkpoint
from genppl.runtime.driver import Draw, drive
from genppl.runtime.options import Role, option
from genppl.runtime.params import FixedParams
from genppl.runtime.progress import seed_everything


@dataclass(frozen=True, kw_only=True)
class ChainOptions(FixedParams):
    """The options every MCMC engine takes; an engine's options class derives from it,
    adding its kernel's and changing the defaults it needs."""

    num_samples: int = option(500, "draws kept per chain, after warm-up", role=Role.DRAWS)
    warmup_steps: int | None = option(
        None, "warm-up steps per chain (None: the engine's default, see ``warmup``)")
    num_chains: int = option(1, "number of chains; chain c is seeded seed + c")
    seed: int | None = option(None, "base seed (None: drawn from torch's global stream)",
                              role=Role.SEED)
    executor: str = option(
        "auto", "where chains run: 'auto', 'serial', 'process' or 'ray' (genppl.runtime.chains)")
    progress: bool = option(True, "a progress bar per chain", role=Role.PROGRESS)
    checkpoint: str | Path | None = option(
        None, "a directory: each chain saves its progress there and a repeated call resumes "
        "it with the draws of an uninterrupted run (needs seed)")
    checkpoint_every: int = option(100, "steps between two checkpoint saves")

    def warmup(self) -> int:
        """Warm-up steps: ``warmup_steps``, or as many as the draws kept."""
        return self.num_samples if self.warmup_steps is None else self.warmup_steps


@dataclass
class ChainStart:
    """A started chain: its ``kernel``, the ``device`` its state lives on, what a step keeps
    (``keep``: default the constrained parameters), the model's arguments for the kernel's
    ``setup``, and ``finish``, which turns the kept draws into the chain's draws and
    diagnostics."""

    kernel: Any
    device: torch.device
    keep: Callable[[dict[str, torch.Tensor]], Draw] | None = None
    model_kwargs: dict[str, Any] | None = None
    finish: Callable[[Draw], tuple[Draw, dict[str, Any]]] | None = None


def run_mcmc(engine: str, model: Model, options: ChainOptions, *,
             start: Callable[[int], ChainStart], describe: Callable[[], dict[str, Any]],
             started: float, info: dict[str, Any] | None = None,
             vectorized: bool = False) -> Posterior:
    """The posterior of ``options.num_chains`` chains of ``engine``, each started by
    ``start(index)``. ``describe()`` gives what a checkpoint must match beyond the options
    every chain run has (called only when checkpointing: it may hash the data);
    ``started`` is when the engine began (the posterior's ``seconds`` count from there);
    ``info`` goes into the posterior's ``info`` beside ``num_chains`` and the chains'
    ``diagnostics``. ``vectorized``: ``start(0)`` starts every chain at once, as one state
    with a chain axis, whose draws come back with that axis first."""
    for name in ("num_samples", "num_chains"):
        if getattr(options, name) < 1:
            raise ModelError(f"engine {engine!r}: {name} must be >= 1, got "
                             f"{getattr(options, name)}.")
    check_checkpoint(f"engine {engine!r}", options.checkpoint, options.seed,
                     options.checkpoint_every)
    num_chains, warmup = options.num_chains, options.warmup()
    base = (int(torch.randint(2**31 - num_chains, ())) if options.seed is None
            else options.seed)
    run = None if options.checkpoint is None else {
        "engine": engine, "model": model.name, "warmup": warmup,
        "num_samples": options.num_samples, "seed": base, **describe()}

    def chain(index: int, advance: Advance) -> tuple[Draw, dict[str, Any]]:
        seed_everything(base + index)
        begun = start(index)
        store = None if run is None else ChainCheckpoint(options.checkpoint, index, run)
        draws = drive(begun.kernel, warmup=warmup, num_samples=options.num_samples,
                      advance=advance, device=begun.device, store=store,
                      every=options.checkpoint_every, keep=begun.keep,
                      model_kwargs=begun.model_kwargs)
        return begun.finish(draws) if begun.finish is not None else (draws, {})

    steps = warmup + options.num_samples
    if vectorized:
        chains = run_chains(chain, 1, executor="serial", device=model.device, steps=steps,
                            progress=options.progress, desc=f"{engine}, {num_chains} chains")
        samples = chains[0][0]
    else:
        chains = run_chains(chain, num_chains, executor=options.executor, device=model.device,
                            steps=steps, progress=options.progress, desc=engine)
        samples = stack_chains([draws for draws, _ in chains])
    diagnostics = [d for _, d in chains]
    return Posterior(model.name, engine, samples=samples, seconds=time.perf_counter() - started,
                     info={"num_chains": num_chains, **(info or {}),
                           **({"diagnostics": diagnostics} if any(diagnostics) else {})})

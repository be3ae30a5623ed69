"""``engine="nuts"`` and ``engine="hmc"``: Pyro's Hamiltonian samplers on the continuous
latents, with finite latents summed out during sampling and drawn afterwards, per posterior
sample, from their exact conditional (``infer_discrete``), so every latent has draws.
Linear-Gaussian chains are summed out the same way, by the Kalman filter's exact marginal
likelihood, and drawn per posterior sample by FFBS (``genppl.tabulation.gaussian_chains``)."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.engines.registry import register
from genppl.errors import ModelError
from genppl.pyro.values import split_site, stack_draws
from genppl.results import Posterior
from genppl.runtime.chains import Advance, run_chains, stack_chains
from genppl.runtime.checkpoint import ChainCheckpoint, check_checkpoint, digest
from genppl.runtime.driver import drive
from genppl.runtime.hamiltonian import kernel_factory, recorded
from genppl.runtime.params import with_params
from genppl.runtime.progress import seed_everything
from genppl.tabulation.prepared import (
    Prepared,
    check_enumeration,
    complete_draw,
    init_values,
    prepare,
)
from genppl.tabulation.summed_out import FiniteSummedOut, continuous_below_finite


@with_params
def infer(model: Model, data: dict[str, Any] | None = None, *, kernel: str = "nuts",
          num_samples: int = 500, warmup_steps: int | None = None, num_chains: int = 1,
          seed: int | None = None, progress: bool = True, target_accept_prob: float = 0.8,
          step_size: float = 1.0, adapt_step_size: bool = True,
          max_tree_depth: int | None = None, num_steps: int | None = None,
          init: dict[str, Any] | None = None, executor: str = "auto",
          marginalise: str = "auto", checkpoint: str | Path | None = None,
          checkpoint_every: int = 100) -> Posterior:
    """Run ``num_chains`` chains (seeds ``seed + c``), in worker processes or one after
    another (``executor``, see ``genppl.runtime.chains``), each starting from ``init``
    (latent values by name) or its prior median. ``marginalise`` sums finite latents out
    by Pyro's enumeration (``"enum"``) or by the exact engine (``"exact"``: no cap on their
    number, linear time along chains, see ``genppl.tabulation.summed_out``); ``"auto"``
    chooses (see ``_automatic``; ``info["marginalise"]`` says which ran). With
    ``checkpoint`` (a directory; ``seed`` required), each chain saves its progress every
    ``checkpoint_every`` steps, adaptation included, and the same call later resumes it
    with the draws an uninterrupted run gives.

    Kernel options: ``step_size`` is the starting step size, adapted during warm-up towards
    ``target_accept_prob`` unless ``adapt_step_size=False``; ``max_tree_depth`` (NUTS only,
    default 10) caps a trajectory at 2**depth steps; ``num_steps`` (HMC only, default 10) is
    the fixed number of leapfrog steps. ``info["diagnostics"]`` gives each chain's final
    (adapted) ``step_size``."""
    if marginalise not in ("auto", "enum", "exact"):
        raise ModelError(f"engine {kernel!r}: marginalise must be 'auto', 'enum' or 'exact', "
                         f"got {marginalise!r}.")
    start = time.perf_counter()
    prep = prepare(model, data, collapse=True)
    if not prep.continuous:
        raise ModelError(f"model {model.name!r} has no continuous latents for {kernel.upper()} "
                         "to sample; use engine='enum' (exact) for a fully discrete model, or "
                         "engine='exact' when the latents are linear-Gaussian chains.")
    warmup = num_samples if warmup_steps is None else warmup_steps
    make = kernel_factory(kernel, init_strategy=init_values(prep, init), step_size=step_size,
                   adapt_step_size=adapt_step_size, target_accept_prob=target_accept_prob,
                   max_tree_depth=max_tree_depth, num_steps=num_steps)
    if marginalise == "auto":
        marginalise = _automatic(prep)
    check_checkpoint(f"engine {kernel!r}", checkpoint, seed, checkpoint_every)
    base = int(torch.randint(2**31 - num_chains, ())) if seed is None else seed
    # what a checkpoint must match (digests of the data and starting values: made only
    # for a checkpointed run, as hashing the data is a pass over it)
    run = None if checkpoint is None else {
        "engine": kernel, "model": model.name, "warmup": warmup,
        "num_samples": num_samples, "seed": base, "marginalise": marginalise,
        "sites": sorted(prep.continuous),
        "data": digest(prep.data),
        "kernel": recorded(make),
        "init": digest(init or {})}
    summed = _summed_out(prep) if marginalise == "exact" and prep.enumerated else None
    if marginalise == "enum" and prep.enumerated:
        check_enumeration(prep, "Use marginalise='exact', or engine 'hmc_gibbs'")
    target = prep.target if summed is None else summed

    def chain(index: int, advance: Advance) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        seed_everything(base + index)
        sampler = make(target, max_plate_nesting=prep.max_plate_nesting, jit_compile=False)
        store = None if run is None else ChainCheckpoint(checkpoint, index, run)
        samples = drive(sampler, warmup=warmup, num_samples=num_samples, advance=advance,
                        device=model.device, store=store, every=checkpoint_every,
                        model_kwargs=prep.data)
        with torch.no_grad():
            draws = [complete_draw(prep, _with_finite(summed, {k: v[i] for k, v in
                                                              samples.items()}))
                     for i in range(num_samples)]
        diagnostics = {**sampler.diagnostics(), "step_size": float(sampler.step_size)}
        return {k: v[0] for k, v in stack_draws(draws).items()}, diagnostics

    chains = run_chains(chain, num_chains, executor=executor, device=model.device,
                        steps=warmup + num_samples, progress=progress, desc=kernel)
    samples = stack_chains([draws for draws, _ in chains])
    return Posterior(model.name, kernel, samples=samples,
                     seconds=time.perf_counter() - start,
                     info={"diagnostics": [d for _, d in chains], "num_chains": num_chains,
                           "marginalise": marginalise if prep.enumerated else None})


#: More finite latent sites than this go to the exact engine: Pyro's enumeration gives each
#: its own tensor dimension, and stops at 25 on CUDA (64 on the CPU).
ENUMERATED_SITES = 24


def _automatic(prep: Prepared) -> str:
    """The exact engine where it is clearly better: finite latents along a chain (Pyro
    enumerates a chain site by site in Python; the exact engine contracts it in one pass:
    7x faster on a 200-step switching chain) or more of them than enumeration can hold.
    Otherwise Pyro's enumeration, which vectorises plates as well and costs the same on a
    plated mixture (Pearson's crabs: within run-to-run noise), and is the only one of the
    two that sums out finite latents above continuous ones or beside Kalman chains."""
    if prep.gaussian is not None or continuous_below_finite(prep.model, prep.enumerated,
                                                            prep.continuous):
        return "enum"
    chained = any(split_site(site)[1] is not None for site in prep.enumerated)
    return "exact" if chained or len(prep.enumerated) > ENUMERATED_SITES else "enum"


def _summed_out(prep: Prepared) -> FiniteSummedOut:
    if prep.gaussian is not None:
        raise ModelError("marginalise='exact' does not yet combine with linear-Gaussian "
                         "chains summed out by the Kalman filter; use marginalise='enum'.")
    return FiniteSummedOut(prep.model, prep.program, prep.enumerated, prep.observed,
                           prep.continuous, prep.data)


def _with_finite(summed: FiniteSummedOut | None, sites: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """A posterior sample's continuous sites, plus (when the exact engine summed the finite
    latents out) an exact draw of the finite ones given them, as sites."""
    if summed is None:
        return sites
    return {**sites, **summed.draw_finite(sites)}


register("nuts", "No-U-Turn sampler on continuous latents; finite latents summed out and "
         "recovered exactly per draw", infer=partial(infer, kernel="nuts"))
register("hmc", "Hamiltonian Monte Carlo on continuous latents; finite latents summed out and "
         "recovered exactly per draw", infer=partial(infer, kernel="hmc"))

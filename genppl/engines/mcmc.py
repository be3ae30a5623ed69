"""``engine="nuts"`` and ``engine="hmc"``: Pyro's Hamiltonian samplers on the continuous
latents, with finite latents summed out during sampling and drawn afterwards, per posterior
sample, from their exact conditional (``infer_discrete``), so every latent has draws.
Linear-Gaussian chains are summed out the same way, by the Kalman filter's exact marginal
likelihood, and drawn per posterior sample by FFBS (``genppl.tabulation.gaussian_chains``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError
from genppl.pyro.values import split_site, stack_draws
from genppl.results import Posterior
from genppl.runtime.checkpoint import digest
from genppl.runtime.hamiltonian import HamiltonianOptions, kernel_factory, recorded
from genppl.runtime.mcmc_runner import ChainOptions, ChainStart, run_mcmc
from genppl.runtime.options import option
from genppl.tabulation.prepared import (
    Prepared,
    check_enumeration,
    complete_draw,
    init_values,
    prepare,
)
from genppl.tabulation.summed_out import FiniteSummedOut, continuous_below_finite


@dataclass(frozen=True, kw_only=True)
class HamiltonianSamplerOptions(ChainOptions, HamiltonianOptions):
    """Options of engines ``nuts`` and ``hmc`` (``max_tree_depth`` is NUTS's, ``num_steps``
    HMC's: one given to the other kernel is refused)."""

    init: dict[str, Any] | None = option(
        None, "starting values of continuous latents by name (the rest: their prior median)")
    marginalise: str = option(
        "auto", "how finite latents are summed out: 'enum' (Pyro's enumeration), 'exact' (the "
        "exact engine: no cap on their number) or 'auto' (info['marginalise'] says which ran)")


def infer(model: Model, data: dict[str, Any] | None, options: HamiltonianSamplerOptions, *,
          kernel: str) -> Posterior:
    """Run ``num_chains`` chains of ``kernel`` (``genppl.runtime.mcmc_runner``), each starting
    from ``init`` or the prior median. ``marginalise="exact"`` sums finite latents out by the
    exact engine (linear time along chains, see ``genppl.tabulation.summed_out``), ``"auto"``
    chooses (see ``_automatic``). ``info["diagnostics"]`` gives each chain's final (adapted)
    ``step_size``."""
    marginalise = options.marginalise
    if marginalise not in ("auto", "enum", "exact"):
        raise ModelError(f"engine {kernel!r}: marginalise must be 'auto', 'enum' or 'exact', "
                         f"got {marginalise!r}.")
    start = time.perf_counter()
    prep = prepare(model, data, collapse=True)
    if not prep.continuous:
        raise ModelError(f"model {model.name!r} has no continuous latents for {kernel.upper()} "
                         "to sample; use engine='enum' (exact) for a fully discrete model, or "
                         "engine='exact' when the latents are linear-Gaussian chains.")
    make = kernel_factory(kernel, options, init_strategy=init_values(prep, options.init))
    if marginalise == "auto":
        marginalise = _automatic(prep)
    summed = FiniteSummedOut.of(prep) if marginalise == "exact" and prep.enumerated else None
    if marginalise == "enum" and prep.enumerated:
        check_enumeration(prep, "Use marginalise='exact', or engine 'hmc_gibbs'")
    target = prep.target if summed is None else summed
    num_samples = options.num_samples

    def chain(index: int) -> ChainStart:
        sampler = make(target, max_plate_nesting=prep.max_plate_nesting, jit_compile=False)

        def finish(samples: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                               dict[str, Any]]:
            with torch.no_grad():
                draws = [complete_draw(prep, _with_finite(summed, {k: v[i] for k, v in
                                                                  samples.items()}))
                         for i in range(num_samples)]
            diagnostics = {**sampler.diagnostics(), "step_size": float(sampler.step_size)}
            return {k: v[0] for k, v in stack_draws(draws).items()}, diagnostics

        return ChainStart(sampler, model.device, model_kwargs=prep.data, finish=finish)

    # what a checkpoint must match (digests of the data and starting values: made only
    # for a checkpointed run, as hashing the data is a pass over it)
    def describe() -> dict[str, Any]:
        return {"marginalise": marginalise, "sites": sorted(prep.continuous),
                "data": digest(prep.data), "kernel": recorded(make),
                "init": digest(options.init or {})}

    return run_mcmc(kernel, model, options, start=chain, describe=describe, started=start,
                    info={"marginalise": marginalise if prep.enumerated else None})


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


def _with_finite(summed: FiniteSummedOut | None, sites: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """A posterior sample's continuous sites, plus (when the exact engine summed the finite
    latents out) an exact draw of the finite ones given them, as sites."""
    if summed is None:
        return sites
    return {**sites, **summed.draw_finite(sites)}


def _engine(name: str, description: str) -> Engine:
    return register(Engine(
        name, description, returns=Returns.DRAWS,
        accepts=(Feature.FINITE | Feature.CONTINUOUS | Feature.GAUSSIAN_CHAINS
                 | Feature.FACTORS | Feature.NEURAL),
        needs=Feature.CONTINUOUS, options=HamiltonianSamplerOptions,
        infer=partial(infer, kernel=name)))


NUTS = _engine("nuts", "No-U-Turn sampler on continuous latents; finite latents summed out "
               "and recovered exactly per draw")
HMC = _engine("hmc", "Hamiltonian Monte Carlo on continuous latents; finite latents summed out "
              "and recovered exactly per draw")

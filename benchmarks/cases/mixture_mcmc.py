"""Pearson's crab mixture (1,000 points): effective samples per second of the component
means under genppl's samplers and Pyro's NUTS.

Contenders, all from the same start (the EM start: quartiles, equal weights, a common
spread; it keeps the components' labels apart) and the same number of warm-up and kept
draws, four chains each, one after another (seeds ``seed + c``):

- Pyro's NUTS on a hand-written Pyro model with the assignments enumerated and summed out
  (``TraceEnum``; the baseline);
- genppl ``nuts`` on ``models_gallery/pearson_crabs.py``'s model, by default enumerating the
  assignments the same way (drawn afterwards per sample), and with ``marginalise="exact"``,
  the exact engine summing them out (the same potential, computed another way);
- genppl ``hmc_gibbs`` (NUTS on weights, means and spreads alternating with a Gibbs sweep of
  the 1,000 assignments).

genppl's ``gibbs`` samples finite latents only; this model's parameters are continuous, so
it has no row here. Each contender times its own run; the column is the smaller bulk ESS of
the two means (ArviZ) divided by that time.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value

import genppl
from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from benchmarks.mcmc import ONCE, chains_and_draws, ess_rows, timed
from genppl.data import crabs
from models_gallery import pearson_crabs

PYRO = "Pyro NUTS, assignments enumerated"
NUTS_ROW = "genppl nuts, enumerated (default)"
NUTS_EXACT = "genppl nuts, marginalise='exact'"
HMC_GIBBS = "genppl hmc_gibbs"
DRAWS, QUICK_DRAWS = 300, 30
#: Chains per contender, one after another (seeds seed + c): one chain's ESS varies by a
#: fifth from seed to seed, which would swamp the differences measured here.
CHAINS, QUICK_CHAINS = 4, 1


def _pyro_model(x: torch.Tensor) -> None:
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2, dtype=x.dtype)))
    locs = pyro.sample("locs", dist.Uniform(torch.tensor(0.5, dtype=x.dtype), 0.8)
                       .expand([2]).to_event(1))
    scales = pyro.sample("scales", dist.Uniform(torch.tensor(crabs.BIN_WIDTH / 2,
                                                             dtype=x.dtype), 0.1)
                         .expand([2]).to_event(1))
    with pyro.plate("crabs", len(x)):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("ratio", dist.Normal(locs[z], scales[z]), obs=x)


def contenders(config: BenchConfig) -> list[Contender]:
    draws, chains = (QUICK_DRAWS, QUICK_CHAINS) if config.quick else (DRAWS, CHAINS)
    x = crabs.ratios(torch.float64).to(config.device)
    start = {k: v.to(config.device) for k, v in pearson_crabs.initial_values(x).items()}
    model = pearson_crabs.build().to(config.device, torch.float64)

    def pyro_nuts() -> dict[str, torch.Tensor]:
        runs = []
        for c in range(chains):
            pyro.set_rng_seed(config.seed + c)
            kernel = NUTS(_pyro_model, max_plate_nesting=1, jit_compile=False,
                          init_strategy=init_to_value(values=start))
            mcmc = MCMC(kernel, num_samples=draws, warmup_steps=draws, disable_progbar=True)
            mcmc.run(x)
            runs.append(mcmc.get_samples(group_by_chain=True)["locs"])
        return {"locs": torch.cat(runs)}

    def engine(name: str, **options: Any) -> Any:
        def sample() -> dict[str, torch.Tensor]:
            post = genppl.infer(model, {"ratio": x}, engine=name, num_samples=draws,
                                warmup_steps=draws, seed=config.seed, progress=False,
                                init=start, num_chains=chains, executor="serial",
                                **options)
            return {"locs": post.samples["locs"]}
        return sample

    return [Contender(PYRO, timed(pyro_nuts), **ONCE),
            Contender(NUTS_ROW, timed(engine("nuts")), **ONCE),
            Contender(NUTS_EXACT, timed(engine("nuts", marginalise="exact")), **ONCE),
            Contender(HMC_GIBBS, timed(engine("hmc_gibbs")), **ONCE)]


def notes(results: dict[str, Any]) -> list[str]:
    chains, draws = chains_and_draws(results)
    return [f"{draws} warm-up and {draws} kept draws per chain, {chains} chain(s) one after "
            "another (seeds seed + c) per contender, the EM start",
            "ESS: the smaller ArviZ bulk ESS of the two component means; ESS/s divides it by "
            "the contender's own time for the whole run (warm-up included)",
            "genppl gibbs has no row: it samples finite latents only, and this model's "
            "parameters are continuous"]


CASE = register(Case(
    name="mixture_mcmc",
    description="Pearson's crabs (1,000 points): ESS/s of the component means, genppl nuts "
                "and hmc_gibbs vs Pyro NUTS with enumeration",
    baseline=PYRO,
    contenders=contenders,
    evaluate=partial(ess_rows, baseline=PYRO),
    columns=(Column("ess", "ESS (means)", ".0f"),
             Column("ess_per_s", "ESS/s", ".1f"),
             Column("ratio", "ESS/s ratio to Pyro", ".2f"),
             Column("means", "component means", ""),
             Column("mcse", "MCSE of the means", "")),
    notes=notes,
))

"""NUTS on the Nile's two noise scales with the level summed out by the Kalman filter:
effective samples per second, genppl vs Pyro's ``GaussianHMM``.

The model is ``models_gallery/kalman_nile.py``'s with priors (HalfNormal(200) on both
scales), on the 100 annual flows. Contenders, from the same start, seed and number of
warm-up and kept draws, one chain:

- Pyro's NUTS on a hand-written model whose likelihood is ``dist.GaussianHMM`` (Pyro's
  linear-Gaussian state-space distribution: its log density a parallel scan over the
  steps; the baseline);
- genppl ``nuts`` on the DSL model: the chain recognised as linear-Gaussian and summed out
  by genppl's Kalman filter (``genppl.tabulation.gaussian_chains``), the level drawn per sample by
  forward filtering backward sampling.

Pyro's HMMs draw their initial state one transition before the first observation, so its
start has variance 1000^2 + sigma_level^2 where the DSL model's has 1000^2: a difference of
at most a few parts in 10^4 of a diffuse prior. The posterior means of the scales must agree
within Monte Carlo error (the quick test checks it).
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
from models_gallery import kalman_nile

PYRO = "Pyro NUTS, GaussianHMM"
GENPPL = "genppl nuts, Kalman summing-out"
DRAWS, QUICK_DRAWS = 300, 60
START = {"sigma_level": 50.0, "sigma_obs": 120.0}
F64 = torch.float64


def _pyro_model(y: torch.Tensor) -> None:
    prior = torch.tensor(kalman_nile.PRIOR_SCALE, dtype=y.dtype, device=y.device)
    level = pyro.sample("sigma_level", dist.HalfNormal(prior))
    obs = pyro.sample("sigma_obs", dist.HalfNormal(prior))
    zero, one = torch.zeros_like(prior).reshape(1), torch.ones_like(prior).reshape(1, 1)
    hmm = dist.GaussianHMM(
        dist.Normal(zero, kalman_nile.INIT_SCALE).to_event(1), one,
        dist.Normal(zero, level.reshape(1)).to_event(1), one,
        dist.Normal(zero, obs.reshape(1)).to_event(1), duration=len(y))
    pyro.sample("volume", hmm, obs=y.unsqueeze(-1))


def contenders(config: BenchConfig) -> list[Contender]:
    draws = QUICK_DRAWS if config.quick else DRAWS
    y = kalman_nile.data()["volume"].to(config.device, F64)
    start = {k: torch.tensor(v, dtype=F64, device=config.device) for k, v in START.items()}
    model = kalman_nile.build(priors=True).to(config.device, F64)

    def pyro_nuts() -> dict[str, torch.Tensor]:
        pyro.set_rng_seed(config.seed)
        kernel = NUTS(_pyro_model, jit_compile=False, init_strategy=init_to_value(values=start))
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=draws, disable_progbar=True)
        mcmc.run(y)
        return mcmc.get_samples(group_by_chain=True)

    def genppl_nuts() -> dict[str, torch.Tensor]:
        post = genppl.infer(model, {"volume": y}, engine="nuts", num_samples=draws,
                            warmup_steps=draws, seed=config.seed, progress=False, init=start)
        return {k: post.samples[k] for k in START}

    return [Contender(PYRO, timed(pyro_nuts), **ONCE),
            Contender(GENPPL, timed(genppl_nuts), **ONCE)]


def notes(results: dict[str, Any]) -> list[str]:
    _, draws = chains_and_draws(results)
    return [f"{draws} warm-up and {draws} kept draws per contender, one chain, from "
            f"{START}",
            "ESS: the smaller ArviZ bulk ESS of the two scales; ESS/s divides it by the "
            "contender's own time for the whole run (warm-up included)"]


CASE = register(Case(
    name="kalman_nuts",
    description="NUTS on the Nile's noise scales, the level summed out by the Kalman filter: "
                "genppl's DSL model vs Pyro's GaussianHMM",
    baseline=PYRO,
    contenders=contenders,
    evaluate=partial(ess_rows, baseline=PYRO),
    columns=(Column("ess", "ESS (scales)", ".0f"),
             Column("ess_per_s", "ESS/s", ".2f"),
             Column("ratio", "ESS/s ratio to Pyro", ".2f"),
             Column("means", "posterior means", ""),
             Column("mcse", "MCSE of the means", "")),
    notes=notes,
))

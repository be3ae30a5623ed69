"""A two-state switching chain with unknown means: effective samples per second of the
means under NUTS, the chain's states summed out by Pyro's enumeration or by genppl's exact
engine.

Contenders, all from the same start, seed and number of warm-up and kept draws, one chain:

- Pyro's NUTS on a hand-written Pyro model, the states enumerated along ``pyro.markov``
  (``TraceEnum``; the baseline);
- genppl ``nuts`` with ``marginalise="enum"`` (the same enumeration of the compiled program);
- genppl ``nuts`` with its default, the exact engine (``marginalise="exact"``): the chain
  contracted in one pass at the means NUTS proposes, differentiable in them.

The potential is the same function computed three ways, so the draws differ only by
rounding along trajectories; the column is the smaller bulk ESS of the two means divided by
the contender's own time for the whole run.
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

PYRO = "Pyro NUTS, states enumerated"
ENUM = "genppl nuts, marginalise='enum'"
EXACT = "genppl nuts, exact engine (default on chains)"
STEPS, QUICK_STEPS = 100, 12
DRAWS, QUICK_DRAWS = 100, 10
STAY = 0.9  # probability of keeping the state
LOCS = (-1.0, 2.0)  # the means' prior centres (and the simulation's truth)


def _tables(dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    trans = torch.tensor([[STAY, 1 - STAY], [1 - STAY, STAY]], dtype=dtype, device=device)
    return trans, torch.tensor(LOCS, dtype=dtype, device=device)


def build(dtype: torch.dtype = torch.float64, device: str = "cpu") -> genppl.Model:
    trans, locs = _tables(dtype, device)
    m = genppl.Model("switching_means")
    m.latent("mu", lambda: dist.Normal(locs, 1.0).to_event(1))
    with m.chain("t"):
        m.latent("z", lambda z_prev: dist.Categorical(trans[z_prev]),
                 init=lambda: dist.Categorical(torch.full_like(locs, 0.5)))
        m.observed("y", lambda z, mu: dist.Normal(mu[..., z], 1.0))
    return m.to(device, dtype)


def _pyro_model(y: torch.Tensor) -> None:
    trans, locs = _tables(y.dtype, str(y.device))
    mu = pyro.sample("mu", dist.Normal(locs, 1.0).to_event(1))
    z = pyro.sample("z_0", dist.Categorical(torch.full_like(locs, 0.5)),
                    infer={"enumerate": "parallel"})
    pyro.sample("y_0", dist.Normal(mu[..., z], 1.0), obs=y[0])
    for t in pyro.markov(range(1, len(y))):
        z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]), infer={"enumerate": "parallel"})
        pyro.sample(f"y_{t}", dist.Normal(mu[..., z], 1.0), obs=y[t])


def simulate(steps: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    state, states = 0, []
    for _ in range(steps):
        states.append(state)
        if float(torch.rand((), generator=generator)) > STAY:
            state = 1 - state
    noise = torch.randn(steps, generator=generator, dtype=dtype)
    return (torch.tensor(LOCS, dtype=dtype)[torch.tensor(states)] + noise).to(device)


def contenders(config: BenchConfig) -> list[Contender]:
    steps, draws = (QUICK_STEPS, QUICK_DRAWS) if config.quick else (STEPS, DRAWS)
    y = simulate(steps, torch.float64, config.device)
    start = {"mu": _tables(torch.float64, config.device)[1]}
    model = build(torch.float64, config.device)

    def pyro_nuts() -> dict[str, torch.Tensor]:
        pyro.set_rng_seed(config.seed)
        kernel = NUTS(_pyro_model, max_plate_nesting=0, jit_compile=False,
                      init_strategy=init_to_value(values=start))
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=draws, disable_progbar=True)
        mcmc.run(y)
        return {"mu": mcmc.get_samples(group_by_chain=True)["mu"]}

    def engine(**options: Any) -> Any:
        def sample() -> dict[str, torch.Tensor]:
            post = genppl.infer(model, {"y": y}, engine="nuts", num_samples=draws,
                                warmup_steps=draws, seed=config.seed, progress=False,
                                init=start, **options)
            return {"mu": post.samples["mu"]}
        return sample

    return [Contender(PYRO, timed(pyro_nuts), **ONCE),
            Contender(ENUM, timed(engine(marginalise="enum")), **ONCE),
            Contender(EXACT, timed(engine()), **ONCE)]


def notes(results: dict[str, Any]) -> list[str]:
    _, draws = chains_and_draws(results)
    return [f"{draws} warm-up and {draws} kept draws per contender, one chain, "
            f"the means started at their prior centres {LOCS}",
            "ESS: the smaller ArviZ bulk ESS of the two means; ESS/s divides it by the "
            "contender's own time for the whole run (warm-up included)"]


CASE = register(Case(
    name="switching_mcmc",
    description="A two-state switching chain with unknown means: ESS/s of the means, NUTS "
                "with the states summed out by enumeration (Pyro, genppl) or by genppl's "
                "exact engine",
    baseline=PYRO,
    contenders=contenders,
    evaluate=partial(ess_rows, baseline=PYRO),
    columns=(Column("ess", "ESS (means)", ".0f"),
             Column("ess_per_s", "ESS/s", ".2f"),
             Column("ratio", "ESS/s ratio to Pyro", ".2f"),
             Column("means", "posterior means", ""),
             Column("mcse", "MCSE of the means", "")),
    notes=notes,
))

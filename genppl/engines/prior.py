"""``engine="prior"``: ancestral sampling of every node, observed ones included.

Given data for some observed nodes, they are held at it (a conditional simulation); absent
ones are drawn. Inputs must be given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine

from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.pyro.program import bind_data, check_data_sites
from genppl.pyro.values import stack_draws, trace_values
from genppl.results import Posterior
from genppl.runtime.options import Role, option
from genppl.runtime.params import FixedParams
from genppl.runtime.progress import progress_bar, seed_everything


@dataclass(frozen=True, kw_only=True)
class PriorOptions(FixedParams):
    """Options of engine ``prior``."""

    num_samples: int = option(100, "draws of every node", role=Role.DRAWS)
    sizes: dict[str, int] | None = option(None, "plate sizes and chain lengths by name, for "
                                          "drawing without data")
    seed: int | None = option(None, "seed (None: torch's global stream)", role=Role.SEED)
    progress: bool = option(True, "a progress bar", role=Role.PROGRESS)


def infer(model: Model, data: dict[str, Any] | None, options: PriorOptions) -> Posterior:
    """``num_samples`` ancestral draws of every node, the given data held fixed."""
    num_samples = options.num_samples
    seed_everything(options.seed)
    start = time.perf_counter()
    program = model.prior_program()
    data, plate_sizes, lengths = program.bind(bind_data(model, data), options.sizes)
    draws = []
    with torch.no_grad():
        for _ in progress_bar(range(num_samples), total=num_samples, desc="prior",
                              enabled=options.progress):
            trace = poutine.trace(program.execute).get_trace(data, plate_sizes, lengths)
            if not draws:
                check_data_sites(model, trace)
            draws.append(trace_values(model, trace, program.dims,
                                      kinds=("latent", "observed", "deterministic")))
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return Posterior(model.name, "prior", samples=stack_draws(draws),
                     seconds=time.perf_counter() - start, info={"params": params})


PRIOR = register(Engine(
    "prior", "ancestral sampling from the prior (observed nodes drawn unless given)",
    returns=Returns.DRAWS,
    accepts=(Feature.FINITE | Feature.CONTINUOUS | Feature.GAUSSIAN_CHAINS | Feature.NEURAL
             | Feature.IMPLICIT),
    needs=Feature.NONE, options=PriorOptions, infer=infer))

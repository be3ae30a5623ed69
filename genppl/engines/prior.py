"""``engine="prior"``: ancestral sampling of every node, observed ones included.

Given data for some observed nodes, they are held at it (a conditional simulation); absent
ones are drawn. Inputs must be given.
"""

from __future__ import annotations

import time
from typing import Any

import pyro
import torch
from pyro import poutine

from genppl.dsl.model import Model
from genppl.engines.registry import register
from genppl.pyro.program import bind_data, check_data_sites
from genppl.pyro.values import stack_draws, trace_values
from genppl.results import Posterior
from genppl.runtime.params import with_params
from genppl.runtime.progress import progress_bar, seed_everything


@with_params
def infer(model: Model, data: dict[str, Any] | None = None, *, num_samples: int = 100,
          sizes: dict[str, int] | None = None, seed: int | None = None,
          progress: bool = True) -> Posterior:
    """``sizes`` sets plate sizes and chain lengths by name, for drawing without data."""
    seed_everything(seed)
    start = time.perf_counter()
    program = model.prior_program()
    data, plate_sizes, lengths = program.bind(bind_data(model, data), sizes)
    draws = []
    with torch.no_grad():
        for _ in progress_bar(range(num_samples), total=num_samples, desc="prior",
                          enabled=progress):
            trace = poutine.trace(program.execute).get_trace(data, plate_sizes, lengths)
            if not draws:
                check_data_sites(model, trace)
            draws.append(trace_values(model, trace, program.dims,
                                      kinds=("latent", "observed", "deterministic")))
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return Posterior(model.name, "prior", samples=stack_draws(draws),
                     seconds=time.perf_counter() - start, info={"params": params})


register("prior", "ancestral sampling from the prior (observed nodes drawn unless given)",
         infer=infer)

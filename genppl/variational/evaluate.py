"""Held-out ELBO and the importance-weighted bound IWAE-k (Burda et al. 2016).

For a guide q and data x, the log-weights ``log w = log p(x, z) - log q(z)`` with z ~ q give
both bounds: the ELBO is E[log w], and IWAE-k = E[log (1/k) sum_j w_j] for k independent z_j,
which increases with k towards log p(x) (tested on a conjugate model where log p(x) is known:
ELBO <= IWAE-k <= log p, equality for the exact posterior). The k weights are drawn in
vectorised batches and combined with a running log-sum-exp, so k = 5000 needs the memory of
one batch only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine

from genppl.dsl.guide import Guide
from genppl.dsl.model import Model
from genppl.errors import ModelError
from genppl.results import FitResult

_PARTICLES = "_iwae_particles"


@dataclass(frozen=True)
class Evaluation:
    """Bounds on log p(data) in nats: the ELBO (with its Monte Carlo standard error, from
    ``num_particles`` draws) and, when asked, IWAE-``k`` with the delta-method standard
    error of that one estimate (its expectation is a bound; one estimate may pass log p by a
    few standard errors)."""

    elbo: float
    elbo_se: float
    num_particles: int
    iwae: float | None = None
    iwae_se: float | None = None
    k: int | None = None


def _per_particle(trace: Any, n: int, nesting: int) -> torch.Tensor:
    """Sum of the trace's (scaled, masked) log-probabilities for each of ``n`` particles,
    which sit at batch dim ``-(nesting + 1)``."""
    trace.compute_log_prob()
    total = torch.zeros(n)
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        lp = site["log_prob"]
        if lp.dim() < nesting + 1:
            part = lp.sum().reshape(1)
        else:
            lp = lp.movedim(lp.dim() - nesting - 1, 0)
            part = lp.reshape(lp.shape[0], -1).sum(-1)
        total = total.to(part.dtype) + part.to(total.device)
    return total


def log_weights(program: Callable[..., Any], guide: Callable[..., Any],
                data: Mapping[str, Any], num: int, *, max_plate_nesting: int,
                batch: int = 1000) -> torch.Tensor:
    """``num`` independent log-weights ``log p(data, z) - log q(z)``, z ~ ``guide``, drawn
    ``batch`` at a time as a vectorised plate outside the model's plates."""
    chunks = []
    dim = -(max_plate_nesting + 1)
    with torch.no_grad():
        for start in range(0, num, batch):
            n = min(batch, num - start)
            with pyro.plate(_PARTICLES, n, dim=dim):
                guide_trace = poutine.trace(guide).get_trace(**data)
            with pyro.plate(_PARTICLES, n, dim=dim):
                model_trace = poutine.trace(poutine.replay(program, trace=guide_trace)
                                            ).get_trace(**data)
            for name, site in model_trace.nodes.items():
                if (site["type"] == "sample" and not site["is_observed"]
                        and site["infer"].get("enumerate") and name not in guide_trace.nodes):
                    raise ModelError(f"latent site {name!r} is summed out by enumeration; "
                                     "log-weights (IWAE) need a guide that proposes every "
                                     "latent.")
            w = (_per_particle(model_trace, n, -dim - 1)
                 - _per_particle(guide_trace, n, -dim - 1))
            chunks.append(w.expand(n) if w.numel() == 1 else w)
    return torch.cat(chunks)


def _logmeanexp_batched(program: Callable[..., Any], guide: Callable[..., Any],
                        data: Mapping[str, Any], k: int, nesting: int,
                        batch: int) -> tuple[float, float]:
    """log (1/k) sum_j w_j over k fresh weights, and its delta-method standard error
    sqrt(var(w) / k) / mean(w), from running log-sums of w and w**2."""
    s1 = s2 = torch.tensor(-math.inf, dtype=torch.float64)
    for start in range(0, k, batch):
        n = min(batch, k - start)
        w = log_weights(program, guide, data, n, max_plate_nesting=nesting, batch=n).double()
        s1 = torch.logaddexp(s1, torch.logsumexp(w, 0))
        s2 = torch.logaddexp(s2, torch.logsumexp(2 * w, 0))
    ratio = float(torch.exp(s2 + math.log(k) - 2 * s1))  # E[w^2] / E[w]^2 >= 1
    return float(s1) - math.log(k), math.sqrt(max(ratio - 1.0, 0.0) / k)


def evaluate(model: Model, guide: FitResult | Guide | Callable[..., Any],
             data: Mapping[str, Any], *, num_particles: int = 1000, iwae: int | None = None,
             batch: int = 1000, seed: int | None = None) -> Evaluation:
    """The ELBO of ``data`` under ``model`` and ``guide`` (from ``num_particles`` draws) and,
    with ``iwae=k``, the bound IWAE-k, both in nats.

    ``guide`` is a ``FitResult`` of ``engine="svi"`` (its guide, with the params it ended
    with), a DSL ``Guide`` or a Pyro guide callable (with the params now in Pyro's param
    store). On held-out data the guide must apply to new data: global latents only, or an
    amortised DSL guide. Every latent must be proposed by the guide (finite latents summed out
    by enumeration are not supported here yet). ``seed`` fixes the draws.
    """
    from genppl.engines.common import prepare

    if num_particles < 1 or (iwae is not None and iwae < 1) or batch < 1:
        raise ModelError("num_particles, iwae and batch must be positive.")
    state = None
    if isinstance(guide, FitResult):
        if guide.engine != "svi" or "guide" not in guide.info:
            raise ModelError(f"evaluate() needs a fit of engine='svi', not {guide.engine!r}.")
        state = guide.info.get("param_state")
        guide = guide.info["guide"]
    elif isinstance(guide, Guide):
        guide = guide.pyro_guide
    with ExitStack() as stack:
        if state is not None:  # the fit's own params, whatever the store holds now
            stack.enter_context(pyro.get_param_store().scope(
                {"params": dict(state["params"]), "constraints": dict(state["constraints"])}))
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            pyro.set_rng_seed(seed)
        prep = prepare(model, data)
        nesting = prep.max_plate_nesting
        w = log_weights(prep.program, guide, prep.data, num_particles,
                        max_plate_nesting=nesting, batch=batch).double()
        se = float(w.std() / math.sqrt(num_particles)) if num_particles > 1 else math.nan
        bound, bound_se = (None, None) if iwae is None else _logmeanexp_batched(
            prep.program, guide, prep.data, iwae, nesting, batch)
    return Evaluation(float(w.mean()), se, num_particles, bound, bound_se, iwae)

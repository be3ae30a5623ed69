"""``engine="svi"``: stochastic variational inference with a DSL guide or an autoguide.

Finite latents the guide does not propose are summed out exactly (``TraceEnum_ELBO``) and
recovered afterwards by ``infer_discrete``, so the posterior holds every latent. Without
continuous latents and without a guide, SVI is maximum likelihood of the params.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer import autoguide as ag
from pyro.optim import ClippedAdam

from genppl.dsl.guide import Guide
from genppl.dsl.model import Model
from genppl.engines.common import (
    Prepared,
    check_finite,
    complete_draw,
    init_values,
    prepare,
    progress_bar,
    seed_everything,
)
from genppl.engines.registry import register
from genppl.errors import ModelError, suggest
from genppl.pyro.values import stack_draws
from genppl.results import FitResult, Posterior

AUTOGUIDES: dict[str, Callable[..., Any]] = {
    "delta": ag.AutoDelta,  # MAP point estimates
    "normal": ag.AutoNormal,  # mean-field Gaussian
    "mvn": ag.AutoMultivariateNormal,
    "lowrank": ag.AutoLowRankMultivariateNormal,
}


def _empty_guide(**_: Any) -> None:
    return None


def build_guide(prep: Prepared, guide: str | Guide | None,
                init: dict[str, Any] | None = None) -> Callable[..., Any]:
    """The Pyro guide for ``guide``: a DSL guide, an autoguide name, or None for the default
    (no guide when every latent is finite, else ``"normal"``). ``init`` gives autoguides
    starting values of latents by name (others start at their prior median)."""
    if isinstance(guide, Guide):
        if guide.model is not prep.model:
            raise ModelError(f"guide {guide.name!r} was declared for model "
                             f"{guide.model.name!r}, not {prep.model.name!r}.")
        missing = [n for n in guide.uncovered if n not in prep.discrete_nodes]
        if missing:
            raise ModelError(f"guide {guide.name!r} does not cover latent {missing[0]!r} "
                             f"({prep.model[missing[0]].declared_at}), which is not finite and "
                             f"so cannot be summed out; declare guide.latent({missing[0]!r}, "
                             "...) or use an autoguide such as guide='normal'.")
        if init:
            raise ModelError("init= sets autoguide starting values; a DSL guide starts from its "
                             "own params' initial values.")
        return guide.pyro_guide
    if guide is None:
        if not prep.continuous:
            return _empty_guide
        guide = "normal"
    if guide not in AUTOGUIDES:
        raise ModelError(f"unknown guide {guide!r}; pass a genppl Guide or one of the autoguides."
                         + suggest(str(guide), AUTOGUIDES))
    if not prep.continuous:
        return _empty_guide
    hidden = poutine.block(prep.program, hide=prep.enumerated)
    return AUTOGUIDES[guide](hidden, init_loc_fn=init_values(prep, init))


def _elbo(prep: Prepared, kind: str | None, num_particles: int) -> Any:
    if kind is None:
        kind = "enum" if prep.enumerated else "trace"
    table = {"enum": TraceEnum_ELBO, "trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
    if kind not in table:
        raise ModelError(f"unknown elbo {kind!r}." + suggest(kind, table))
    if prep.enumerated and kind != "enum":
        raise ModelError(f"model {prep.model.name!r} has finite latents to sum out "
                         f"({prep.enumerated[0]!r}); use elbo='enum' (the default).")
    return table[kind](max_plate_nesting=prep.max_plate_nesting, num_particles=num_particles,
                       vectorize_particles=num_particles > 1)


def fit(model: Model, data: dict[str, Any] | None = None, *, guide: str | Guide | None = None,
        steps: int = 1000, lr: float = 0.01, clip_norm: float = 10.0, lrd: float = 1.0,
        elbo: str | None = None, num_particles: int = 1, seed: int | None = None,
        num_samples: int = 0, init: dict[str, Any] | None = None, progress: bool = True,
        clear_params: bool = True) -> FitResult:
    """Optimise the ELBO for ``steps`` steps of ClippedAdam(lr, clip_norm, lrd decay per step).

    ``num_samples > 0`` also draws that many posterior samples from the fitted guide.
    """
    seed_everything(seed)
    if clear_params:
        pyro.clear_param_store()
    start = time.perf_counter()
    prep = prepare(model, data)
    pyro_guide = build_guide(prep, guide, init)
    loss_fn = _elbo(prep, elbo, num_particles)
    svi = SVI(prep.program, pyro_guide, ClippedAdam({"lr": lr, "clip_norm": clip_norm,
                                                     "lrd": lrd}), loss_fn)
    losses: list[float] = []
    bar = progress_bar(range(steps), total=steps, desc=f"svi {model.name}", enabled=progress)
    for step in bar:
        loss = float(svi.step(**prep.data))
        check_finite(loss, "the ELBO", step)
        losses.append(loss)
        if step % 50 == 0 and hasattr(bar, "set_postfix"):
            bar.set_postfix(elbo=f"{-loss:.4g}")
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    posterior = None
    if num_samples:
        posterior = _posterior(prep, pyro_guide, num_samples, -losses[-1] if losses else None)
    seconds = time.perf_counter() - start
    if posterior is not None:
        posterior.seconds = seconds
    return FitResult(model.name, "svi", params, losses, seconds, posterior,
                     info={"guide": pyro_guide, "elbo": type(loss_fn).__name__})


def _posterior(prep: Prepared, guide: Callable[..., Any], num_samples: int,
               elbo: float | None) -> Posterior:
    draws = []
    with torch.no_grad():
        for _ in range(num_samples):
            guide_trace = poutine.trace(guide).get_trace(**prep.data)
            values = {name: site["value"] for name, site in guide_trace.nodes.items()
                      if site["type"] == "sample" and not site["is_observed"]
                      and not site["infer"].get("is_auxiliary")}
            draws.append(complete_draw(prep, values))
    return Posterior(prep.model.name, "svi", samples=stack_draws(draws), elbo=elbo)


def infer(model: Model, data: dict[str, Any] | None = None, *, num_samples: int = 500,
          **options: Any) -> Posterior:
    """Fit (see ``fit``) and return draws from the fitted guide."""
    result = fit(model, data, num_samples=num_samples, **options)
    assert result.posterior is not None
    result.posterior.info.update(params=result.params, losses=result.losses)
    return result.posterior


infer.__wrapped__ = fit  # type: ignore[attr-defined]  # options are fit's: let infer check them

register("svi", "stochastic variational inference: DSL guide or autoguide "
         "(delta/normal/mvn/lowrank); finite latents summed out", infer=infer, fit=fit)

"""A model and its data prepared once for the engines that run its compiled Pyro program:
the data converted to the model's device and dtype, the program traced once to learn which
latent sites enumerate and which are continuous, linear-Gaussian chains optionally summed out
by the Kalman filter, and posterior draws completed with the finite latents recovered by
``infer_discrete``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import infer_discrete
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.poutine.util import site_is_subsample

from genppl.budget import memory_budget, refuse_over
from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest
from genppl.exact.contract import partial_plan
from genppl.exact.gaussian import kalman_filter, sample_posterior
from genppl.pyro.program import PyroProgram, as_data, bind_data, check_data_sites
from genppl.pyro.values import split_site, trace_values
from genppl.tabulation.gaussian_chains import GaussianChains


@dataclass
class Prepared:
    """A model compiled once with its data converted once (device and dtype of the model)."""

    model: Model
    program: PyroProgram
    data: dict[str, torch.Tensor]
    enumerated: list[str]  # Pyro sites of finite latents marked for enumeration
    continuous: list[str]  # other latent Pyro sites (outside marginalised chains)
    observed: list[str]  # observed Pyro sites
    gaussian: GaussianChains | None = None  # linear-Gaussian chains marginalised exactly

    @property
    def target(self) -> PyroProgram:
        """The program samplers run: with the linear-Gaussian chains summed out, if any."""
        return self.program if self.gaussian is None else self.gaussian.program

    @property
    def max_plate_nesting(self) -> int:
        return self.program.max_plate_nesting

    @property
    def discrete_nodes(self) -> set[str]:
        return {split_site(s)[0] for s in self.enumerated}


def prepare(model: Model, data: Mapping[str, Any] | None, *,
            collapse: bool = False) -> Prepared:
    """Convert data and trace the model once to learn which latents enumerate. With
    ``collapse``, chains that are linear-Gaussian (``genppl.tabulation.gaussian_chains``) are
    marginalised by the Kalman filter and their latents leave ``continuous``; a chain that
    is not linear-Gaussian stays as it is."""
    program = model.pyro_model
    data = bind_data(model, data)
    missing = [n for n in model.observed_names if n not in data]
    if missing:
        raise ModelError(f"observed node {missing[0]!r} ({model[missing[0]].declared_at}) has no "
                         f"data; pass {missing[0]}=... (or use engine='prior' to sample it).")
    with pyro.get_param_store().scope(), torch.no_grad():
        trace = poutine.trace(program).get_trace(**data)
    check_data_sites(model, trace)
    enumerated, continuous, observed = [], [], []
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            observed.append(site["name"])
            continue
        name, _ = split_site(site["name"])
        if name not in model.nodes or model.nodes[name].kind != "latent":
            continue
        (enumerated if site["infer"].get("enumerate") else continuous).append(site["name"])
    gaussian = None
    if collapse and any(model.nodes[split_site(s)[0]].chain for s in continuous):
        gaussian = GaussianChains(model)
        try:
            with pyro.get_param_store().scope(), torch.no_grad():
                poutine.trace(gaussian.program).get_trace(**data)
        except ModelError:
            gaussian = None
        else:
            continuous = [s for s in continuous if model.nodes[split_site(s)[0]].chain is None]
    return Prepared(model, program, data, enumerated, continuous, observed, gaussian)


def init_values(prep: Prepared, init: dict[str, Any] | None) -> Callable[..., Any]:
    """Pyro init strategy: the given latent values (model dtype/device), else prior medians."""
    if not init:
        return init_to_median
    unknown = [k for k in init if k not in prep.model.latent_names]
    if unknown:
        raise ModelError(f"init= names {unknown[0]!r}, which is not a latent of "
                         f"{prep.model.name!r}." + suggest(unknown[0], prep.model.latent_names))
    values = {k: as_data(prep.model, k, v) for k, v in init.items()}
    return init_to_value(values=values, fallback=init_to_median)


def complete_draw(prep: Prepared, conditioned_on: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One posterior draw of every latent and deterministic node: the given (continuous)
    values, plus the discrete latents and the marginalised linear-Gaussian chains sampled
    exactly from their conditional posterior."""
    model: Callable[..., Any] = poutine.condition(prep.target, data=conditioned_on)
    if not set(prep.enumerated) <= set(conditioned_on):  # finite latents not drawn yet
        model = infer_discrete(model, first_available_dim=-1 - prep.max_plate_nesting,
                               temperature=1)
    trace = poutine.trace(model).get_trace(**prep.data)
    values = trace_values(prep.model, trace, prep.program.dims)
    if prep.gaussian is not None:  # the chains' exact conditional draw (FFBS), this run's
        for space in prep.gaussian.last.values():
            draw = sample_posterior(space.chain, kalman_filter(space.chain, space.y), 1)[0]
            values.update({name: draw[..., i] for i, name in enumerate(space.latents)})
    return values


def enumeration_bytes(prep: Prepared) -> int:
    """The least memory Pyro's enumeration of ``prep`` can take: its largest site table
    (each finite latent on a tensor dimension of its own, broadcast against its parents'
    and its plates), or the largest table of the cheapest elimination order over those
    dimensions, times the plates' entries, whichever is larger. Pyro's own contraction
    order is greedy, so a request refused here would also have failed there."""
    program = poutine.enum(prep.program, first_available_dim=-1 - prep.max_plate_nesting)
    with torch.no_grad():
        trace = poutine.trace(program).get_trace(**prep.data)
    nesting = prep.max_plate_nesting
    scopes: list[tuple[str, ...]] = []
    cards: dict[str, int] = {}
    largest = batch = 1
    itemsize = torch.empty((), dtype=prep.model.dtype).element_size()
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        fn, value = site["fn"], site["value"]
        shape = torch.broadcast_shapes(fn.batch_shape, value.shape[:value.dim() - fn.event_dim])
        dims = range(-len(shape), -nesting)
        scopes.append(tuple(str(d) for d in dims if shape[d] > 1))
        cards.update({str(d): shape[d] for d in dims if shape[d] > 1})
        largest = max(largest, math.prod(shape))
        batch = max(batch, math.prod(shape[len(shape) - nesting:]) if nesting else 1)
    if not cards:
        return largest * itemsize
    plan = partial_plan(tuple(scopes), tuple(sorted(cards.items())), frozenset(cards))
    return max(largest, plan.max_table * batch) * itemsize


def check_enumeration(prep: Prepared, instead: str) -> None:
    """Refuse, before Pyro allocates it, an enumeration of ``prep``'s finite latents over
    the memory budget (``genppl.budget``)."""
    refuse_over(enumeration_bytes(prep), memory_budget(),
                f"Pyro's enumeration of {prep.model.name!r}", instead)

"""``engine="exact"``: variable elimination (``genppl.exact``) on a discrete model.

Every marginal of every latent in one forward and one backward pass, log p(data), and
optionally the MAP assignment (Viterbi for chains); plates are products, chains are scans.
For models without plates or chains, leading data dimensions are evidence cases answered
together. Values given for root latents outside plates and chains whose support is not finite
(a fitted model's probability tables, say) are conditioned on: read like params.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pyro import poutine

from genppl.budget import memory_budget
from genppl.dsl.model import Model
from genppl.dsl.tables import CPT
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError
from genppl.exact.gaussian import kalman_filter, rts_smoother, sample_posterior
from genppl.exact.posterior import (
    draw_stream,
    leaf_gradients,
    posterior_draws,
    posterior_marginals,
)
from genppl.exact.rings import MAX
from genppl.pyro.program import as_data, default_tensor_context
from genppl.pyro.values import split_site
from genppl.results import Posterior
from genppl.runtime.options import Role, option
from genppl.runtime.params import FixedParams
from genppl.tabulation.gaussian_chains import GaussianChains
from genppl.tabulation.prepared import Prepared, prepare
from genppl.tabulation.tabulation import model_factors


@dataclass(frozen=True, kw_only=True)
class ExactOptions(FixedParams):
    """Options of engine ``exact``."""

    map: bool = option(False, "also the most probable joint assignment (info['map']) and its "
                       "log joint (info['map_log_joint'])")
    marginals: bool = option(True, "the sum-product pass: marginals and log evidence (False: "
                             "Viterbi alone)")
    num_samples: int = option(0, "exact joint posterior draws (forward filtering, backward "
                              "sampling), as state values", role=Role.DRAWS)
    seed: int | None = option(None, "seed of the draws (None: torch's global stream)",
                              role=Role.SEED)
    chain_method: Literal["auto", "sequential", "parallel"] = option(
        "auto", "how chains are eliminated (genppl.exact.scan)")
    evidence_per: str | None = option(None, "a plate: log p of each of its entries too "
                                      "(info['log_evidence_per'])")


def infer(model: Model, data: dict[str, Any] | None, options: ExactOptions) -> Posterior:
    """``map=True`` also returns the most probable joint assignment in ``info["map"]``
    (state indices, laid out like the marginals without their last axis; where several
    tie, one of them, each choice made given those already made) with its log joint in
    ``info["map_log_joint"]``; ``marginals=False`` skips the sum-product pass (then there
    are no marginals and no log evidence: Viterbi alone). ``num_samples`` exact joint
    posterior draws (forward filtering, backward sampling through the same contraction) go
    to ``samples`` as state values, shape ``(1, num_samples, ...)``, drawn with ``seed``
    (repeatable; None: from torch's global stream, which they advance).
    ``chain_method`` is ``"auto"``, ``"sequential"`` or ``"parallel"`` (see
    ``genppl.exact.scan``).
    ``evidence_per="seq"`` also gives log p of each entry of plate ``seq`` (e.g. per
    sequence) in ``info["log_evidence_per"]`` (and, with ``map``, each entry's MAP log joint
    in ``info["map_log_joint_per"]``).
    A root latent outside plates and chains with no finite support, given in ``data``, is
    fixed at that value like a param (``log_evidence`` is then log p(data | it)): e.g. a
    naive Bayes' class prior and word distributions, fitted by ``em``, to classify new
    documents exactly. Every table the elimination allocates is checked against the memory
    budget (``genppl.budget``) before it is made."""
    num_samples, seed, chain_method = options.num_samples, options.seed, options.chain_method
    evidence_per = options.evidence_per
    if num_samples < 0:
        raise ModelError(f"engine 'exact': num_samples must be >= 0, got {num_samples}.")
    budget_bytes = memory_budget()
    start = time.perf_counter()
    evidence_data, given = _given_globals(model, data or {})
    try:
        fm = model_factors(model, evidence_data, point=given)
    except ModelError:
        # Not discrete: continuous latents are answered exactly when they form
        # linear-Gaussian chains (found only after the discrete path refused, so that a
        # discrete model pays nothing for the check).
        prep = prepare(model, data) if model.chains else None
        if prep is None or not any(model[split_site(s)[0]].chain for s in prep.continuous):
            raise
        return _linear_gaussian(prep, num_samples, seed, start)
    if not fm.variables:
        raise ModelError(f"model {model.name!r} has no latents for engine 'exact'.")
    info: dict[str, Any] = {}
    probs: dict[str, torch.Tensor] = {}
    evidence: float | torch.Tensor | None = None
    if options.marginals:
        per_entry, probs = posterior_marginals(fm, chain_method=chain_method,
                                               budget_bytes=budget_bytes, per=evidence_per)
        log_z = per_entry.sum(0) if evidence_per is not None else per_entry
        if not bool(torch.isfinite(log_z).all()):
            raise ModelError(f"the data has probability zero under {model.name!r} (log p(data) "
                             f"= {log_z.tolist()}); check evidence against the tables.")
        if evidence_per is not None:
            info["log_evidence_per"] = per_entry
        evidence = float(log_z) if log_z.dim() == 0 else log_z
    if options.map:
        value, indicators = leaf_gradients(fm, ring=MAX, chain_method=chain_method,
                                            budget_bytes=budget_bytes, per=evidence_per)
        if not bool(torch.isfinite(value).all()):
            raise ModelError(f"the data has probability zero under {model.name!r}; no "
                             "assignment is possible. Check evidence against the tables.")
        info["map"] = {v: p.argmax(-1) for v, p in indicators.items()}
        if evidence_per is not None:
            info["map_log_joint_per"] = value
            value = value.sum(0)
        info["map_log_joint"] = float(value) if value.dim() == 0 else value
    samples = {}
    if num_samples:
        with draw_stream(fm, seed):
            samples = posterior_draws(fm, num_samples, chain_method, budget_bytes)
    return Posterior(model.name, "exact", samples=samples, marginals=probs,
                     log_evidence=evidence,  # type: ignore[arg-type]
                     seconds=time.perf_counter() - start, info=info)


def _given_globals(model: Model, data: dict[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(evidence, fixed)``: the data split into evidence and the values of root latents
    outside plates and chains whose prior has no finite support, which are fixed (the
    ``point`` values of the tabulation), each checked against that support."""
    evidence, fixed = dict(data), {}
    for name, value in data.items():
        node = model.nodes.get(name)
        if node is None or node.kind != "latent" or node.plates or node.chain is not None \
                or node.parents or value is None or isinstance(node.fn, CPT):
            continue  # (a CPT is finite: evidence, without calling it per query)
        with default_tensor_context(model.device, model.dtype):
            prior = node.fn()  # type: ignore[misc]
        if prior.has_enumerate_support:
            continue
        fixed[name] = as_data(model, name, value)
        if fixed[name].shape != prior.shape() or not bool(prior.support.check(fixed[name]).all()):
            raise ModelError(f"latent {name!r} ({node.declared_at}): the value given has shape "
                             f"{tuple(fixed[name].shape)}; it needs shape "
                             f"{tuple(prior.shape())} and values in {prior.support}.")
        del evidence[name]
    return evidence, fixed


def _linear_gaussian(prep: Prepared, num_samples: int, seed: int | None, start: float
                     ) -> Posterior:
    """Models whose continuous latents all lie in linear-Gaussian chains
    (``genppl.tabulation.gaussian_chains``): log p(data) by the Kalman filter, the smoothed moments
    of every chain latent (RTS) in ``info["smoothed_mean"][node]`` and
    ``info["smoothed_var"][node]`` (time axis first; ``info["filtered_mean"]`` and
    ``info["filtered_var"]`` likewise), and ``num_samples`` exact joint draws (FFBS)."""
    model = prep.model
    outside = [s for s in prep.continuous if model[split_site(s)[0]].chain is None]
    if outside or prep.enumerated:
        name = split_site((outside or prep.enumerated)[0])[0]
        raise ModelError(f"latent {name!r} ({model[name].declared_at}): engine 'exact' takes "
                         "either finite latents or linear-Gaussian chains, not "
                         f"{'a continuous latent outside a chain' if outside else 'both'}; "
                         "use engine='nuts', which marginalises the Gaussian chains exactly.")
    chains = GaussianChains(model)
    with torch.no_grad():
        trace = poutine.trace(chains.program).get_trace(**prep.data)
        evidence = float(trace.log_prob_sum())
        info: dict[str, Any] = {k: {} for k in ("filtered_mean", "filtered_var",
                                                "smoothed_mean", "smoothed_var")}
        samples: dict[str, torch.Tensor] = {}
        gen = None if seed is None else torch.Generator(model.device).manual_seed(seed)
        for space in chains.last.values():
            filtered = kalman_filter(space.chain, space.y)
            smoothed = rts_smoother(space.chain, filtered)
            draws = sample_posterior(space.chain, filtered, num_samples, gen) \
                if num_samples else None
            for i, name in enumerate(space.latents):
                info["filtered_mean"][name] = filtered.mean[:, i]
                info["filtered_var"][name] = filtered.cov[:, i, i]
                info["smoothed_mean"][name] = smoothed.mean[:, i]
                info["smoothed_var"][name] = smoothed.cov[:, i, i]
                if draws is not None:
                    samples[name] = draws[..., i].unsqueeze(0)
    if not math.isfinite(evidence):
        raise ModelError(f"log p(data) = {evidence} under {model.name!r}; check that every "
                         "scale is positive and the data finite.")
    return Posterior(model.name, "exact", samples=samples, log_evidence=evidence,
                     seconds=time.perf_counter() - start, info=info)


EXACT = register(Engine(
    "exact", "exact inference for discrete models (variable elimination; plates as products, "
    "chains as scans): every marginal, log evidence and MAP in one pass, batched evidence; "
    "Kalman filtering and smoothing for linear-Gaussian chains",
    returns=Returns.MARGINALS | Returns.EVIDENCE | Returns.MAP | Returns.EXACT_DRAWS,
    accepts=Feature.FINITE | Feature.GAUSSIAN_CHAINS | Feature.FACTORS | Feature.NEURAL,
    needs=Feature.FINITE | Feature.GAUSSIAN_CHAINS, options=ExactOptions, infer=infer))

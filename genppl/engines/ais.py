"""``engine="ais"``: log p(data) by annealed importance sampling (Neal 2001) on the model's
continuous latents (``genppl.ais``), from exact prior draws to the posterior along
f_b(z) = p(z) p(x | z)^b -- or, with ``guide=``, from draws of a guide q(z | x) along
q^(1-b) p(z, x)^b -- with batched HMC transitions whose step sizes adapt per particle
(Wu et al. 2017). Every chain -- and with ``per``, every item of a plate -- is one entry of
one vectorised computation; the loop is over temperatures and leapfrog steps only.

A model of factors over finite variables (an RBM, an Ising grid) has no prior to start
from: for it the engine estimates log Z instead, annealing from independent units with Gibbs
sweeps on its grounding (``genppl.ais.partition``, Salakhutdinov & Murray 2008), and each
case's log-likelihood given data on some of its variables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from genppl.ais import (
    Adaptation,
    AnnealState,
    Items,
    Schedule,
    TemperedTarget,
    anneal_step,
    start,
    summarise,
    temperatures,
)
from genppl.ais.partition import (
    UndirectedPath,
    anneal_partition,
    case_states,
    free_log_marginal,
    reverse_anneal,
    start_from_cases,
)
from genppl.dsl.guide import Guide
from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, model_features, register
from genppl.errors import ModelError, suggest
from genppl.gibbs.cases import data_cases
from genppl.gibbs.grounding import ground
from genppl.pyro.layout import resolve_sizes
from genppl.pyro.program import as_data
from genppl.results import FitResult, Posterior
from genppl.runtime.options import Role, option
from genppl.runtime.params import FixedParams
from genppl.runtime.progress import progress_bar, seed_everything
from genppl.tabulation.prepared import Prepared, check_enumeration, prepare
from genppl.tabulation.summed_out import continuous_below_finite
from genppl.tabulation.tabulation import model_factors
from genppl.variational.evaluate import fitted_guide, whole_plates


@dataclass(frozen=True, kw_only=True)
class AISOptions(FixedParams):
    """Options of engine ``ais``."""

    num_temperatures: int = option(
        200, "annealing steps T: inverse temperatures b_0 = 0 < ... < b_T = 1")
    schedule: Schedule = option(
        "sigmoid", "spacing of the temperatures: 'sigmoid' (Grosse et al. 2013), "
        "'geometric' (from 1e-4) or 'linear'")
    num_chains: int = option(16, "annealing chains (importance samples) per item")
    leapfrog_steps: int = option(10, "leapfrog steps per HMC transition")
    step_size: float = option(0.1, "initial HMC step size of every chain (unconstrained space)")
    adapt_step_size: bool = option(
        True, "adapt each chain's step size toward target_accept_prob (Wu et al. 2017)")
    target_accept_prob: float = option(0.65, "acceptance rate the step sizes adapt toward")
    per: str | None = option(
        None, "a plate whose every latent is its own: one estimate per item "
        "(info['log_evidence_per'], info['stderr_per'], info['ess_per'])")
    finite: str = option(
        "sum", "finite latents: 'sum' them out of each particle's likelihood exactly (their "
        "enumeration must fit in memory) or 'gibbs': carry them in the state and redraw each "
        "from its tempered full conditional after every HMC transition (any number of them, "
        "continuous latents below them too)")
    guide: Guide | FitResult | None = option(
        None, "start the path at this guide q(z | x) instead of the prior: a DSL guide (with "
        "the params in Pyro's param store) or an svi fit (with its own); the targets are "
        "q^(1-b) p(z, x)^b")
    reverse_from: Mapping[str, Any] | None = option(
        None, "exact posterior draws of the latents by name (e.g. those that simulated the "
        "data): anneal back to the prior for a stochastic upper bound (reverse AIS, "
        "bidirectional Monte Carlo)")
    base_from: Mapping[str, Any] | None = option(
        None, "models of factors: cases of some variables (a leading axis of cases, as "
        "data, e.g. the training images) whose marginals, one pseudo-count added per state, "
        "make those variables' base (Salakhutdinov & Murray 2008); default their own "
        "potentials")
    from_data: bool = option(
        False, "models of factors, with data: anneal each case back from the data to the "
        "base (RAISE, Burda et al. 2015), num_chains per case: a conservative estimate of "
        "each case's log-likelihood (info['bound'] 'lower'), with no log Z")
    seed: int | None = option(None, "seed (None: torch's global stream)", role=Role.SEED)
    progress: bool = option(True, "a progress bar over the temperatures", role=Role.PROGRESS)


def infer(model: Model, data: dict[str, Any] | None, options: AISOptions) -> Posterior:
    """Anneal ``num_chains`` particles (per item of plate ``per``, if given) through
    ``num_temperatures`` temperatures and return log mean w, a stochastic lower bound on
    log p(data) (see ``genppl.ais.anneal``), as ``log_evidence``. With ``reverse_from``,
    anneal from those posterior draws to the prior and return -log mean w, a stochastic
    upper bound (``info["bound"]`` says which). ``info``: ``stderr`` (the
    delta-method standard error of the estimate) and ``ess`` (the weights' effective sample
    size) -- or, with ``per``, ``log_evidence_per``, ``stderr_per`` and ``ess_per`` per item,
    the total and its standard error (items independent) in ``log_evidence`` and ``stderr``;
    ``log_weights`` (chains first), ``acceptance`` (mean acceptance probability of the
    transitions), ``step_size`` (each particle's final step size)."""
    _check(model, options)
    seed_everything(options.seed)
    began = time.perf_counter()
    betas = temperatures(options.schedule, options.num_temperatures)
    if Feature.FACTORS in model_features(model, data, precise=False):
        return _undirected(model, data, options, betas, began)
    for name in ("base_from", "from_data"):
        if getattr(options, name) not in (None, False):
            raise ModelError(f"engine 'ais': {name} applies to a model of factors over "
                             f"finite variables; {model.name!r} anneals from its prior. "
                             f"Leave {name} out.")
    adaptation = Adaptation(target=options.target_accept_prob)
    guide, params = (None, nullcontext()) if options.guide is None else fitted_guide(
        options.guide, "engine 'ais' (guide=)")
    _check_guide(model, options)
    with whole_plates(model), params:
        prep = prepare(model, data)
        gibbs = options.finite == "gibbs"
        _check_latents(prep, gibbs)
        items = None if options.per is None else Items(
            options.per, prep.program.dims[options.per],
            resolve_sizes(model, prep.data)[0][options.per])
        target = TemperedTarget(model, prep.program, prep.data, prep.continuous,
                                summed=[] if gibbs else prep.enumerated,
                                nesting=prep.max_plate_nesting, num_chains=options.num_chains,
                                items=items, guide=guide,
                                finite=prep.enumerated if gibbs else [], gibbs=gibbs)
        given = _posterior_draws(model, prep.continuous + list(target.finite),
                                 options.reverse_from)
        path = betas if given is None else betas[::-1]
        state = start(target, options.step_size, adaptation, given=given, beta=path[0])
        steps = progress_bar(range(1, len(path)), total=len(path) - 1, desc="ais",
                             enabled=options.progress)
        for t in steps:
            state = anneal_step(target, state, path[t - 1], path[t],
                                leapfrog_steps=options.leapfrog_steps,
                                adaptation=adaptation if options.adapt_step_size else None,
                                move=t < len(path) - 1)
    return Posterior(model.name, "ais", **_answer(state, items, began, upper=given is not None))


def _undirected(model: Model, data: dict[str, Any] | None, options: AISOptions,
                betas: tuple[float, ...], began: float) -> Posterior:
    """log Z of a model of potentials over finite variables (``genppl.ais.partition``):
    ``info["log_partition"]`` and ``info["log_partition_stderr"]``, the estimate itself
    without data. With data on some variables (one case per entry of a leading axis), the
    others summed out exactly per case: ``info["log_evidence_per"]``, each case's
    log-likelihood, and their sum as the estimate, whose standard error is the cases'
    count times log Z's (one log Z serves them all). ``base_from``: cases whose marginals
    start the annealing (``start_from_cases``). The variables the data leave free are the
    ones summed out of the weights where they can be."""
    _check_undirected(model, options)
    graph = ground(model_factors(model, {}))
    start = None if options.base_from is None else start_from_cases(
        graph, data_cases(model, graph, dict(options.base_from), "ais"))
    cases = data_cases(model, graph, data, "ais") if data else None
    free = None if cases is None else torch.nonzero(~case_states(graph, cases)[1]).squeeze(-1)
    path = UndirectedPath.of(graph, start, prefer=free)
    if options.from_data:
        return _from_data(model, cases, options, path, betas, began)
    steps = progress_bar(range(1, len(betas)), total=len(betas) - 1, desc="ais log Z",
                         enabled=options.progress)
    with torch.no_grad():
        log_weight = anneal_partition(path, betas, options.num_chains, steps)
        summary = summarise(log_weight)
        log_z = float(path.base_log_partition() + summary.log_mean)
        stderr = float(summary.stderr)
        info: dict[str, Any] = {"bound": "lower", "log_partition": log_z,
                                "log_partition_stderr": stderr, "ess": float(summary.ess),
                                "log_weights": log_weight, "stderr": stderr}
        evidence = log_z
        if cases is not None:
            per = free_log_marginal(graph, cases) - log_z
            evidence = float(per.sum())
            info.update(bound="upper", log_evidence_per=per, stderr=len(per) * stderr)
    if not math.isfinite(evidence):
        raise ModelError(f"engine 'ais': the estimate came out {evidence}; every chain may "
                         "have met a zero of a factor (add chains), or the data have "
                         "probability zero under the model.")
    return Posterior(model.name, "ais", log_evidence=evidence,
                     seconds=time.perf_counter() - began, info=info)


def _from_data(model: Model, cases: dict[str, torch.Tensor] | None, options: AISOptions,
               path: UndirectedPath, betas: tuple[float, ...], began: float) -> Posterior:
    """RAISE (``genppl.ais.partition.reverse_anneal``): each case's log-likelihood as its
    exact free term plus log mean w of ``num_chains`` chains annealed back from it, a
    stochastic lower bound on the RAISE model's log-likelihood; ``info``:
    ``log_evidence_per``, ``stderr_per``, ``ess_per``, their total's ``stderr`` (cases
    independent) and ``log_weights`` ``(chains, cases)``."""
    if cases is None:
        raise ModelError("engine 'ais': from_data=True anneals back from data; give data on "
                         "the variables other than those summed out (an RBM's visible units).")
    steps = progress_bar(range(len(betas) - 1, 0, -1), total=len(betas) - 1,
                         desc="ais from the data", enabled=options.progress)
    with torch.no_grad():
        log_weight = reverse_anneal(path, betas, cases, options.num_chains, steps)
        summary = summarise(log_weight)
        per = free_log_marginal(path.graph, cases) + summary.log_mean
    evidence = float(per.sum())
    if not math.isfinite(evidence):
        raise ModelError(f"engine 'ais': the estimate came out {evidence}; the data may have "
                         "probability zero under the model.")
    info = {"bound": "lower", "log_evidence_per": per, "stderr_per": summary.stderr,
            "ess_per": summary.ess, "stderr": float(summary.stderr.square().sum().sqrt()),
            "log_weights": log_weight}
    return Posterior(model.name, "ais", log_evidence=evidence,
                     seconds=time.perf_counter() - began, info=info)


def _check_undirected(model: Model, options: AISOptions) -> None:
    """Refuse, by name, what the undirected path does not do: continuous latents or
    observed nodes beside the factors, per items and reverse annealing."""
    for node in model.nodes.values():
        if node.kind in ("observed", "input") or (
                node.kind == "latent" and model.graph.nodes[node.name]["support"] != "finite"):
            raise ModelError(
                f"engine 'ais': {node.kind} node {node.name!r} ({node.declared_at}) beside "
                "factors -- engine 'ais' estimates log Z of models whose law is a product of "
                "potentials over finite variables (m.variable), with data as values of some "
                "of them.")
    for name in ("per", "reverse_from", "guide"):
        if getattr(options, name) is not None:
            raise ModelError(f"engine 'ais': {name} does not apply to a model of factors "
                             "(log Z by annealing from independent units); with data, "
                             "info['log_evidence_per'] holds each case's log-likelihood.")


def _check_latents(prep: Prepared, gibbs: bool) -> None:
    """Refuse a model with nothing to anneal; summing finite latents out, also continuous
    latents that depend on finite ones (summed out of the likelihood, which such a latent's
    prior would then be part of) and a summation over the memory budget."""
    model = prep.model
    if gibbs:
        if not prep.continuous and not prep.enumerated:
            raise ModelError(f"model {model.name!r} has no latents for engine 'ais' to anneal: "
                             "its log evidence is its log likelihood.")
        return
    if not prep.continuous:
        raise ModelError(f"model {model.name!r} has no continuous latents for engine 'ais' to "
                         "anneal" + (": use engine='exact', which sums its finite latents out "
                                     "exactly, or finite='gibbs'." if prep.enumerated else
                                     ": its log evidence is its log likelihood."))
    below = continuous_below_finite(model, prep.enumerated, prep.continuous)
    if below:
        raise ModelError(f"continuous latent {below[0]!r} ({model[below[0]].declared_at}) "
                         "depends on a finite latent, which engine 'ais' sums out of the "
                         "likelihood only below the continuous ones; pass finite='gibbs' to "
                         "move the finite latents by Gibbs instead.")
    if prep.enumerated:
        check_enumeration(prep, "Pass finite='gibbs' to move them by Gibbs instead")


def _check_guide(model: Model, options: AISOptions) -> None:
    """A DSL guide must be declared for this model, and starts continuous latents only."""
    guide = options.guide
    if isinstance(guide, Guide) and guide.model is not model:
        raise ModelError(f"engine 'ais': guide {guide.name!r} was declared for model "
                         f"{guide.model.name!r}, not {model.name!r}.")
    if guide is not None and options.finite == "gibbs":
        raise ModelError("engine 'ais': guide= starts the continuous latents of a path whose "
                         "finite latents are summed out; with finite='gibbs' the path starts "
                         "from the prior (leave guide=None, or use finite='sum').")


def _posterior_draws(model: Model, latents: list[str], given: Mapping[str, Any] | None
                     ) -> dict[str, torch.Tensor] | None:
    """``reverse_from`` as tensors of the model's device and dtype, its names checked."""
    if given is None:
        return None
    unknown = [k for k in given if k not in latents]
    if unknown:
        raise ModelError(f"engine 'ais': reverse_from names {unknown[0]!r}, which is not a "
                         f"latent of {model.name!r}." + suggest(unknown[0], latents))
    return {k: as_data(model, k, v) for k, v in given.items()}


def _answer(state: AnnealState, items: Items | None, began: float, *, upper: bool
            ) -> dict[str, Any]:
    """The ``Posterior`` fields of a finished annealing (forward: log mean w, a lower
    bound; reverse, ``upper``: -log mean w, an upper bound)."""
    summary = summarise(state.log_weight)
    estimate = -summary.log_mean if upper else summary.log_mean
    info: dict[str, Any] = {"bound": "upper" if upper else "lower",
                            "log_weights": state.log_weight, "step_size": state.step_size,
                            "acceptance": float(state.accepted.mean() / max(state.moves, 1))}
    if items is None:
        evidence, stderr = float(estimate), float(summary.stderr)
        info.update(stderr=stderr, ess=float(summary.ess))
    else:
        outside = float(state.point.densities.outside[0])
        evidence = float(estimate.sum()) + outside
        stderr = float(summary.stderr.square().sum().sqrt())
        info.update(stderr=stderr, log_evidence_per=estimate,
                    stderr_per=summary.stderr, ess_per=summary.ess)
    if not math.isfinite(evidence):
        raise ModelError(f"engine 'ais': the log evidence came out {evidence}; the data may "
                         "have probability zero under the model (check it against the "
                         "supports), or every chain was rejected (lower step_size).")
    return {"log_evidence": evidence, "seconds": time.perf_counter() - began, "info": info}


def _check(model: Model, options: AISOptions) -> None:
    """Refuse options out of range, naming them."""
    for name in ("num_temperatures", "num_chains", "leapfrog_steps"):
        if getattr(options, name) < 1:
            raise ModelError(f"engine 'ais': {name} must be >= 1, got "
                             f"{getattr(options, name)}.")
    if not options.step_size > 0:
        raise ModelError(f"engine 'ais': step_size must be > 0, got {options.step_size}.")
    if not 0 < options.target_accept_prob < 1:
        raise ModelError("engine 'ais': target_accept_prob must lie strictly between 0 and "
                         f"1, got {options.target_accept_prob}.")
    if options.finite not in ("sum", "gibbs"):
        raise ModelError(f"engine 'ais': finite={options.finite!r}; pass 'sum' or 'gibbs'.")
    if options.per is not None and options.per not in model.plates:
        raise ModelError(f"engine 'ais': per={options.per!r} is not a plate of model "
                         f"{model.name!r}." + suggest(options.per, model.plates))


AIS = register(Engine(
    "ais", "annealed importance sampling from the prior to the posterior with batched HMC on "
    "continuous latents, finite ones summed out: log evidence (a stochastic lower bound; "
    "reverse: upper) with its standard error, per item of a plate; log Z of models of "
    "potentials over finite variables (RBMs, Ising grids) by Gibbs sweeps from independent "
    "units",
    returns=Returns.EVIDENCE_BOUND,
    accepts=Feature.FINITE | Feature.CONTINUOUS | Feature.GAUSSIAN_CHAINS | Feature.NEURAL
    | Feature.FACTORS,
    needs=Feature.CONTINUOUS | Feature.GAUSSIAN_CHAINS | Feature.FACTORS, options=AISOptions,
    infer=infer))

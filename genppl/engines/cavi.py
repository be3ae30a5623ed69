"""``engine="cavi"``: coordinate-ascent mean-field variational inference (Jordan et al. 1999)
for conjugate-exponential models, derived from the DSL graph.

The variational family is ``q(finite latents) * prod_k q(theta_k)``: one factor per
continuous latent, in its prior's conjugate family (``genppl.conjugacy.families``), and
the finite latents *jointly*, exactly, by the exact engine (structured mean field: a
mixture's assignments, an LDA's topic indicators, an HMM's whole state path). One iteration:

1. **Local step.** Every table that reads a continuous latent is replaced by its expected
   log-probability under the current ``q`` (``genppl.conjugacy.likelihoods``); one exact
   contraction then gives ``log Z`` of the finite latents -- which *is* the ELBO's local part
   at its optimal ``q`` -- and, by differentiating it, every table cell's posterior weight.
2. **Global steps.** Each continuous latent in turn (Dirichlet, Beta, then Normal means
   before the Gamma precisions that use them) takes its closed-form update from the
   weighted sufficient statistics of the nodes that read it.

Each step maximises the ELBO in its coordinates, so the ELBO never decreases (tested); it
is ``log Z - sum_k KL(q(theta_k) || p(theta_k))``. Which element of which latent a node reads
is found by probing its factory once (``row_map``), as EM finds what it re-estimates, so
the model is written once, for every engine, and nothing here is per model. Variational
Bayes for mixtures and Blei et al.'s LDA are the first users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from genppl.conjugacy.families import (
    FAMILIES,
    BetaFactor,
    ConjugateFactor,
    DirichletFactor,
    GammaFactor,
    NormalFactor,
    conjugate_roots,
)
from genppl.conjugacy.likelihoods import (
    Reading,
    add_statistics,
    expected_table,
    find_readings,
)
from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError, suggest
from genppl.exact.posterior import data_layout, latent_leaves
from genppl.exact.sum_product import contract
from genppl.results import FitResult, Posterior
from genppl.runtime.options import Role, option
from genppl.runtime.progress import progress_bar
from genppl.tabulation.tabulation import Tabulation
from genppl.tabulation.uses import Use

#: Update order: a Normal child's precision update uses its mean's new moments.
ORDER = (DirichletFactor, BetaFactor, NormalFactor, GammaFactor)


class _Readings:
    """The tabulation's hook (``retable``): finds, at the first call, which conjugate latents
    each tracked table reads and how; then hands each such table its expected log-table
    under the current moments (or random log-weights for the random first step)."""

    def __init__(self, factors: dict[str, ConjugateFactor]) -> None:
        self.factors = factors
        self.by_use: list[dict[str, Reading]] | None = None
        self.moments: dict[str, dict[str, torch.Tensor]] = {}
        self.noise: torch.Generator | None = None
        self._seen: list[dict[str, Reading]] = []

    def __call__(self, use: Use) -> torch.Tensor | None:
        if self.by_use is None:
            self._seen.append(find_readings(use, self.factors, "cavi"))
            readings = self._seen[-1]
        else:
            readings = self.by_use[len(self._seen)]
            self._seen.append(readings)
        if not readings:
            return None
        if self.noise is not None:
            return torch.randn(use.table.shape, generator=self.noise, dtype=use.table.dtype,
                               device=use.table.device)
        return expected_table(use, readings, self.moments)

    def start(self) -> None:
        """Before each tabulation: readings are per table, in the tabulation's order."""
        if self.by_use is None and self._seen:
            self.by_use = self._seen
        self._seen = []

    @property
    def current(self) -> list[dict[str, Reading]]:
        """The readings of the last tabulation's tracked tables, in order."""
        return self._seen

def _conjugate_latents(model: Model) -> dict[str, ConjugateFactor]:
    """A variational factor for every continuous latent (global roots, conjugate priors)."""
    factors = conjugate_roots(model, "cavi", FAMILIES,
                              "Use engine 'svi' (any prior) or 'nuts'.")
    if not factors:
        raise ModelError(f"engine 'cavi': model {model.name!r} has no continuous latents; its "
                         "posterior is exact: use engine 'exact'.")
    return factors


def _check_read(readings: _Readings, factors: dict[str, ConjugateFactor]) -> None:
    """Every factor must be read by some table, or the data say nothing about it."""
    read = {r.target for found in readings.current for r in found.values()}
    unread = [name for name in factors if name not in read]
    if unread:
        raise ModelError(f"engine 'cavi': no random node reads latent {unread[0]!r}, so its "
                         "factor would stay at its prior; leave it out of the model or read it.")


class _Local:
    """One local step's results: log Z, each tracked table's cell weights, and each finite
    latent's marginal (when asked)."""

    def __init__(self, log_z: float, weights: list[torch.Tensor],
                 marginals: dict[str, torch.Tensor]) -> None:
        self.log_z, self.weights, self.marginals = log_z, weights, marginals


def _local_step(tab: Tabulation, readings: _Readings, point: Mapping[str, torch.Tensor],
                marginals: bool) -> tuple[_Local, list[Use]]:
    readings.start()
    fm = tab(point=point, track=True, retable=readings)
    if readings.by_use is None:  # the first tabulation found what reads what
        _check_read(readings, readings.factors)
    leaves = latent_leaves(fm) if marginals and fm.variables else {}
    tables = [u.table for u in fm.uses]
    with torch.enable_grad():
        log_z = contract(fm, leaves=leaves)
        grads = torch.autograd.grad(log_z.sum(), [*tables, *leaves.values()],
                                    allow_unused=True)
    weights = [torch.zeros_like(t) if g is None else g
               for t, g in zip(tables, grads[:len(tables)], strict=True)]
    found = {name: data_layout(fm, name, g) for name, g in
             zip(leaves, grads[len(tables):], strict=True) if g is not None}
    return _Local(float(log_z.detach().sum()), weights, found), fm.uses


@dataclass(frozen=True, kw_only=True)
class CAVIOptions:
    """Options of engine ``cavi``."""

    steps: int = option(500, "most CAVI iterations", role=Role.STEPS)
    tol: float = option(1e-9, "stop when the ELBO improves by less than this, relative")
    init: str | Mapping[str, Any] = option(
        "random", "'random' (global update after random cell weights), 'prior', or starting "
        "factors by latent")
    seed: int = option(0, "seed of init='random'", role=Role.SEED)
    hold: Mapping[str, Any] | None = option(None, "variational factors kept as given, by "
                                            "latent (held-out evaluation)")
    local: Sequence[str] = option((), "per-item latents updated with the finite latents in an "
                                  "inner loop")
    local_steps: int = option(4, "most inner-loop steps per iteration")
    local_tol: float = option(1e-3, "inner loop stops when local parameters change by less "
                              "than this on average")
    callback: Callable[[int, float, dict[str, Any]], bool | None] | None = option(
        None, "callback(iteration, elbo, q) after each iteration; True stops")
    progress: bool = option(True, "a progress bar", role=Role.PROGRESS)
    num_samples: int | None = option(None, "genppl.infer only: draws of each continuous "
                                     "latent from its q (None: 1000)", role=Role.DRAWS)


def fit(model: Model, data: dict[str, Any] | None, options: CAVIOptions) -> FitResult:
    """Run up to ``steps`` CAVI iterations; stop when the ELBO improves by less than ``tol``
    relative.

    ``init="random"`` starts from the global update after random cell weights (breaks the
    symmetry of mixture components and topics); ``"prior"`` starts from ``q = prior``; a
    mapping ``{name: distribution}`` starts those factors there and the others at their
    prior (e.g. LDA's topics at random concentrations, as scikit-learn and Hoffman et al.'s
    online LDA start).
    ``hold`` maps latents to variational factors (distributions of their prior's family,
    e.g. a fit's ``info["q"][name]``) that are kept as they are: held-out evaluation of
    new data under trained global factors, such as an LDA's topics on new documents (the
    ELBO keeps their KL term, as scikit-learn's perplexity bound does).
    ``local`` names per-item latents (an LDA document's topic mixture, declared as one latent
    with a batch of rows) that are updated with the finite latents in an inner loop after
    each iteration's update: up to ``local_steps`` more local steps, each followed by their
    update alone, until their parameters change by less than ``local_tol`` on average --
    the E-step of Blei et al.'s variational EM, as scikit-learn runs it (its mean-change
    tolerance is 1e-3), warm-started. Every inner update is a coordinate step too, so the
    ELBO still never decreases; the schedule changes which optimum is reached (on the BBC
    articles, a higher one than single alternating updates: see ``docs/cavi.md``).
    ``callback(iteration, elbo, q)`` is called after each iteration's global update with the
    current factors as distributions (monitoring, held-out checks); returning True stops.
    Returns the variational factors' parameters (``params``, e.g. ``"mu.loc"``), the ELBO
    trajectory (``info["elbo"]``, losses are its negatives), ``info["q"]`` (each latent's
    ``q`` as a distribution) and a posterior with the finite latents' marginals and the
    ELBO.
    """
    if options.num_samples is not None:
        raise ModelError("engine 'cavi': num_samples= is genppl.infer's (draws from q); "
                         "genppl.fit returns q itself, in info['q'].")
    steps, tol, init, seed, hold = (options.steps, options.tol, options.init, options.seed,
                                    options.hold)
    if steps < 1:
        raise ModelError(f"engine 'cavi': steps must be >= 1, got {steps}.")
    if isinstance(init, str) and init not in ("random", "prior"):
        raise ModelError(f"engine 'cavi': init must be 'random', 'prior' or a mapping of "
                         f"latents to starting factors, got {init!r}.")
    start = time.perf_counter()
    data = data or {}
    factors = _conjugate_latents(model)
    for given_as, given in (("init", {} if isinstance(init, str) else init), ("hold", hold or {})):
        for name, q in given.items():
            if name not in factors:
                raise ModelError(f"engine 'cavi': {given_as}= names {name!r}, which is not a "
                                 f"continuous latent of {model.name!r}." + suggest(name, factors))
            factors[name].assign(q)
    order = sorted((f for f in factors.values() if f.name not in (hold or {})),
                   key=lambda q: ORDER.index(type(q)))
    inner = _local_factors(model, order, options.local, options.local_steps)
    kept = [f for f in factors.values() if f.name in (hold or {})]
    readings = _Readings(factors)
    tab = Tabulation(model, data)
    elbos: list[float] = []
    converged = False
    if init == "random":
        readings.noise = torch.Generator(device=model.device).manual_seed(seed)
        readings.moments = {q.name: q.moments() for q in factors.values()}
        local, uses = _local_step(tab, readings, _point(factors), marginals=False)
        readings.noise = None
        _global_steps(order, readings, local, uses)
    readings.moments = {q.name: q.moments() for q in factors.values()}
    bar = progress_bar(range(steps), total=steps, desc="cavi", enabled=options.progress)
    for _ in bar:
        local, uses = _local_step(tab, readings, _point(factors), marginals=False)
        elbo = local.log_z - sum(float(q.kl()) for q in (*order, *kept))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(elbo=f"{elbo:.6g}")
        if not math.isfinite(elbo):
            raise ModelError(f"engine 'cavi': the ELBO of {model.name!r} is {elbo} after "
                             f"{len(elbos)} iterations; the data have probability zero under "
                             "q (check the data against the likelihoods' supports).")
        _check_monotone(elbos, elbo, model.dtype)
        elbos.append(elbo)
        if len(elbos) > 1 and elbos[-1] - elbos[-2] <= tol * abs(elbos[-2]):
            converged = True
            break
        _global_steps(order, readings, local, uses)
        _inner_loop(tab, readings, factors, inner, options.local_steps, options.local_tol)
        if options.callback is not None and options.callback(len(elbos), elbo, {
                name: f.distribution() for name, f in factors.items()}):
            break
    local, _ = _local_step(tab, readings, _point(factors), marginals=True)
    q = {name: f.distribution() for name, f in factors.items()}
    params = {f"{name}.{k}": f.shaped(v) for name, f in factors.items()
              for k, v in f.params.items()}
    seconds = time.perf_counter() - start
    posterior = Posterior(model.name, "cavi", marginals=local.marginals, elbo=elbos[-1],
                          seconds=seconds, info={"q": q, "elbo": elbos})
    return FitResult(model.name, "cavi", params, losses=[-e for e in elbos], seconds=seconds,
                     posterior=posterior,
                     info={"elbo": elbos, "q": q, "converged": converged,
                           "iterations": len(elbos)})


def _local_factors(model: Model, order: list[ConjugateFactor], names: Sequence[str],
                   steps: int) -> list[ConjugateFactor]:
    """The factors ``local=`` names, checked (updated ones, not held)."""
    if steps < 0:
        raise ModelError(f"engine 'cavi': local_steps must be >= 0, got {steps}.")
    updated = {q.name: q for q in order}
    for name in names:
        if name not in updated:
            raise ModelError(f"engine 'cavi': local= names {name!r}, which is not a continuous "
                             f"latent of {model.name!r} that the run updates."
                             + suggest(name, updated))
    return [q for q in order if q.name in names]


def _inner_loop(tab: Tabulation, readings: _Readings, factors: dict[str, ConjugateFactor],
                inner: list[ConjugateFactor], steps: int, tol: float) -> None:
    """The local latents' inner loop (see ``fit``'s ``local``)."""
    for _ in range(steps if inner else 0):
        before = [dict(q.params) for q in inner]
        local, uses = _local_step(tab, readings, _point(factors), marginals=False)
        _global_steps(inner, readings, local, uses)
        change = max(float((q.params[k] - old[k]).abs().mean())
                     for q, old in zip(inner, before, strict=True) for k in q.params)
        if change < tol:
            return


def _point(factors: dict[str, ConjugateFactor]) -> dict[str, torch.Tensor]:
    """Values the factories are called at (only tables reading no latent keep them)."""
    return {name: f.mean() for name, f in factors.items()}


def _global_steps(order: list[ConjugateFactor], readings: _Readings, local: _Local,
                  uses: list[Use]) -> None:
    """Each latent's closed-form update, in ``ORDER``, from the local step's weights and the
    other latents' newest moments."""
    for q in order:
        sums = q.zeros()
        for use, found, weight in zip(uses, readings.current, local.weights, strict=True):
            for reading in found.values():
                if reading.target == q.name:
                    add_statistics(use, reading, found, weight, readings.moments, sums)
        q.update(sums)
        readings.moments[q.name] = q.moments()


def _check_monotone(elbos: list[float], elbo: float, dtype: torch.dtype) -> None:
    """A decrease beyond rounding (relative square root of the dtype's epsilon, for sums of
    many terms) is a bug, not noise: coordinate ascent is monotone."""
    slack = math.sqrt(torch.finfo(dtype).eps)
    if elbos and elbo < elbos[-1] - slack * max(1.0, abs(elbos[-1])):
        raise ModelError(f"engine 'cavi': the ELBO decreased from {elbos[-1]:.12g} to "
                         f"{elbo:.12g}; coordinate ascent cannot do that. Please report it "
                         "with the model.")


def infer(model: Model, data: dict[str, Any] | None, options: CAVIOptions) -> Posterior:
    """``fit``, then ``num_samples`` draws of each continuous latent from its ``q`` beside
    the finite latents' marginals."""
    num_samples = 1000 if options.num_samples is None else options.num_samples
    result = fit(model, data, replace(options, num_samples=None))
    posterior = result.posterior
    assert posterior is not None
    posterior.samples = {name: q.sample((1, num_samples))
                         for name, q in result.info["q"].items()}
    posterior.info["converged"] = result.info["converged"]
    return posterior


CAVI = register(Engine(
    "cavi", "coordinate-ascent mean-field VI for conjugate-exponential models (Dirichlet, Beta, "
    "Normal, Gamma priors): closed-form updates derived from the graph, finite latents exact; "
    "monotone ELBO",
    returns=Returns.FIT | Returns.MARGINALS | Returns.EVIDENCE_BOUND | Returns.DRAWS,
    accepts=Feature.FINITE | Feature.CONTINUOUS, needs=Feature.CONTINUOUS,
    options=CAVIOptions, infer=infer, fit=fit))

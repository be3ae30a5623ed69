"""``engine="svi"``: stochastic variational inference with a DSL guide or an autoguide.

Finite latents the guide does not propose are summed out exactly (``TraceEnum_ELBO``) and
recovered afterwards by ``infer_discrete``, so the posterior holds every latent. Without
continuous latents and without a guide, SVI is maximum likelihood of the params.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer import autoguide as ag
from pyro.optim import PyroOptim

from genppl.dsl.guide import Guide
from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError, suggest
from genppl.pyro.layout import resolve_sizes
from genppl.pyro.values import split_site, stack_draws
from genppl.results import FitResult, Posterior
from genppl.runtime.checkpoint import RunCheckpoint, check_checkpoint, digest
from genppl.runtime.options import Role, option
from genppl.runtime.progress import check_finite, progress_bar, seed_everything
from genppl.tabulation.prepared import (
    Prepared,
    check_enumeration,
    complete_draw,
    init_values,
    prepare,
)
from genppl.variational.evaluate import whole_plates
from genppl.variational.joint import JointOptimiser
from genppl.variational.minibatch import PlateLoader, on_indices, plate_batches, subsampled
from genppl.variational.optim import make_optimiser, recipe
from genppl.variational.params import restore, snapshot, store_state
from genppl.variational.step import SVIStep
from genppl.variational.stopping import EarlyStopping

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
    if prep.enumerated:
        check_enumeration(prep, "Fewer finite latents per plate entry, or engine 'gibbs'")
    return table[kind](max_plate_nesting=prep.max_plate_nesting, num_particles=num_particles,
                       vectorize_particles=num_particles > 1)


@dataclass(frozen=True, kw_only=True)
class SVIOptions:
    """Options of engine ``svi``."""

    guide: str | Guide | None = option(
        None, "a DSL guide, or an autoguide by name: 'delta', 'normal', 'mvn', 'lowrank' "
        "(None: 'normal' where there are continuous latents)")
    steps: int = option(1000, "optimisation steps", role=Role.STEPS)
    lr: float = option(0.01, "learning rate")
    clip_norm: float | None = option(10.0, "gradient clipping per parameter (None: unclipped)")
    lrd: float = option(1.0, "per-step learning-rate decay (an exponential schedule)")
    optimizer: str | PyroOptim = option(
        "clipped_adam", "'clipped_adam', 'adam', 'sgd', 'adagrad', 'rmsprop', or a pyro.optim "
        "object")
    schedule: str | None = option(None, "learning-rate schedule: 'exponential', 'step', "
                                  "'cosine' or 'plateau'")
    schedule_options: dict[str, Any] | None = option(None, "options of the torch scheduler")
    elbo: str | None = option(None, "the ELBO: 'trace', 'meanfield' or 'enum' (None: chosen "
                              "from the model)")
    num_particles: int = option(1, "Monte Carlo particles per ELBO estimate")
    batch_size: int | dict[str, int] | None = option(
        None, "minibatches: every data plate (an int) or the named plates (a dict)")
    validation: dict[str, Any] | None = option(None, "held-out data, scored every eval_every "
                                               "steps")
    eval_every: int = option(100, "steps between two evaluations")
    eval_particles: int = option(32, "particles of a held-out ELBO")
    patience: int | None = option(None, "stop after this many evaluations without improvement")
    checkpoint: str | Path | None = option(None, "a directory: the run saves svi.pt there and "
                                           "a repeated call resumes it (needs seed)")
    checkpoint_every: int = option(100, "steps between two checkpoint saves")
    seed: int | None = option(None, "seed (None: torch's global stream)", role=Role.SEED)
    num_samples: int | None = option(None, "draws from the fitted guide (None: 500 for "
                                     "genppl.infer, none for genppl.fit)", role=Role.DRAWS)
    init: dict[str, Any] | None = option(None, "starting values of latents by name")
    progress: bool = option(True, "a progress bar", role=Role.PROGRESS)
    clear_params: bool = option(True, "clear Pyro's param store before fitting")
    validate: bool | None = option(None, "Pyro's validation during the run (None: Pyro's "
                                   "global setting)")


def fit(model: Model, data: dict[str, Any] | None, options: SVIOptions) -> FitResult:
    """Optimise the ELBO for ``steps`` steps.

    Optimiser (``genppl.variational.optim``): ``optimizer`` by name ("clipped_adam", the
    default, "adam", "sgd", "adagrad", "rmsprop") or a ``pyro.optim`` object, learning rate
    ``lr``, each parameter's gradient clipped to norm ``clip_norm`` (ClippedAdam: each
    gradient element clamped to +-``clip_norm``; None: unclipped), under ``schedule``
    ("exponential", "step", "cosine", stepped every step, or "plateau", stepped at each
    evaluation on the monitored loss) with ``schedule_options`` for the torch scheduler.
    ``lrd`` is the per-step decay of earlier releases (an exponential schedule). A named
    optimizer is one torch optimiser over all parameters (``genppl.variational.joint``), a
    ``pyro.optim`` object Pyro's one per parameter; the numbers are the same as
    ``pyro.infer.SVI``'s with the same random numbers.

    ``validate``: Pyro's validation during the run (None: Pyro's global setting, on by
    default). ``False`` drops Pyro's checks -- distribution arguments against their
    constraints and sample values against their supports, model and guide sites matching,
    site shapes against the plates, NaN/inf warnings per site, plate subsample sizes -- for
    speed once a model is known to be right (about a tenth of a VAE step on the CPU);
    genppl's own check that each step's loss is finite stays.

    Minibatches (``genppl.variational.minibatch``): ``batch_size`` walks every plate holding
    observed data (an int) or the named plates (a dict) in shuffled minibatches, epoch after
    epoch; the log-likelihood is scaled by size/batch so each step's ELBO is unbiased.

    Evaluation and early stopping: every ``eval_every`` steps the monitored score is the ELBO
    of ``validation`` data (``eval_particles`` draws with fixed random numbers, so the scores
    compare the params and not the noise, and the training stream is not disturbed), or
    without validation data the training ELBO averaged since the last evaluation. The params
    of the best evaluation are restored at the end; ``patience`` stops the run after that
    many evaluations without improvement.

    Checkpoints (``SVICheckpoint`` below): with ``checkpoint=directory`` (and a
    ``seed``), the run is saved atomically every ``checkpoint_every`` steps and at the end; a
    run started again with the same arguments resumes where the saved one stopped and gives
    the same losses and params as an uninterrupted run.

    ``num_samples > 0`` also draws that many posterior samples from the fitted guide.
    """
    check_checkpoint("svi", options.checkpoint, options.seed, options.checkpoint_every)
    if options.eval_every < 1:
        raise ModelError(f"svi: eval_every must be >= 1, got {options.eval_every}.")
    seed_everything(options.seed)
    if options.clear_params:
        pyro.clear_param_store()
    start = time.perf_counter()
    with _checks(options.validate):  # (validate=False: no check of data against supports)
        prep = prepare(model, data)
    pyro_guide = build_guide(prep, options.guide, options.init)
    loss_fn = _elbo(prep, options.elbo, options.num_particles)
    recipe_options = {"lr": options.lr, "clip_norm": options.clip_norm, "lrd": options.lrd,
                      "schedule": options.schedule, "schedule_options": options.schedule_options,
                      "steps": options.steps}
    optimiser: Any = (make_optimiser(options.optimizer, **recipe_options)
                      if isinstance(options.optimizer, PyroOptim)
                      else JointOptimiser(recipe(options.optimizer, **recipe_options)))
    batches = plate_batches(prep, options.batch_size)
    minibatched = {*batches, *(p for p, spec in model.plates.items()
                               if spec.subsample_size is not None)}
    if minibatched and options.num_samples and not isinstance(options.guide, Guide):
        local = [s for s in prep.continuous
                 if set(model[split_site(s)[0]].plates) & minibatched]
        if local:  # the autoguide's plates keep the batch size it was built with
            raise ModelError(f"num_samples= after a minibatched fit cannot draw latent "
                             f"{local[0]!r} of plate(s) {sorted(minibatched)} from an autoguide "
                             "(it was built for one batch, and a draw must cover every item); "
                             "fit, then draw with a DSL guide, or fit without batch_size= "
                             "and subsample_size=.")
    indices: dict[str, torch.Tensor] = {}
    loader = None
    model_fn, guide_fn = prep.program, pyro_guide
    if batches:
        sizes, _ = resolve_sizes(model, prep.data)
        loader = PlateLoader(sizes, batches, int(torch.randint(0, 2**62, ())))
        model_fn, guide_fn = on_indices(prep.program, indices), on_indices(pyro_guide, indices)
    svi = SVIStep(model_fn, guide_fn, loss_fn, optimiser)
    val = None
    if options.validation is not None:
        with torch.random.fork_rng(devices=[]):  # tracing draws: leave the training stream
            val = prepare(model, options.validation)
    monitoring = val is not None or options.patience is not None or optimiser.plateau
    stopping = EarlyStopping(options.patience)
    eval_seed = options.seed if options.seed is not None else 0
    store = None
    if options.checkpoint is not None:
        store = SVICheckpoint(options.checkpoint, _fingerprint(
            model, prep, options.guide, steps=options.steps, lr=options.lr,
            clip_norm=options.clip_norm, lrd=options.lrd, optimizer=optimiser.name,
            schedule=options.schedule, schedule_options=options.schedule_options,
            elbo=type(loss_fn).__name__, num_particles=options.num_particles, batches=batches,
            validation=val, eval_every=options.eval_every,
            eval_particles=options.eval_particles, patience=options.patience,
            seed=options.seed, optimiser_state=type(optimiser).__name__,
            init=digest(options.init or {})))

    def step_once() -> float:
        if loader is not None:
            indices.update(loader.next())
        with subsampled(model, batches), _checks(options.validate):
            return svi(**prep.data)

    losses: list[float] = []
    done = 0
    saved = store.load() if store is not None else None
    if saved is not None:
        if loader is not None:
            indices.update({n: torch.arange(b) for n, b in batches.items()})
        with subsampled(model, batches):  # create every param, then set it
            svi.create_params(**prep.data)
        restore(saved["params"])
        optimiser.load_state_dict(saved["optim"])
        if loader is not None:
            loader.load_state_dict(saved["loader"])
        stopping.load_state_dict(saved["stopping"])
        losses, done = [float(v) for v in saved["losses"]], int(saved["done"])
        SVICheckpoint.restore_generators(saved)
    held_out: float | None = None
    bar = progress_bar(range(done, options.steps), total=options.steps - done,
                       desc=f"svi {model.name}", enabled=options.progress)
    for step in bar:
        if stopping.stopped:
            break
        loss = step_once()
        check_finite(loss, "the ELBO", step)
        losses.append(loss)
        done = step + 1
        optimiser.after_step()
        if monitoring and done % options.eval_every == 0:
            if val is not None:
                with _checks(options.validate):
                    held_out = _held_out_elbo(val, pyro_guide, loss_fn,
                                              options.eval_particles,
                                              eval_seed)
                score = held_out
            else:
                score = -sum(losses[-options.eval_every:]) / len(losses[-options.eval_every:])
            check_finite(score, "the monitored ELBO", step)
            stopping.update(done, score)
            optimiser.after_evaluation(-score)
        if hasattr(bar, "set_postfix") and (step % 50 == 0 or done % options.eval_every == 0):
            shown = {"elbo": f"{-loss:.4g}"}
            if held_out is not None:
                shown["held_out"] = f"{held_out:.4g}"
            bar.set_postfix(**shown)
        if store is not None and (done % options.checkpoint_every == 0
                                  or done == options.steps
                                  or stopping.stopped):
            record: dict[str, Any] = {
                "done": done, "losses": torch.tensor(losses, dtype=torch.float64),
                "params": snapshot(), "optim": optimiser.state_dict(),
                "stopping": stopping.state_dict()}
            if loader is not None:
                record["loader"] = loader.state_dict()
            store.save(record)
    if monitoring and stopping.best_params is not None:
        restore(stopping.best_params)
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    posterior = None
    if options.num_samples:
        posterior = _posterior(prep, pyro_guide, options.num_samples,
                               -losses[-1] if losses else None)
    seconds = time.perf_counter() - start
    if posterior is not None:
        posterior.seconds = seconds
    info: dict[str, Any] = {"guide": pyro_guide, "elbo": type(loss_fn).__name__,
                            "optimizer": optimiser.name, "param_state": store_state(),
                            "steps_done": done}
    if monitoring:
        info.update(history=list(stopping.history), best_step=stopping.best_step,
                    stopped_early=stopping.stopped)
    if loader is not None:
        info["epochs"] = dict(loader.epochs)
    return FitResult(model.name, "svi", params, losses, seconds, posterior, info=info)


def _checks(validate: bool | None) -> AbstractContextManager[Any]:
    """Pyro's validation as ``fit(validate=...)`` asks (None: left as it is)."""
    return nullcontext() if validate is None else pyro.validation_enabled(validate)


def _held_out_elbo(val: Prepared, guide: Callable[..., Any], loss_fn: Any, particles: int,
                   seed: int) -> float:
    """The ELBO of the validation data with fixed random numbers (common to every
    evaluation), drawn from a stream of its own so that training draws the same numbers
    with or without validation."""
    elbo = type(loss_fn)(max_plate_nesting=val.max_plate_nesting, num_particles=particles,
                         vectorize_particles=particles > 1)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return -float(elbo.loss(val.program, guide, **val.data))


def _fingerprint(model: Model, prep: Prepared, guide: str | Guide | None, *,
                 validation: Prepared | None, batches: dict[str, int], **options: Any
                 ) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the model, the data (a digest of its
    values), the guide and every option that changes the trajectory (starting values as a
    digest), as plain numbers, strings and lists."""
    def plain(value: Any) -> Any:
        if isinstance(value, (int, float, str, bool)) or value is None:
            return value
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in sorted(value.items())}
        return repr(value)

    def data(p: Prepared | None) -> Any:
        return None if p is None else digest(p.data)

    name = guide.name if isinstance(guide, Guide) else guide
    return {"engine": "svi", "model": model.name, "guide": name, "data": data(prep),
            "validation": data(validation), "batches": plain(batches),
            **{k: plain(v) for k, v in options.items()}}


def _posterior(prep: Prepared, guide: Callable[..., Any], num_samples: int,
               elbo: float | None) -> Posterior:
    """Draws from the fitted guide over every item of every plate: a plate declared with
    ``subsample_size`` runs in full here, since a fresh minibatch per draw would put a
    different item at each index of each draw (and leave most items out)."""
    draws = []
    with torch.no_grad(), whole_plates(prep.model):
        for _ in range(num_samples):
            guide_trace = poutine.trace(guide).get_trace(**prep.data)
            values = {name: site["value"] for name, site in guide_trace.nodes.items()
                      if site["type"] == "sample" and not site["is_observed"]
                      and not site["infer"].get("is_auxiliary")}
            draws.append(complete_draw(prep, values))
    return Posterior(prep.model.name, "svi", samples=stack_draws(draws), elbo=elbo)


def infer(model: Model, data: dict[str, Any] | None, options: SVIOptions) -> Posterior:
    """Fit (see ``fit``) and return draws from the fitted guide (500 unless ``num_samples``
    says otherwise)."""
    result = fit(model, data, replace(
        options, num_samples=500 if options.num_samples is None else options.num_samples))
    assert result.posterior is not None
    result.posterior.info.update(params=result.params, losses=result.losses)
    return result.posterior


#: The layout of SVI checkpoint records; a file of another layout is refused like another run's.
SVI_FORMAT = 1


class SVICheckpoint(RunCheckpoint):
    """The checkpoint of an SVI run: one file, ``svi.pt``, holding everything the next step
    depends on -- the param store's values, the optimisers' and schedules' states, the step
    count, the losses so far, the random number generators, the loader's position and the early
    stopping state -- so that a run killed at any point and started again continues exactly as
    the uninterrupted run would (tested in float64). It is the run checkpoint every engine uses
    (``genppl.runtime.checkpoint``): written atomically beside the previous save, checksummed,
    loaded with ``weights_only=True``, and refused when it records another run.

    The run is described by ``run`` (plain numbers, strings and lists)."""

    def __init__(self, directory: str | Path, run: dict[str, Any]) -> None:
        super().__init__(directory, "svi", {**run, "format": SVI_FORMAT})


SVI = register(Engine(
    "svi", "stochastic variational inference: DSL guide or autoguide (delta/normal/mvn/"
    "lowrank); finite latents summed out",
    returns=Returns.FIT | Returns.DRAWS | Returns.EVIDENCE_BOUND,
    accepts=(Feature.FINITE | Feature.CONTINUOUS | Feature.GAUSSIAN_CHAINS | Feature.FACTORS
             | Feature.NEURAL),
    needs=Feature.NONE, options=SVIOptions, infer=infer, fit=fit))

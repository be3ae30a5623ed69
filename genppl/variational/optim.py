"""Optimisers and learning-rate schedules for SVI, as ``pyro.optim`` objects.

Pyro creates one torch optimiser per parameter, lazily, as parameters first appear; its
``PyroOptim`` and ``PyroLRScheduler`` wrappers do that bookkeeping and save and restore the
per-parameter state (``get_state``/``set_state``), which checkpoints need. This module only
turns names into those wrappers, so that every optimiser gets gradient clipping by norm (not
only ClippedAdam) and every schedule works with every optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pyro.optim import PyroOptim
from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam
from pyro.optim.lr_scheduler import PyroLRScheduler

from genppl.errors import ModelError, suggest

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "clipped_adam": TorchClippedAdam,  # Adam that clips each gradient itself; lrd decay
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}

#: name -> (torch scheduler, its default options given the run's number of steps)
SCHEDULES: dict[str, tuple[type[Any], Any]] = {
    "exponential": (torch.optim.lr_scheduler.ExponentialLR, lambda steps: {}),
    "step": (torch.optim.lr_scheduler.StepLR,
             lambda steps: {"step_size": max(1, steps // 3), "gamma": 0.1}),
    "cosine": (torch.optim.lr_scheduler.CosineAnnealingLR, lambda steps: {"T_max": steps}),
    "plateau": (torch.optim.lr_scheduler.ReduceLROnPlateau,
                lambda steps: {"factor": 0.5, "patience": 2}),
}


@dataclass
class Optimiser:
    """The ``pyro.optim`` object SVI steps with, and how its schedule advances: ``per_step``
    schedules after every SVI step, a plateau schedule after every evaluation, with the
    monitored loss (the negative held-out or training ELBO)."""

    optim: PyroOptim
    name: str
    plateau: bool = False

    @property
    def scheduled(self) -> bool:
        return isinstance(self.optim, PyroLRScheduler)

    def after_step(self) -> None:
        if self.scheduled and not self.plateau:
            self.optim.step()

    def after_evaluation(self, loss: float) -> None:
        if self.plateau:
            self.optim.step(loss)


def make_optimiser(optimizer: str | PyroOptim = "clipped_adam", *, lr: float = 0.01,
                   clip_norm: float | None = 10.0, lrd: float = 1.0,
                   schedule: str | None = None, schedule_options: dict[str, Any] | None = None,
                   steps: int = 1000) -> Optimiser:
    """Build the optimiser: ``optimizer`` by name (see ``OPTIMIZERS``) with learning rate
    ``lr`` and each parameter's gradient clipped to norm ``clip_norm`` (None: no clipping),
    under ``schedule`` (see ``SCHEDULES``; ``schedule_options`` override its defaults and are
    the torch scheduler's keyword arguments). A ``pyro.optim`` object is used as it is.

    ``lrd`` is the per-step decay of the learning rate kept from earlier releases: with
    ClippedAdam and no schedule it is ClippedAdam's own ``lrd`` (the same numbers as before);
    otherwise it is ``schedule="exponential"`` with ``gamma=lrd``.
    """
    if isinstance(optimizer, PyroOptim):
        if schedule is not None or lrd != 1.0:
            raise ModelError("schedule= and lrd= build a schedule around a named optimizer; "
                             "a pyro.optim object brings its own.")
        plateau = getattr(optimizer, "pt_scheduler_constructor", None) is \
            torch.optim.lr_scheduler.ReduceLROnPlateau
        return Optimiser(optimizer, type(optimizer).__name__, plateau)
    if optimizer not in OPTIMIZERS:
        raise ModelError(f"unknown optimizer {optimizer!r}." + suggest(str(optimizer), OPTIMIZERS))
    if clip_norm is not None and clip_norm <= 0:
        raise ModelError(f"clip_norm must be positive or None, got {clip_norm}.")
    options = dict(schedule_options or {})
    if lrd != 1.0:
        if schedule not in (None, "exponential"):
            raise ModelError(f"lrd= is an exponential decay; it cannot be combined with "
                             f"schedule={schedule!r} (give that schedule's options instead).")
        if optimizer != "clipped_adam" or schedule == "exponential":
            schedule = "exponential"
            options.setdefault("gamma", lrd)
    if schedule is None and options:
        raise ModelError("schedule_options= given without a schedule=.")
    torch_optim = OPTIMIZERS[optimizer]
    args: dict[str, Any] = {"lr": lr}
    clip: dict[str, Any] = {}
    if optimizer == "clipped_adam":  # clips (each parameter's gradient) itself
        args.update(clip_norm=clip_norm if clip_norm is not None else float("inf"),
                    lrd=lrd if schedule is None else 1.0)
    elif clip_norm is not None:  # PyroOptim clips each parameter's gradient, as ClippedAdam
        clip = {"clip_norm": clip_norm}
    if schedule is None:
        return Optimiser(PyroOptim(torch_optim, args, clip), optimizer)
    if schedule not in SCHEDULES:
        raise ModelError(f"unknown schedule {schedule!r}." + suggest(schedule, SCHEDULES))
    scheduler, defaults = SCHEDULES[schedule]
    if schedule == "exponential" and "gamma" not in options:
        raise ModelError("schedule='exponential' needs its per-step factor: "
                         "schedule_options={'gamma': 0.999} (or lrd=0.999).")
    kwargs = {**defaults(steps), **options}
    optim = PyroLRScheduler(scheduler, {"optimizer": torch_optim, "optim_args": args, **kwargs},
                            clip)
    return Optimiser(optim, f"{optimizer}+{schedule}", plateau=schedule == "plateau")


def learning_rates(optimiser: Optimiser) -> list[float]:
    """The current learning rate of every parameter's optimiser (for tests and reports)."""
    rates = []
    for obj in optimiser.optim.optim_objs.values():
        opt = getattr(obj, "optimizer", obj)
        rates.extend(group["lr"] for group in opt.param_groups)
    return rates

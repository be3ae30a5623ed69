"""Optimisers and learning-rate schedules for SVI by name.

``recipe`` turns a name, a learning rate, clipping and a schedule into what to build: the
torch optimiser and scheduler classes and their arguments, and every optimiser gets gradient
clipping by norm (ClippedAdam clamps each gradient element itself) and every schedule. Two
builders read it: ``genppl.variational.joint.JointOptimiser``, what ``fit`` steps with (one
torch optimiser over all parameters), and ``make_optimiser``, the ``pyro.optim`` wrapper
(Pyro's one torch optimiser per parameter, created lazily, with ``get_state``/``set_state``)
for users who hand ``fit`` or ``pyro.infer.SVI`` an optimiser object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

    def step(self, params: list[torch.Tensor]) -> None:
        """One update of ``params`` (tensors with gradients), as ``pyro.infer.SVI`` makes."""
        self.optim(params)

    def state_dict(self) -> dict[str, Any]:
        return self.optim.get_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.set_state(state)

    def learning_rates(self) -> list[float]:
        rates = []
        for obj in self.optim.optim_objs.values():
            opt = getattr(obj, "optimizer", obj)
            rates.extend(group["lr"] for group in opt.param_groups)
        return rates


@dataclass(frozen=True)
class Recipe:
    """What a named optimizer builds, whoever builds it: the torch optimiser class and its
    arguments, each parameter's gradient clipped to norm ``clip_norm`` before the step (None:
    not clipped, or clipped by the optimiser itself, as ClippedAdam does), and the torch
    scheduler with its arguments (None: a constant rate)."""

    name: str
    torch_optim: type[torch.optim.Optimizer]
    args: dict[str, Any]
    clip_norm: float | None = None
    scheduler: type[Any] | None = None
    scheduler_args: dict[str, Any] = field(default_factory=dict)

    @property
    def plateau(self) -> bool:
        return self.scheduler is torch.optim.lr_scheduler.ReduceLROnPlateau


def recipe(optimizer: str = "clipped_adam", *, lr: float = 0.01,
           clip_norm: float | None = 10.0, lrd: float = 1.0, schedule: str | None = None,
           schedule_options: dict[str, Any] | None = None, steps: int = 1000) -> Recipe:
    """The recipe of ``optimizer`` by name (see ``OPTIMIZERS``) with learning rate ``lr`` and
    each parameter's gradient clipped to norm ``clip_norm`` (None: no clipping), under
    ``schedule`` (see ``SCHEDULES``; ``schedule_options`` override its defaults and are the
    torch scheduler's keyword arguments).

    ``lrd`` is the per-step decay of the learning rate kept from earlier releases: with
    ClippedAdam and no schedule it is ClippedAdam's own ``lrd`` (the same numbers as before);
    otherwise it is ``schedule="exponential"`` with ``gamma=lrd``.
    """
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
    args: dict[str, Any] = {"lr": lr}
    clip = None
    if optimizer == "clipped_adam":  # clips (each parameter's gradient) itself
        args.update(clip_norm=clip_norm if clip_norm is not None else float("inf"),
                    lrd=lrd if schedule is None else 1.0)
    else:  # clipped before the step, each parameter's gradient on its own, as ClippedAdam
        clip = clip_norm
    if schedule is None:
        return Recipe(optimizer, OPTIMIZERS[optimizer], args, clip)
    if schedule not in SCHEDULES:
        raise ModelError(f"unknown schedule {schedule!r}." + suggest(schedule, SCHEDULES))
    scheduler, defaults = SCHEDULES[schedule]
    if schedule == "exponential" and "gamma" not in options:
        raise ModelError("schedule='exponential' needs its per-step factor: "
                         "schedule_options={'gamma': 0.999} (or lrd=0.999).")
    return Recipe(f"{optimizer}+{schedule}", OPTIMIZERS[optimizer], args, clip, scheduler,
                  {**defaults(steps), **options})


def make_optimiser(optimizer: str | PyroOptim = "clipped_adam", *, lr: float = 0.01,
                   clip_norm: float | None = 10.0, lrd: float = 1.0,
                   schedule: str | None = None, schedule_options: dict[str, Any] | None = None,
                   steps: int = 1000) -> Optimiser:
    """The ``pyro.optim`` object of ``recipe(optimizer, ...)`` (the arguments are
    ``recipe``'s), to hand to ``fit(optimizer=...)`` or to ``pyro.infer.SVI``. A
    ``pyro.optim`` object is used as it is."""
    if isinstance(optimizer, PyroOptim):
        if schedule is not None or lrd != 1.0:
            raise ModelError("schedule= and lrd= build a schedule around a named optimizer; "
                             "a pyro.optim object brings its own.")
        plateau = getattr(optimizer, "pt_scheduler_constructor", None) is \
            torch.optim.lr_scheduler.ReduceLROnPlateau
        return Optimiser(optimizer, type(optimizer).__name__, plateau)
    r = recipe(optimizer, lr=lr, clip_norm=clip_norm, lrd=lrd, schedule=schedule,
               schedule_options=schedule_options, steps=steps)
    clip = {} if r.clip_norm is None else {"clip_norm": r.clip_norm}
    if r.scheduler is None:
        return Optimiser(PyroOptim(r.torch_optim, r.args, clip), r.name)
    optim = PyroLRScheduler(r.scheduler, {"optimizer": r.torch_optim, "optim_args": r.args,
                                          **r.scheduler_args}, clip)
    return Optimiser(optim, r.name, plateau=r.plateau)

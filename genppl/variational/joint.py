"""One torch optimiser over the parameters of a fit, instead of Pyro's one per parameter.

``pyro.optim.PyroOptim`` builds a torch optimiser (and scheduler) for each parameter as it
first appears and steps them one by one: with a network's weights that is a Python-level
update per tensor per step. ``JointOptimiser`` builds one optimiser for all the parameters
that first receive a gradient at the same step -- at the first step, usually all of them --
so each update is one multi-tensor call (torch's fused kernels where the optimiser and device
have them, else its ``foreach`` ones; ``multi_tensor.ClippedAdam`` for ClippedAdam).

The numbers are Pyro's: Adam, SGD, Adagrad, RMSprop and ClippedAdam update each parameter
elementwise from its own state, and a parameter first seen later gets an optimiser and
schedule of its own started then, as Pyro's per-parameter ones are (tested against
``pyro.infer.SVI``: bit for bit with ClippedAdam, the default, SGD and RMSprop; Adam's and
Adagrad's fused kernels round differently, a few units in the 7th digit in float32). A
tensor in the param store under two names is stepped once, as Pyro does. One difference: a
parameter is stepped when it received a gradient in the step; Pyro steps every parameter its
trace touched, so one that had a gradient before but none now is moved again by Adam's
momentum there, and left alone here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro
import torch

from genppl.errors import ModelError
from genppl.library_internals import fused_kernel_devices
from genppl.variational import multi_tensor
from genppl.variational.optim import OPTIMIZERS, Recipe

#: Optimisers with a fused (one kernel per step) torch implementation.
_FUSED = (torch.optim.Adam, torch.optim.SGD, torch.optim.Adagrad)


@dataclass
class _Cohort:
    """The parameters first stepped at the same step, their optimiser and its schedule."""

    params: list[torch.Tensor]
    optim: torch.optim.Optimizer
    schedule: Any


class JointOptimiser:
    """Steps the parameters of a fit by ``recipe`` (see module docstring); ``after_step``
    and ``after_evaluation`` advance the schedule as ``optim.Optimiser`` does."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.name = recipe.name
        self.plateau = recipe.plateau
        self.cohorts: list[_Cohort] = []
        self.known: set[torch.Tensor] = set()

    def step(self, params: list[torch.Tensor]) -> None:
        """One update of ``params`` (tensors with gradients) from their gradients."""
        new = [p for p in params if p not in self.known]
        if new:
            self._add(new)
        if self.recipe.clip_norm is not None:
            multi_tensor.clip_norms_([p.grad for p in params], self.recipe.clip_norm)
        for cohort in self.cohorts:
            cohort.optim.step()

    def after_step(self) -> None:
        if not self.plateau:
            for cohort in self.cohorts:
                if cohort.schedule is not None:
                    cohort.schedule.step()

    def after_evaluation(self, loss: float) -> None:
        if self.plateau:
            for cohort in self.cohorts:
                cohort.schedule.step(loss)

    def learning_rates(self) -> list[float]:
        """The current learning rate of every parameter (for tests and reports)."""
        return [group["lr"] for cohort in self.cohorts for group in cohort.optim.param_groups
                for _ in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """Every cohort's parameters by param store name, optimiser and schedule states."""
        store = pyro.get_param_store()
        return {"cohorts": [
            {"names": [store.param_name(p) for p in c.params], "optim": c.optim.state_dict(),
             "schedule": None if c.schedule is None else c.schedule.state_dict()}
            for c in self.cohorts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the cohorts of ``state`` over the param store's parameters (which must
        exist: run the model and guide once first) and load their states."""
        store = dict(pyro.get_param_store().named_parameters())
        self.cohorts, self.known = [], set()
        for saved in state["cohorts"]:
            missing = [n for n in saved["names"] if n not in store]
            if missing:
                raise ModelError(f"the saved optimiser state is for param {missing[0]!r}, which "
                                 "is not in the param store; the model or guide changed.")
            cohort = self._add([store[n] for n in saved["names"]])
            cohort.optim.load_state_dict(saved["optim"])
            if cohort.schedule is not None:
                cohort.schedule.load_state_dict(saved["schedule"])

    def _add(self, params: list[torch.Tensor]) -> _Cohort:
        r = self.recipe
        optim = _build(r.torch_optim, params, r.args)
        schedule = None if r.scheduler is None else r.scheduler(optim, **r.scheduler_args)
        cohort = _Cohort(params, optim, schedule)
        self.cohorts.append(cohort)
        self.known.update(params)
        return cohort


def _build(cls: type[torch.optim.Optimizer], params: list[torch.Tensor],
           args: dict[str, Any]) -> torch.optim.Optimizer:
    """``cls`` over ``params``, in its multi-tensor form: fused where torch has the kernel for
    the parameters' device, else ``foreach``."""
    if cls is OPTIMIZERS["clipped_adam"]:
        return multi_tensor.ClippedAdam(params, **args)
    fused_devices = fused_kernel_devices()
    if cls in _FUSED and all(p.device.type in fused_devices and p.is_floating_point()
                             for p in params):
        return cls(params, **args, fused=True)
    return cls(params, **args, foreach=True)

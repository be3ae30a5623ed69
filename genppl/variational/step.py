"""One SVI step without ``pyro.infer.SVI``: the ELBO's ``loss_and_grads`` (the traces, the
surrogate loss and its backward, exactly as ``SVI.step`` calls it), then one update of every
param store parameter that received a gradient, then their gradients dropped.

``SVI.step`` also traces every ``pyro.param`` call to learn which parameters to update, and
hands them to ``PyroOptim``, which looks each one up and steps its own torch optimiser; here
the parameters are the param store's tensors holding a gradient after the backward pass,
and the optimiser is whatever has ``step(params)`` (``joint.JointOptimiser``, or
``optim.Optimiser`` around a ``pyro.optim`` object).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch


class SVIStep:
    """Steps ``model`` and ``guide`` (Pyro callables) on ``elbo`` (a Pyro ELBO object) with
    ``optimiser``."""

    def __init__(self, model: Callable[..., Any], guide: Callable[..., Any], elbo: Any,
                 optimiser: Any) -> None:
        self.model, self.guide, self.elbo, self.optimiser = model, guide, elbo, optimiser
        # A gradient left on a parameter by earlier code would be taken for this run's.
        for _, p in pyro.get_param_store().named_parameters():
            p.grad = None

    def __call__(self, *args: Any, **kwargs: Any) -> float:
        """One step (the arguments are the model's and guide's); returns the loss (the
        negative ELBO estimate) before the update."""
        loss = self.elbo.loss_and_grads(self.model, self.guide, *args, **kwargs)
        # one tensor may sit in the store under two names (a module registered twice)
        params = list(dict.fromkeys(p for _, p in pyro.get_param_store().named_parameters()
                                    if p.grad is not None))
        self.optimiser.step(params)
        for p in params:
            p.grad = None
        return float(loss)

    def create_params(self, *args: Any, **kwargs: Any) -> None:
        """Run model and guide once without a gradient, so that every parameter exists (to
        restore a checkpoint into)."""
        with torch.no_grad():
            self.elbo.loss(self.model, self.guide, *args, **kwargs)

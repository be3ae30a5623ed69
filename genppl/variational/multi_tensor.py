"""Optimiser arithmetic over many parameters at once (torch's ``_foreach`` kernels).

Pyro's ``ClippedAdam`` and ``PyroOptim``'s gradient clipping work one parameter at a time, a
few Python-level tensor operations each; a model with many parameters pays that per
parameter per step. These do the same arithmetic, elementwise in the same order, over lists
of tensors grouped by device and dtype: the same numbers (tested against Pyro), fewer calls.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from pyro.optim.clipped_adam import ClippedAdam as PyroClippedAdam


def _by_device_and_dtype(*lists: list[torch.Tensor]) -> list[tuple[list[torch.Tensor], ...]]:
    """Split parallel lists of tensors into parallel lists of one device and dtype each (what
    the ``_foreach`` kernels take)."""
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], ...]] = \
        defaultdict(lambda: tuple([] for _ in lists))
    for items in zip(*lists, strict=True):
        group = groups[items[0].device, items[0].dtype]
        for out, item in zip(group, items, strict=True):
            out.append(item)
    return list(groups.values())


def clip_norms_(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale each gradient in place to Euclidean norm at most ``max_norm``, each on its own
    (``torch.nn.utils.clip_grad_norm_(g, max_norm)`` for every ``g``, as ``PyroOptim`` clips)."""
    for (group,) in _by_device_and_dtype(grads):
        norms = torch._foreach_norm(group)
        coefs = torch._foreach_add(norms, 1e-6)
        torch._foreach_reciprocal_(coefs)
        torch._foreach_mul_(coefs, max_norm)
        torch._foreach_clamp_max_(coefs, 1.0)
        torch._foreach_mul_(group, coefs)


class ClippedAdam(PyroClippedAdam):
    """``pyro.optim.ClippedAdam``'s update (each gradient element clamped to ``clip_norm``,
    the rate decayed by ``lrd`` per step, Adam with ``eps`` added to the undivided root)
    computed for all parameters of a group at once. Same arguments and state layout as
    Pyro's, so their state dicts load into each other."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["lr"] *= group["lrd"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p.grad)
                    state["exp_avg_sq"] = torch.zeros_like(p.grad)
                state["step"] += 1
            self._update(group, params)
        return loss

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        step_sizes = [-group["lr"] * math.sqrt(1 - beta2 ** s["step"]) / (1 - beta1 ** s["step"])
                      for s in states]
        clip = group["clip_norm"]
        for ps, gs, ms, vs, sizes in _by_device_and_dtype(params, grads, exp_avgs, exp_avg_sqs,
                                                          step_sizes):
            if math.isfinite(clip):  # clamping to +-inf changes nothing
                torch._foreach_clamp_min_(gs, -clip)
                torch._foreach_clamp_max_(gs, clip)
            if group["weight_decay"] != 0:
                gs = torch._foreach_add(gs, ps, alpha=group["weight_decay"])
            torch._foreach_mul_(ms, beta1)
            torch._foreach_add_(ms, gs, alpha=1 - beta1)
            var = torch._foreach_sub(gs, ms) if group["centered_variance"] else gs
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, var, var, value=1 - beta2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(ps, ms, denom, sizes)

"""One chain of any Pyro ``MCMCKernel``: warm-up, kept draws, progress, checkpoints.

Pyro's ``MCMC`` runs a chain from start to end in one call; a run that is stopped loses
everything. This loop does what ``pyro.infer.mcmc.api._gen_samples`` does -- ``setup``, then
``sample`` step after step -- and every ``every`` steps saves the chain's position, the
kernel's state (``genppl.runtime.kernel_state``: adaptation in progress included), the
draws kept so far and the random number generators, so that a run started again resumes
where it stopped and draws exactly what the uninterrupted run would have (tested for
``gibbs``, ``nuts``, ``hmc`` and ``hmc_gibbs``, stopped in warm-up and while sampling).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genppl.runtime.chains import Advance
from genppl.runtime.checkpoint import ChainCheckpoint, Saved
from genppl.runtime.kernel_state import kernel_state, load_kernel_state

Draw = dict[str, torch.Tensor]


def drive(kernel: Any, *, warmup: int, num_samples: int, advance: Advance,
          device: torch.device, store: ChainCheckpoint | None = None, every: int = 200,
          keep: Callable[[dict[str, torch.Tensor]], Draw] | None = None,
          model_kwargs: dict[str, Any] | None = None) -> Draw:
    """The ``num_samples`` draws kept after ``warmup`` steps of ``kernel``, stacked:
    ``keep(params)`` of each step (default: the parameters, constrained by the kernel's
    transforms). With ``store``, progress is saved every ``every`` steps and at the end,
    and a saved chain is resumed rather than started again."""
    saved = store.load() if store is not None else None
    if saved is not None:  # rebuilt at the saved position, then given its saved state
        kernel.initial_params = {k: v.to(device) for k, v in saved.state["params"].items()}
    kernel.setup(warmup, **(model_kwargs or {}))
    params = kernel.initial_params
    keep = keep or _constrained(kernel.transforms or {})
    kept, done = [], 0
    if saved is not None:
        load_kernel_state(kernel, saved.state["kernel"], device)
        params = {k: v.to(device) for k, v in saved.state["params"].items()}
        saved.restore_generators()
        kept, done = list(saved.draws), saved.done
        advance(done)
    total, pending = warmup + num_samples, []
    while done < total:
        params = kernel.sample(params)
        done += 1
        if done > warmup:
            pending.append(keep(params))
        advance(1)
        if store is not None and (done % every == 0 or done == total):
            if pending:
                kept.append(_stack(pending))
                pending = []
            store.save(Saved({"params": params, "kernel": kernel_state(kernel)}, kept, done),
                       device)
    if pending:
        kept.append(_stack(pending))
    return {name: torch.cat([block[name].to(device) for block in kept]) for name in kept[0]}


def _constrained(transforms: dict[str, Any]) -> Callable[[dict[str, torch.Tensor]], Draw]:
    def keep(params: dict[str, torch.Tensor]) -> Draw:
        return {name: (transforms[name].inv(value) if name in transforms else value).detach()
                for name, value in params.items()}
    return keep


def _stack(draws: list[Draw]) -> Draw:
    return {name: torch.stack([d[name] for d in draws]) for name in draws[0]}

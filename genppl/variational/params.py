"""Snapshots of Pyro's param store: what early stopping keeps of the best step, what a
checkpoint saves, and what ``evaluate`` reads a finished fit's params from.

Values are the store's *unconstrained* tensors (what the optimiser moves), detached copies on
the CPU; restoring copies them back in place, so the tensors the optimisers and ``nn.Module``s
hold stay the same objects.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch

from genppl.errors import ModelError


def snapshot() -> dict[str, torch.Tensor]:
    """The unconstrained value of every param in the store, copied."""
    return {name: value.detach().clone()
            for name, value in pyro.get_param_store().get_state()["params"].items()}


def restore(values: dict[str, torch.Tensor]) -> None:
    """Put ``values`` (a ``snapshot``) back into the params of the store, which must exist."""
    store = pyro.get_param_store().get_state()["params"]
    missing = [name for name in values if name not in store]
    if missing:
        raise ModelError(f"param {missing[0]!r} of the saved state is not in the param store; "
                         "the model or guide changed since it was saved.")
    with torch.no_grad():
        for name, value in values.items():
            store[name].copy_(value.to(store[name].device, store[name].dtype))


def store_state() -> dict[str, Any]:
    """The whole store (values copied, constraints kept) for ``pyro.get_param_store().scope``."""
    state = pyro.get_param_store().get_state()
    return {"params": {k: v.detach().clone().requires_grad_(v.requires_grad)
                       for k, v in state["params"].items()},
            "constraints": dict(state["constraints"])}

"""What a checkpoint must save of an MCMC kernel to resume it exactly, and how to put it
back.

Pyro's kernels have no ``state_dict``. HMC and NUTS keep their state -- step count,
acceptance statistics, the cached potential energy and gradient, and, during warm-up, the
adaptation in progress (dual averaging of the step size, Welford estimates of the mass
matrix, the current adaptation window) -- in attributes of the kernel and of the adaptation
objects of ``pyro.infer.mcmc``. A resumed chain builds its kernel afresh (``setup``), so
everything that is code or derived from the model (potential function, transforms, traces,
the adaptation schedule) exists again; only the data-like attributes are saved: tensors,
numbers, strings, and plain containers of them, found by walking the objects that
``pyro.infer.mcmc`` and its helpers in ``pyro.ops`` define. genppl's own kernels say what
their state is (``state_dict``/``load_state_dict``). What comes out holds only types that
``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from pyro.infer.mcmc import HMC

from genppl.errors import ModelError

#: Marks a saved object's attributes in the tree (an attribute name never looks like this).
_OBJECT = "<object>"


class _Skip:
    """A value a checkpoint leaves out: code, or derived again by ``setup``."""


_SKIP = _Skip()


def kernel_state(kernel: Any) -> dict[str, Any]:
    """The kernel's resumable state as a tree of tensors, numbers, strings and containers."""
    if hasattr(kernel, "state_dict"):
        return kernel.state_dict()
    if isinstance(kernel, HMC):  # NUTS too
        return _attributes(kernel)
    raise ModelError(f"cannot checkpoint a {type(kernel).__name__} kernel: it is neither "
                     "Pyro's HMC/NUTS nor defines state_dict()/load_state_dict().")


def load_kernel_state(kernel: Any, state: dict[str, Any], device: torch.device) -> None:
    """Put ``state`` (from ``kernel_state``) back into a kernel built and ``setup`` as the
    saved one was; tensors go to ``device``."""
    if hasattr(kernel, "load_state_dict"):
        kernel.load_state_dict(state, device)
    else:
        _restore_attributes(kernel, state, device)


#: Where Pyro defines its kernels and their adaptation: step-size dual averaging and the
#: mass matrix's Welford estimates live in ``pyro.ops``.
_STATEFUL = ("pyro.infer.mcmc.", "pyro.ops.dual_averaging", "pyro.ops.welford")


def _walkable(value: Any) -> bool:
    """Objects whose attributes are kernel state: Pyro's MCMC kernels and their adapters."""
    return type(value).__module__.startswith(_STATEFUL) and hasattr(value, "__dict__")


def _attributes(obj: Any) -> dict[str, Any]:
    out = {}
    for name, value in vars(obj).items():
        saved = _save(value)
        if saved is not _SKIP:
            out[name] = saved
    return out


def _save(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if type(value) in (dict, OrderedDict):
        items = {k: _save(v) for k, v in value.items()}
        keys_ok = all(isinstance(k, (str, int, tuple)) for k in items)
        return _SKIP if not keys_ok or any(v is _SKIP for v in items.values()) else items
    if type(value) in (list, tuple):
        items = [_save(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else type(value)(items)
    if _walkable(value):
        return {_OBJECT: _attributes(value)}
    return _SKIP


def _restore_attributes(obj: Any, saved: dict[str, Any], device: torch.device) -> None:
    attributes = vars(obj)
    for name, value in saved.items():
        attributes[name] = _restore(attributes.get(name), value, device)


def _restore(current: Any, saved: Any, device: torch.device) -> Any:
    if isinstance(saved, torch.Tensor):
        return saved.to(current.device if isinstance(current, torch.Tensor) else device)
    if isinstance(saved, dict) and _OBJECT in saved:
        if current is None:
            raise ModelError("checkpoint does not match the kernel: it holds an adaptation "
                             "object the rebuilt kernel lacks; delete it to start afresh.")
        _restore_attributes(current, saved[_OBJECT], device)
        return current
    if isinstance(saved, dict):  # a new dict: the caller may hold the old one (params)
        old = current if isinstance(current, dict) else {}
        return {k: _restore(old.get(k), v, device) for k, v in saved.items()}
    if isinstance(saved, (list, tuple)):
        old = list(current) if isinstance(current, (list, tuple)) else []
        return type(saved)(_restore(old[i] if i < len(old) else None, v, device)
                           for i, v in enumerate(saved))
    return saved

"""Pyro's Hamiltonian kernels (NUTS, HMC) built with every option a user gave, checked: the
one constructor behind engines ``nuts``, ``hmc`` and ``hmc_gibbs``, so an option is never
accepted by an engine and then left out of the kernel."""

from __future__ import annotations

from functools import partial
from typing import Any

from pyro.infer import HMC, NUTS

from genppl.errors import ModelError


def kernel_factory(kernel: str, *, step_size: float, adapt_step_size: bool,
                   target_accept_prob: float, max_tree_depth: int | None,
                   num_steps: int | None, **options: Any) -> Any:
    """``NUTS``/``HMC`` with every option given (``options``: the rest, e.g.
    ``init_strategy``), to be called with the model or potential. An option of the other
    kernel is refused rather than dropped; defaults: depth 10 (NUTS), 10 leapfrog steps
    (HMC)."""
    for name, value, owner in (("max_tree_depth", max_tree_depth, "nuts"),
                               ("num_steps", num_steps, "hmc")):
        if value is not None and kernel != owner:
            raise ModelError(f"kernel {kernel!r}: {name}= belongs to kernel {owner!r}; "
                             f"drop it, or use {owner!r}.")
    if not step_size > 0:
        raise ModelError(f"kernel {kernel!r}: step_size must be > 0, got {step_size}.")
    if not 0 < target_accept_prob < 1:
        raise ModelError(f"kernel {kernel!r}: target_accept_prob must be in (0, 1), got "
                         f"{target_accept_prob}.")
    shared = {"step_size": step_size, "adapt_step_size": adapt_step_size,
              "target_accept_prob": target_accept_prob, **options}
    if kernel == "nuts":
        return partial(NUTS, max_tree_depth=10 if max_tree_depth is None else max_tree_depth,
                       **shared)
    return partial(HMC, num_steps=10 if num_steps is None else num_steps, **shared)


def recorded(make: partial[Any]) -> dict[str, Any]:
    """The plain options a kernel constructor holds (not code such as ``init_strategy``):
    what a checkpoint records of the kernel, so a resume with other options is refused."""
    return {k: v for k, v in sorted(make.keywords.items())
            if isinstance(v, (bool, int, float, str))}

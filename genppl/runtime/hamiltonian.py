"""Pyro's Hamiltonian kernels (NUTS, HMC) built with every option a user gave, checked: the
one constructor behind engines ``nuts``, ``hmc`` and ``hmc_gibbs``, so an option is never
accepted by an engine and then left out of the kernel."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from pyro.infer import HMC, NUTS

from genppl.errors import ModelError
from genppl.runtime.options import option


@dataclass(frozen=True, kw_only=True)
class HamiltonianOptions:
    """The options of a NUTS or HMC kernel."""

    step_size: float = option(1.0, "starting step size (adapted during warm-up unless "
                              "adapt_step_size=False)")
    adapt_step_size: bool = option(True, "adapt the step size during warm-up")
    target_accept_prob: float = option(0.8, "acceptance probability the step size adapts "
                                       "towards, in (0, 1)")
    max_tree_depth: int | None = option(None, "NUTS only: a trajectory has at most 2**depth "
                                        "steps (None: 10)")
    num_steps: int | None = option(None, "HMC only: leapfrog steps per trajectory (None: 10)")


def kernel_factory(kernel: str, options: HamiltonianOptions, **extra: Any) -> partial[Any]:
    """``NUTS``/``HMC`` with every option of ``options`` (and ``extra``, e.g.
    ``init_strategy``), to be called with the model or potential. An option of the other
    kernel is refused rather than dropped; defaults: depth 10 (NUTS), 10 leapfrog steps
    (HMC)."""
    for name, value, owner in (("max_tree_depth", options.max_tree_depth, "nuts"),
                               ("num_steps", options.num_steps, "hmc")):
        if value is not None and kernel != owner:
            raise ModelError(f"kernel {kernel!r}: {name}= belongs to kernel {owner!r}; "
                             f"drop it, or use {owner!r}.")
    if not options.step_size > 0:
        raise ModelError(f"kernel {kernel!r}: step_size must be > 0, got {options.step_size}.")
    if not 0 < options.target_accept_prob < 1:
        raise ModelError(f"kernel {kernel!r}: target_accept_prob must be in (0, 1), got "
                         f"{options.target_accept_prob}.")
    shared = {"step_size": options.step_size, "adapt_step_size": options.adapt_step_size,
              "target_accept_prob": options.target_accept_prob, **extra}
    if kernel == "nuts":
        depth = options.max_tree_depth
        return partial(NUTS, max_tree_depth=10 if depth is None else depth, **shared)
    steps = options.num_steps
    return partial(HMC, num_steps=10 if steps is None else steps, **shared)


def recorded(make: partial[Any]) -> dict[str, Any]:
    """The plain options a kernel constructor holds (not code such as ``init_strategy``):
    what a checkpoint records of the kernel, so a resume with other options is refused."""
    return {k: v for k, v in sorted(make.keywords.items())
            if isinstance(v, (bool, int, float, str))}

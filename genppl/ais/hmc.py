"""One Hamiltonian Monte Carlo transition for every particle at once, each with its own step
size, and the step-size adaptation of Wu et al. (2017).

The state is a dict of unconstrained latents whose leading entries are the particles
(``TemperedTarget``); a particle's momentum, kinetic energy, Metropolis test and step size
are its own, so the particles are independent chains computed as one. Leapfrog with a unit
mass matrix; a proposal whose density is not finite is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from genppl.ais.target import Densities, State, TemperedTarget


@dataclass(frozen=True)
class Point:
    """Particles' unconstrained values, their densities and the gradient of the tempered
    log density at ``beta``; ``finite``, the values of the finite latents carried in the
    state (empty when they are summed out), which HMC holds fixed."""

    values: State
    densities: Densities
    gradient: State
    beta: float
    finite: State = field(default_factory=dict)


@dataclass(frozen=True)
class Adaptation:
    """Wu et al. (2017)'s step-size rule: after each transition a particle's running
    acceptance rate (``slowness`` times the old one plus the rest times this transition's
    acceptance probability) is compared with ``target``, and its step size multiplied by
    ``increase`` above it, by ``decrease`` below it, kept within ``[smallest, largest]``."""

    target: float = 0.65
    slowness: float = 0.9
    increase: float = 1.02
    decrease: float = 0.98
    smallest: float = 1e-4
    largest: float = 10.0

    def update(self, step_size: torch.Tensor, rate: torch.Tensor, accept: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The new ``(step_size, rate)`` after a transition accepted with ``accept``."""
        rate = self.slowness * rate + (1.0 - self.slowness) * accept
        step_size = torch.where(rate > self.target, step_size * self.increase,
                                step_size * self.decrease)
        return step_size.clamp(self.smallest, self.largest), rate


def evaluate(target: TemperedTarget, values: State, beta: float,
             finite: State | None = None) -> Point:
    """The densities of ``values`` (with the finite latents at ``finite``) and the gradient
    of their tempered log density."""
    finite = finite or {}
    leaves = {k: v.detach().requires_grad_() for k, v in values.items()}
    with torch.enable_grad():
        densities = target.densities(leaves, finite)
        total = densities.tempered(beta).sum()
        grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True) \
            if leaves else ()
    gradient = {k: torch.zeros_like(v) if g is None else g
                for (k, v), g in zip(leaves.items(), grads, strict=True)}
    return Point({k: v.detach() for k, v in leaves.items()}, densities.detach(), gradient, beta,
                 finite)


def transition(target: TemperedTarget, point: Point, beta: float, step_size: torch.Tensor,
               leapfrog_steps: int) -> tuple[Point, torch.Tensor]:
    """One HMC transition of every particle leaving f_beta invariant: the new point (at
    ``beta``) and each particle's acceptance probability. ``point``'s gradient is
    recomputed when it was taken at another temperature."""
    if point.beta != beta:
        point = evaluate(target, point.values, beta, point.finite)
    momentum = {k: torch.randn_like(v) for k, v in point.values.items()}
    start_energy = -point.densities.tempered(beta) + 0.5 * target.squared_norm(momentum)
    eps = {k: target.spread(step_size, k, v) for k, v in point.values.items()}
    values, moved = point.values, point
    p = {k: momentum[k] + 0.5 * eps[k] * point.gradient[k] for k in values}
    for step in range(leapfrog_steps):
        values = {k: values[k] + eps[k] * p[k] for k in values}
        moved = evaluate(target, values, beta, point.finite)
        half = 0.5 if step == leapfrog_steps - 1 else 1.0
        p = {k: p[k] + half * eps[k] * moved.gradient[k] for k in values}
    end_energy = -moved.densities.tempered(beta) + 0.5 * target.squared_norm(p)
    log_accept = (start_energy - end_energy).nan_to_num(nan=-torch.inf)
    accept_prob = log_accept.clamp(max=0.0).exp()
    accepted = torch.rand_like(accept_prob) < accept_prob
    return _choose(target, accepted, moved, point), accept_prob


def _choose(target: TemperedTarget, accepted: torch.Tensor, moved: Point, kept: Point
            ) -> Point:
    """Per particle, the moved point where ``accepted``, else the kept one."""
    def pick(new: torch.Tensor, old: torch.Tensor, name: str | None) -> torch.Tensor:
        mask = accepted if name is None else target.spread(accepted, name, new)
        return torch.where(mask, new, old)

    values = {k: pick(moved.values[k], kept.values[k], k) for k in kept.values}
    gradient = {k: pick(moved.gradient[k], kept.gradient[k], k) for k in kept.values}
    d, e = moved.densities, kept.densities
    densities = Densities(pick(d.prior, e.prior, None), pick(d.likelihood, e.likelihood, None),
                          d.outside, None if d.start is None or e.start is None
                          else pick(d.start, e.start, None))
    return Point(values, densities, gradient, kept.beta, kept.finite)

"""The annealing itself, as a pure step on a state (BlackJAX's ``init``/``step``): the driver
(``genppl.engines.ais``) loops over the temperatures.

Neal (2001): particles start as exact prior draws z_0 ~ p(z) (b_0 = 0; or draws of a guide
q(z | x), ``genppl.ais.target``); at temperature t the log weight gains
(b_t - b_{t-1}) log p(x | z_{t-1}) (from a guide: (b_t - b_{t-1}) log [p(z, x) / q(z | x)]
at z_{t-1}), the ratio f_t(z) / f_{t-1}(z) at the current particle, and the particle then
moves by a transition that leaves f_t invariant.
The last temperature (b_T = 1) needs no move. E[w] = p(x) for every schedule and transition,
so log mean w is a stochastic lower bound on log p(x) (Jensen), whose gap shrinks as the
temperatures get closer. Adapting a particle's step size from its own past (Wu et al. 2017)
makes the transitions depend on the path so far; they still leave each f_t invariant given
that path, which is what the weights need.

Run backwards (b from 1 to 0, the same step), from exact posterior draws, the weights are
those of reverse AIS, whose expectation is 1 / p(x): -log mean w is then a stochastic upper
bound on log p(x) (bidirectional Monte Carlo, Grosse et al. 2015). On data simulated from
the model, the latents that simulated it are such a draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from genppl.ais.gibbs import gibbs_sweep
from genppl.ais.hmc import Adaptation, Point, evaluate, transition
from genppl.ais.target import TemperedTarget


@dataclass(frozen=True)
class AnnealState:
    """The particles, their log weights, each one's step size and running acceptance rate,
    and the number of transitions made (for the mean acceptance reported)."""

    point: Point
    log_weight: torch.Tensor
    step_size: torch.Tensor
    rate: torch.Tensor
    accepted: torch.Tensor  # sum of acceptance probabilities so far, per particle
    moves: int = 0


def start(target: TemperedTarget, step_size: float, adaptation: Adaptation, *,
          given: Mapping[str, torch.Tensor] | None = None, beta: float = 0.0) -> AnnealState:
    """Particles drawn from the start, the prior or the guide (or set to ``given`` values: see
    ``TemperedTarget.draw``) at temperature ``beta``, with weight 1 and the initial step
    size."""
    values, finite = target.draw(given)
    point = evaluate(target, values, beta, finite)
    zeros = torch.zeros_like(point.densities.prior)
    return AnnealState(point, zeros, zeros + step_size, zeros + adaptation.target, zeros)


def anneal_step(target: TemperedTarget, state: AnnealState, previous: float, beta: float, *,
                leapfrog_steps: int, adaptation: Adaptation | None, move: bool
                ) -> AnnealState:
    """Temperature ``previous`` -> ``beta``: the weights' increment, then (with ``move``) one
    HMC transition at ``beta``, adapting the step sizes unless ``adaptation`` is None, and a
    Gibbs sweep over the finite latents the state carries."""
    log_weight = state.log_weight + (beta - previous) * state.point.densities.log_ratio
    if not move:
        return replace(state, log_weight=log_weight)
    point, accept = state.point, torch.ones_like(state.rate)
    if point.values:  # (a model whose latents are all finite and carried has no HMC move)
        point, accept = transition(target, point, beta, state.step_size, leapfrog_steps)
    if target.finite:  # then a Gibbs sweep over the finite latents, which also leaves f_b
        point = evaluate(target, point.values, beta, gibbs_sweep(target, point, beta))
    step_size, rate = state.step_size, state.rate
    if adaptation is not None:
        step_size, rate = adaptation.update(step_size, rate, accept)
    return AnnealState(point, log_weight, step_size, rate, state.accepted + accept,
                       state.moves + 1)

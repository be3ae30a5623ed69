"""Annealed importance sampling (Neal 2001) on a model's continuous latents: the tempered
path from the prior to the posterior (``target``), its temperature schedules
(``schedules``), batched Hamiltonian transitions with a step size adapted per particle
(``hmc``), the annealing step that carries the log weights (``anneal``) and what the weights
say about the estimate (``weights``); and log Z of an undirected model of finite variables,
annealed from independent units by Gibbs sweeps on its grounding (``partition``).
``genppl.engines.ais`` drives it."""

from genppl.ais.anneal import AnnealState, anneal_step, start
from genppl.ais.hmc import Adaptation
from genppl.ais.schedules import SCHEDULES, Schedule, temperatures
from genppl.ais.target import Items, TemperedTarget
from genppl.ais.weights import WeightSummary, summarise

__all__ = ["SCHEDULES", "Adaptation", "AnnealState", "Items", "Schedule",
           "TemperedTarget",
           "WeightSummary", "anneal_step", "start", "summarise", "temperatures"]

"""Inference engines, registered by name (see ``registry``)."""

from genppl.engines import cavi, cd, em, enum, exact, gibbs, hmc_gibbs, mcmc, prior, svi
from genppl.engines.registry import ENGINES, Engine, get_engine, register

__all__ = ["ENGINES", "Engine", "cavi", "cd", "em", "enum", "exact", "get_engine", "gibbs",
           "hmc_gibbs", "mcmc", "prior", "register", "svi"]

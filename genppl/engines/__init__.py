"""Inference engines, each declaring its ``Engine`` contract (see ``contract``)."""

from genppl.engines import ais, cavi, cd, em, enum, exact, gibbs, hmc_gibbs, mcmc, prior, svi
from genppl.engines.contract import (
    ENGINES,
    PREFERENCE,
    Engine,
    Feature,
    Returns,
    default_engine_for,
    get_engine,
    model_features,
    register,
    samplers,
)

__all__ = ["ENGINES", "PREFERENCE", "Engine", "Feature", "Returns", "ais", "cavi", "cd",
           "default_engine_for", "em", "enum", "exact", "get_engine", "gibbs", "hmc_gibbs",
           "mcmc", "model_features", "prior", "register", "samplers", "svi"]

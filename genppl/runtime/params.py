"""Params for engines that fit nothing: each run gets a param store of its own, set to the
values the caller gives (e.g. ``FitResult.params``) and to their initial values otherwise."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyro

from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest
from genppl.pyro.program import as_data
from genppl.runtime.options import option


@dataclass(frozen=True, kw_only=True)
class FixedParams:
    """The option of an engine that fits nothing: where the model's params stand (the engine
    contract runs the engine within ``param_values(model, params)``)."""

    params: Mapping[str, Any] | None = option(
        None, "values of the model's params by name (e.g. a FitResult's params); the others "
        "at their initial values, in a param store of the run's own")


@contextmanager
def param_values(model: Model, params: Mapping[str, Any] | None) -> Iterator[None]:
    """Run with the model's params at ``params`` (e.g. ``FitResult.params``) and the rest at
    their initial values, in a param store of its own: engines that fit nothing must not pick
    up whatever an earlier run, of this model or another with the same names, left behind."""
    unknown = [k for k in (params or {}) if k not in model.names("param")]
    if unknown:
        raise ModelError(f"params= names {unknown[0]!r}, which is not a param of "
                         f"{model.name!r}." + suggest(unknown[0], model.names("param")))
    with pyro.get_param_store().scope():
        pyro.clear_param_store()
        for name, value in (params or {}).items():
            pyro.param(name, as_data(model, name, value).detach().clone(),
                       constraint=model[name].constraint)
        yield

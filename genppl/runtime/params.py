"""Params for engines that fit nothing: each run gets a param store of its own, set to the
values the caller gives (e.g. ``FitResult.params``) and to their initial values otherwise."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import pyro

from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest
from genppl.pyro.program import as_data

T = TypeVar("T")


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


def with_params(engine: Callable[..., T]) -> Callable[..., T]:
    """Give an engine that fits nothing a ``params=`` option (see ``param_values``)."""

    @functools.wraps(engine)
    def run(model: Model, data: Mapping[str, Any] | None = None, *,
            params: Mapping[str, Any] | None = None, **options: Any) -> T:
        with param_values(model, params):
            return engine(model, data, **options)

    sig = inspect.signature(engine)
    extra = inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, default=None)
    run.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[*sig.parameters.values(), extra])
    return run

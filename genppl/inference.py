"""``genppl.infer`` and ``genppl.fit``: one entry point for every engine."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from genppl.budget import memory_limit
from genppl.dsl.declaration import Declaration
from genppl.dsl.model import Model
from genppl.dsl.ragged import flatten
from genppl.engines import get_engine
from genppl.errors import ModelError, suggest
from genppl.results import FitResult, Posterior
from genppl.tabulation.prepared import prepare


def default_engine(model: Model, data: dict[str, Any] | None) -> str:
    """Exact inference (``exact``) for fully finite models, NUTS when continuous latents
    exist, SVI when there are no latents (only params to fit)."""
    if not model.latent_names:
        return "svi"
    if prepare(model, data).continuous:
        return "nuts"
    return "exact"


def infer(model: Model, data: dict[str, Any] | None = None, engine: str | None = None,
          *, budget_bytes: int | None = None, **options: Any) -> Posterior:
    """Posterior of ``model`` given ``data`` (observed nodes and inputs, by name).

    ``budget_bytes`` caps the largest table any engine allocates (default: the budget in
    force, ``genppl.memory_limit``); work that needs more is refused before it allocates."""
    run, data = _lowered(model, data, options)
    name = engine or default_engine(run, data)
    chosen = get_engine(name)
    if chosen.infer is None:
        raise ModelError(f"engine {name!r} fits params but gives no posterior; use "
                         f"genppl.fit(model, data, engine={name!r}).")
    with memory_limit(budget_bytes):
        posterior = chosen.infer(run, data, **_checked(name, chosen.infer, options))
    posterior.cardinalities = {n: card for n, card in model.graph.nodes(data="cardinality")
                               if card is not None}
    return posterior


def fit(model: Model, data: dict[str, Any] | None = None, engine: str = "svi",
        *, budget_bytes: int | None = None, **options: Any) -> FitResult:
    """Fit the params (and guide) of ``model`` to ``data``; ``budget_bytes`` as for
    ``infer``."""
    run, data = _lowered(model, data, options)
    chosen = get_engine(engine)
    if chosen.fit is None:
        raise ModelError(f"engine {engine!r} samples a posterior and fits nothing; use "
                         f"genppl.infer(model, data, engine={engine!r}).")
    with memory_limit(budget_bytes):
        return chosen.fit(run, data, **_checked(engine, chosen.fit, options))


def _lowered(model: Model, data: dict[str, Any] | None, options: dict[str, Any]
             ) -> tuple[Model, dict[str, Any] | None]:
    """The model and data the engines run: ragged plates lowered to a flat plate and an
    index (``genppl.dsl.ragged``), so every engine sees the hand-flattened model -- unless a
    DSL guide is given, which is declared against the model as written."""
    if any(isinstance(v, Declaration) for v in options.values()):
        return model, data
    return flatten(model, data)


def _checked(engine: str, fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """Reject options the engine does not take, naming the ones it does."""
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return options
    valid = [n for n in params if n not in ("model", "data")]
    for key in options:
        if key not in valid:
            raise ModelError(f"engine {engine!r} has no option {key!r}." + suggest(key, valid))
    return options

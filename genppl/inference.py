"""``genppl.infer`` and ``genppl.fit``: one entry point for every engine.

Both read only the engines' contracts (``genppl.engines.contract``): the options a call
gives are built into the engine's options dataclass (an unknown name or a value of the
wrong type is refused, naming the engine), the model is checked against what the engine
runs (from its static graph: the check costs nothing), and the default engine is the first
of ``PREFERENCE`` that runs the model. Ragged plates are lowered first
(``genppl.dsl.ragged``), so every engine sees the hand-flattened model."""

from __future__ import annotations

from typing import Any

from genppl.budget import memory_limit
from genppl.dsl.declaration import Declaration
from genppl.dsl.model import Model
from genppl.dsl.ragged import flatten
from genppl.engines import default_engine_for, get_engine, model_features
from genppl.errors import ModelError
from genppl.results import FitResult, Posterior


def default_engine(model: Model, data: dict[str, Any] | None) -> str:
    """The engine ``infer`` runs when none is named: exact inference where the model's
    latents allow it, else NUTS where there are continuous latents, else SVI (see
    ``genppl.engines.contract.PREFERENCE``)."""
    return default_engine_for(model_features(model, data))


def infer(model: Model, data: dict[str, Any] | None = None, engine: str | None = None,
          *, budget_bytes: int | None = None, **options: Any) -> Posterior:
    """Posterior of ``model`` given ``data`` (observed nodes and inputs, by name).

    ``budget_bytes`` caps the largest table any engine allocates (default: the budget in
    force, ``genppl.memory_limit``); work that needs more is refused before it allocates."""
    run, data = _lowered(model, data, options)
    chosen = get_engine(engine or default_engine(run, data))
    if chosen.infer is None:
        raise ModelError(f"engine {chosen.name!r} fits params but gives no posterior; use "
                         f"genppl.fit(model, data, engine={chosen.name!r}).")
    built = chosen.build(options)
    chosen.check(run, data)
    with memory_limit(budget_bytes):
        posterior = chosen.call(chosen.infer, run, data, built)
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
    built = chosen.build(options)
    chosen.check(run, data)
    with memory_limit(budget_bytes):
        return chosen.call(chosen.fit, run, data, built)


def _lowered(model: Model, data: dict[str, Any] | None, options: dict[str, Any]
             ) -> tuple[Model, dict[str, Any] | None]:
    """The model and data the engines run: ragged plates lowered to a flat plate and an
    index (``genppl.dsl.ragged``), so every engine sees the hand-flattened model -- unless a
    DSL guide is given, which is declared against the model as written."""
    if any(isinstance(v, Declaration) for v in options.values()):
        return model, data
    return flatten(model, data)

"""Engines by name: each engine module registers its ``infer`` and/or ``fit`` driver here.

Registration keeps ``genppl.infer``/``genppl.fit`` ignorant of any particular engine, and the
command line lists exactly what is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genppl.errors import ModelError, suggest


@dataclass(frozen=True)
class Engine:
    """An inference engine: ``infer(model, data, **options) -> Posterior`` and/or
    ``fit(model, data, **options) -> FitResult``."""

    name: str
    description: str
    infer: Callable[..., Any] | None = None
    fit: Callable[..., Any] | None = None


ENGINES: dict[str, Engine] = {}


def register(name: str, description: str, *, infer: Callable[..., Any] | None = None,
             fit: Callable[..., Any] | None = None) -> Engine:
    if name in ENGINES:
        raise ValueError(f"engine {name!r} is registered twice")
    engine = ENGINES[name] = Engine(name, description, infer, fit)
    return engine


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ModelError(f"unknown engine {name!r}." + suggest(name, ENGINES))
    return ENGINES[name]

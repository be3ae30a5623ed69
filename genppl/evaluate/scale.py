"""Scales and their row makers: the registry ``genppl leaderboard`` runs.

A scale (``text``, ``images``) is a module attribute holding a ``Scale``: its unit, the
row makers for full or ``--quick`` settings, and its sanity check. ``SCALES`` names where each
one lives, so a new scale is one line here and its module, and running one scale never
imports another's (the images scale loads neural networks).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genppl.evaluate.rows import Row

__all__ = ["PLANNED", "SCALES", "NotOnTheBoard", "RowMaker", "Scale", "get_scale"]


@dataclass(frozen=True)
class RowMaker:
    """One evaluation: ``make(settings)`` computes the rows ``rows`` together, as a dict by
    row id (an entry's rows share one trained model: its ELBO, IWAE and AIS rows). ``id``
    names the evaluation (and its cache file); ``sources`` are the modules whose source files
    it reads: with genppl's version and ``settings`` they key its cache."""

    id: str
    settings: dict[str, Any]
    make: Callable[[dict[str, Any]], dict[str, Row]]
    sources: tuple[str, ...]
    rows: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.rows or len(set(self.rows)) != len(self.rows):
            raise ValueError(f"RowMaker {self.id!r}: rows={self.rows!r} must name at least one "
                             "row, each once.")

    @classmethod
    def one(cls, row_id: str, settings: dict[str, Any], make: Callable[[dict[str, Any]], Row],
            sources: tuple[str, ...]) -> RowMaker:
        """The evaluation of one row, ``row_id``, by ``make(settings) -> Row``."""
        return cls(row_id, settings, lambda s: {row_id: make(s)}, sources, (row_id,))

    def run(self) -> dict[str, Row]:
        """``make(settings)``, checked to return exactly the rows it names."""
        made = self.make(self.settings)
        if not isinstance(made, dict) or set(made) != set(self.rows) or not all(
                isinstance(r, Row) for r in made.values()):
            got = sorted(made) if isinstance(made, dict) else type(made).__name__
            raise ValueError(f"leaderboard: evaluation {self.id!r} returned {got}, not a Row "
                             f"for each of its rows {list(self.rows)}.")
        return {row_id: made[row_id] for row_id in self.rows}


@dataclass(frozen=True)
class Scale:
    """A likelihood scale: ``makers(quick)`` lists its rows, ``sanity(rows by id)`` says in
    lines whether they rank as expected."""

    name: str
    title: str
    unit: str
    makers: Callable[[bool], list[RowMaker]]
    sanity: Callable[[dict[str, Row]], list[str]]


#: Each scale's ``Scale``, as ``module:attribute``.
SCALES: dict[str, str] = {"text": "genppl.evaluate.text_board:SCALE",
                          "images": "genppl.evaluate.image_board:SCALE"}
#: Scales the command knows of that have no rows yet, and where they are being built.
PLANNED: dict[str, str] = {}


class NotOnTheBoard(ValueError):
    """A scale that is planned or unknown, or a row the scale does not have: the command
    answers with a usage error (exit code 2)."""


def get_scale(name: str) -> Scale:
    if name in PLANNED and name not in SCALES:
        raise NotOnTheBoard(f"leaderboard {name}: not yet; {PLANNED[name]}. Available: "
                            f"{', '.join(sorted(SCALES))}.")
    if name not in SCALES:
        raise NotOnTheBoard(f"leaderboard: unknown scale {name!r}; pass one of "
                            f"{', '.join(sorted(SCALES))}.")
    module, attribute = SCALES[name].split(":")
    return getattr(importlib.import_module(module), attribute)

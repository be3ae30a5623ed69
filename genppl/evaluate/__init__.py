"""Scoring models on the lineage's likelihood scales (docs/evaluation.md).

``genppl.evaluate.text(model)`` scores a character model on the held-out BBC text in bits per
character and returns a ``Row``; ``genppl leaderboard text`` runs every text row. The scales
are registered in ``genppl.evaluate.scale``; a row is ``genppl.evaluate.rows.Row``.
"""

from genppl.evaluate.rows import Row
from genppl.evaluate.text import CharacterModel, text

__all__ = ["CharacterModel", "Row", "text"]

"""Scoring models on the lineage's likelihood scales (docs/evaluation.md).

``genppl.evaluate.text(model)`` scores a character model on the held-out BBC text in bits per
character and returns a ``Row``; ``genppl leaderboard text`` runs every text row.
``genppl.evaluate.images(model, estimator=...)`` scores a model of binary images on the 1,000
binarised test digits in nats per image (exact, ELBO, IWAE-k or AIS), and
``genppl.evaluate.bdmc(model)`` sandwiches its log-likelihood on digits it simulates;
``genppl.evaluate.entry_rows(name)`` computes a gallery entry's rows on that scale. The scales
are registered in ``genppl.evaluate.scale``; a row is ``genppl.evaluate.rows.Row``.

The protocol's module is ``text_protocol``, not ``text``: a submodule named like the function
this package exports would be shadowed by it (``import genppl.evaluate.text as m`` would give
the function), so a scale's scoring function and its module never share a name.
"""

from genppl.evaluate.image_board import entry_rows
from genppl.evaluate.image_protocol import AISSettings, Sandwich, bdmc, images
from genppl.evaluate.rows import Row
from genppl.evaluate.text_protocol import CharacterModel, text

__all__ = ["AISSettings", "CharacterModel", "Row", "Sandwich", "bdmc", "entry_rows", "images",
           "text"]

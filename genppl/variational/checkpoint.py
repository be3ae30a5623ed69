"""The checkpoint of an SVI run: one file, ``svi.pt``, holding everything the next step
depends on -- the param store's values, the optimisers' and schedules' states, the step
count, the losses so far, the random number generators, the loader's position and the early
stopping state -- so that a run killed at any point and started again continues exactly as
the uninterrupted run would (tested in float64). It is the run checkpoint every engine uses
(``genppl.engines.checkpoint``): written atomically beside the previous save, checksummed,
loaded with ``weights_only=True``, and refused when it records another run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genppl.engines.checkpoint import RunCheckpoint

#: The layout of SVI checkpoint records; a file of another layout is refused like another run's.
FORMAT = 1


class SVICheckpoint(RunCheckpoint):
    """The checkpoint of the run described by ``run`` (plain numbers, strings and lists) in
    ``directory``."""

    def __init__(self, directory: str | Path, run: dict[str, Any]) -> None:
        super().__init__(directory, "svi", {**run, "format": FORMAT})

"""The checkpoint of an SVI run: one file, ``svi.pt``, holding everything the next step
depends on -- the param store's values, the optimisers' and schedules' states, the step
count, the losses so far, the random number generators, the loader's position and the early
stopping state -- so that a run killed at any point and started again continues exactly as
the uninterrupted run would (tested in float64). It is written and read by the same mechanism
as the MCMC chains' checkpoints (``genppl.engines.checkpoint``): atomically, loaded with
``weights_only=True``, and refused when it records another run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genppl.engines.checkpoint import atomic_save, cpu_tree, safe_load

#: The layout of SVI checkpoint files; a file of another layout is refused like another run's.
FORMAT = 1


class SVICheckpoint:
    """The checkpoint of the run described by ``run`` (plain numbers, strings and lists) in
    ``directory``."""

    def __init__(self, directory: str | Path, run: dict[str, Any]) -> None:
        self.path = Path(directory) / "svi.pt"
        self.run = {**run, "format": FORMAT}

    def load(self) -> dict[str, Any] | None:
        """The saved record, or None when the run has not been checkpointed yet."""
        return safe_load(self.path, self.run, what="the run")

    def save(self, record: dict[str, Any]) -> None:
        """Write ``record`` with the random number generators' states, atomically."""
        full = {"run": self.run, **cpu_tree(record), "rng": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            full["cuda_rng"] = torch.cuda.get_rng_state_all()
        atomic_save(self.path, full)

    @staticmethod
    def restore_generators(record: dict[str, Any]) -> None:
        torch.set_rng_state(record["rng"])
        if "cuda_rng" in record:
            torch.cuda.set_rng_state_all(record["cuda_rng"])

"""Checkpoints of a sampler's chain: stop a long run at any point and resume it later
without losing a draw.

A checkpoint is one file per chain holding the draws kept so far, the sampler's state, how
many steps are done, and the random number generators' states, so that a resumed chain
continues exactly as an uninterrupted one would (tested). Files are written atomically (a
temporary file, flushed to disk, then renamed over the old one: a crash leaves the previous
checkpoint intact) and read with ``torch.load(weights_only=True)``, which unpickles no code.
Each records what run it belongs to; resuming a different run is refused, not mixed in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genppl.errors import ModelError


@dataclass(frozen=True)
class Saved:
    """What a chain resumes from."""

    state: dict[str, torch.Tensor]
    draws: list[dict[str, torch.Tensor]]  # blocks of kept draws, in order
    done: int  # steps taken, warm-up included


class ChainCheckpoint:
    """The checkpoint file of chain ``index`` of the run described by ``run`` (plain
    numbers and strings: engine, model, sizes, seed) in ``directory``."""

    def __init__(self, directory: str | Path, index: int, run: dict[str, Any]) -> None:
        self.path = Path(directory) / f"chain-{index}.pt"
        self.run = run

    def load(self) -> Saved | None:
        """The saved progress, with the random number generators restored; None when
        there is no checkpoint yet."""
        if not self.path.exists():
            return None
        try:  # a truncated, foreign or code-carrying file: the same answer for each
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(f"checkpoint {self.path} cannot be read ({e}); delete it to start "
                             "the chain afresh.") from e
        if saved.get("run") != self.run:
            raise ModelError(f"checkpoint {self.path} belongs to another run "
                             f"({saved.get('run')}), not to this one ({self.run}); use "
                             "another directory or delete it.")
        torch.set_rng_state(saved["rng"])
        if "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        return Saved(saved["state"], saved["draws"], saved["done"])

    def save(self, progress: Saved, device: torch.device) -> None:
        """Write ``progress`` and the generators' states atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"run": self.run, "state": _cpu(progress.state),
                  "draws": [_cpu(d) for d in progress.draws], "done": progress.done,
                  "rng": torch.get_rng_state()}
        if device.type == "cuda":
            record["cuda_rng"] = torch.cuda.get_rng_state(device)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in tensors.items()}

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genppl.errors import ModelError

#: The layout of checkpoint files; a file of another layout is refused like another run's.
FORMAT = 2


def check_checkpoint(engine: str, directory: str | Path | None, seed: int | None,
                     every: int) -> None:
    """A checkpointed run must be reproducible to be resumed: it needs its seed."""
    if directory is not None and seed is None:
        raise ModelError(f"{engine}: checkpoint= needs seed=, so that a resumed run "
                         "continues the same chains.")
    if every < 1:
        raise ModelError(f"{engine}: checkpoint_every must be >= 1, got {every}.")


@dataclass(frozen=True)
class Saved:
    """What a chain resumes from."""

    state: dict[str, Any]  # a tree of tensors, numbers and containers (kernel_state)
    draws: list[dict[str, torch.Tensor]]  # blocks of kept draws, in order
    done: int  # steps taken, warm-up included
    generators: dict[str, torch.Tensor] = field(default_factory=dict)  # RNG states then

    def restore_generators(self) -> None:
        """Put the random number generators back as they were at the save, so that the
        resumed chain draws what the uninterrupted one would have."""
        torch.set_rng_state(self.generators["cpu"])
        if "cuda" in self.generators:
            torch.cuda.set_rng_state(self.generators["cuda"])


class ChainCheckpoint:
    """The checkpoint file of chain ``index`` of the run described by ``run`` (plain
    numbers and strings: engine, model, sizes, seed) in ``directory``."""

    def __init__(self, directory: str | Path, index: int, run: dict[str, Any]) -> None:
        self.path = Path(directory) / f"chain-{index}.pt"
        self.run = {**run, "format": FORMAT}

    def load(self) -> Saved | None:
        """The saved progress (``restore_generators`` resumes its random streams); None
        when there is no checkpoint yet."""
        saved = safe_load(self.path, self.run, what="the chain")
        if saved is None:
            return None
        generators = {"cpu": saved["rng"]}
        if "cuda_rng" in saved:
            generators["cuda"] = saved["cuda_rng"]
        return Saved(saved["state"], saved["draws"], saved["done"], generators)

    def save(self, progress: Saved, device: torch.device) -> None:
        """Write ``progress`` and the generators' states atomically."""
        record = {"run": self.run, "state": cpu_tree(progress.state),
                  "draws": [cpu_tree(d) for d in progress.draws], "done": progress.done,
                  "rng": torch.get_rng_state()}
        if device.type == "cuda":
            record["cuda_rng"] = torch.cuda.get_rng_state(device)
        atomic_save(self.path, record)


def atomic_save(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` (tensors, numbers, strings and containers of them) to ``path`` so
    that a crash at any moment leaves either the old file or the new one, never half of
    one: a temporary file beside it, flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as f:
        torch.save(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def safe_load(path: Path, run: dict[str, Any], *, what: str = "the run") -> dict[str, Any] | None:
    """The record at ``path`` (None when there is none), read with ``weights_only=True`` so
    that no code is unpickled, and only if it was written by ``run`` (its ``"run"`` entry):
    a checkpoint of another run, or of another file layout, is refused rather than mixed in."""
    if not path.exists():
        return None
    try:  # a truncated, foreign or code-carrying file: the same answer for each
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"checkpoint {path} cannot be read ({e}); delete it to start "
                         f"{what} afresh.") from e
    if not isinstance(saved, dict) or saved.get("run") != run:
        other = saved.get("run") if isinstance(saved, dict) else None
        raise ModelError(f"checkpoint {path} belongs to another run ({other}), not to this "
                         f"one ({run}); use another directory or delete it.")
    return saved


def cpu_tree(tree: Any) -> Any:
    """A tree of tensors and containers with every tensor on the CPU (loadable anywhere)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: cpu_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cpu_tree(v) for v in tree)
    return tree

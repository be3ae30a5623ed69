"""Checkpoints: stop a long run at any point -- a sampler's chain, an SVI or an EM run --
and resume it later without losing a step.

A checkpoint holds everything the next step depends on (a chain's draws kept so far, the
sampler's state, the steps done; an SVI or EM run's current values and trajectories) and the
random number generators' states, so that a resumed run continues exactly as an
uninterrupted one would (tested, in-process and by SIGKILL of ``genppl run``). Each records
what run it belongs to; resuming a different run is refused, not mixed in. One mechanism for
every engine: ``atomic_save`` and ``safe_load`` below.

On disk, ``NAME.pt`` is the latest save and ``NAME.pt.prev`` the one before it. A save
writes ``NAME.pt.tmp``, flushes it to disk, renames the current file to ``.prev``, renames
the new one in and flushes the directory, so that at every moment a complete checkpoint is
on disk: a run killed while writing leaves a partial ``.tmp`` (ignored, and overwritten by
the next save) and the earlier files intact. The file holds the serialised record (a tensor
of bytes, stored raw) with its SHA-256 digest, so a file cut short, or whose bytes changed
even where it still unpickles (torch does not check its zip records' CRCs), is detected;
files are read with ``torch.load(weights_only=True)``, which unpickles no code.

When the latest file is damaged (or missing beside a ``.prev``: a kill between a save's two
renames), the run resumes from ``.prev`` with a ``CheckpointWarning``, and the damaged file
is kept as ``NAME.pt.damaged``. That is what someone restarting a killed run wants: the
previous save is checked like the latest (digest and run), resuming is exact, so falling
back costs only the steps since that save, never a wrong result, and nobody has to rename
files by hand. With no good ``.prev`` the run stops with a ``ModelError`` naming the file.
Another run's checkpoint is never fallen back from: that is a wrong directory, not damage.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genppl.errors import ModelError

#: The layout of chain checkpoints' records; a file of another layout is refused like another
#: run's.
FORMAT = 2
#: The layout of every checkpoint file (a serialised record and its SHA-256 digest).
LAYOUT = 1
#: Beside ``NAME.pt``: the save being written, the save before the latest, a damaged latest.
TEMPORARY, PREVIOUS, DAMAGED = ".tmp", ".prev", ".damaged"


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


class RunCheckpoint:
    """The one checkpoint file ``NAME.pt`` of a whole run (SVI, EM) described by ``run``
    (plain numbers, strings and lists): the engine's own record plus the random number
    generators' states, so that the resumed run draws what the uninterrupted one would."""

    def __init__(self, directory: str | Path, name: str, run: dict[str, Any]) -> None:
        self.path = Path(directory) / f"{name}.pt"
        self.run = run

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


class CheckpointWarning(UserWarning):
    """A run resumed from its previous checkpoint because the latest one was damaged."""


class _Damaged(Exception):
    """A checkpoint file that is cut short or whose bytes changed (the reason, one line)."""


def atomic_save(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` (tensors, numbers, strings and containers of them) to ``path`` so
    that a crash at any moment leaves a complete checkpoint on disk: the new file is written
    beside it (``.tmp``) and flushed to disk, the current one becomes ``.prev``, the new one
    is renamed in, and the directory entry is flushed too (POSIX), so the renames survive a
    power cut. The file holds the serialised record and its SHA-256 digest."""
    buffer = io.BytesIO()
    torch.save(record, buffer)
    payload = buffer.getvalue()
    envelope = {"layout": LAYOUT, "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _beside(path, TEMPORARY)
    with open(temporary, "wb") as f:
        torch.save(envelope, f)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, _beside(path, PREVIOUS))
    os.replace(temporary, path)
    _sync_directory(path.parent)


def safe_load(path: Path, run: dict[str, Any], *, what: str = "the run") -> dict[str, Any] | None:
    """The record at ``path`` (None when there is none), read with ``weights_only=True`` so
    that no code is unpickled, its digest checked, and only if it was written by ``run`` (its
    ``"run"`` entry): a checkpoint of another run, or of another file layout, is refused
    rather than mixed in. A damaged or missing latest file falls back to ``.prev`` with a
    ``CheckpointWarning`` (see the module's docstring); with no good ``.prev``, a
    ``ModelError`` names the file."""
    previous = _beside(path, PREVIOUS)
    if not path.exists() and not previous.exists():
        return None
    if path.exists():
        try:
            return _read(path, run)
        except _Damaged as e:
            reason = str(e)
    else:  # killed between a save's two renames
        reason = "is missing"
    if not previous.exists():
        raise ModelError(f"checkpoint {path} {reason}, and there is no earlier checkpoint "
                         f"{previous.name} beside it; delete {path} to start {what} afresh.")
    try:
        record = _read(previous, run)
    except _Damaged as e:
        raise ModelError(f"checkpoint {path} {reason}, and the earlier {previous} {e}; "
                         f"delete both to start {what} afresh.") from None
    kept = ""
    if path.exists():  # kept for inspection, out of the way of the next save's rotation
        damaged = _beside(path, DAMAGED)
        os.replace(path, damaged)
        kept = f" (the damaged file is kept as {damaged.name})"
    os.replace(previous, path)
    _sync_directory(path.parent)
    warnings.warn(f"checkpoint {path} {reason}; resuming {what} from the previous save "
                  f"instead, which loses only the steps since then{kept}.",
                  CheckpointWarning, stacklevel=3)
    return record


def _read(path: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The verified record at ``path``: ``_Damaged`` when it cannot be read or its digest
    does not match, ``ModelError`` when it is not this run's (or not a genppl checkpoint)."""
    try:  # a truncated, garbled or code-carrying file: the same answer for each (torch's
        # own message would suggest weights_only=False, which would run the code)
        envelope = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise _Damaged("cannot be read (cut short or damaged)") from None
    if not (isinstance(envelope, dict) and envelope.get("layout") == LAYOUT
            and isinstance(envelope.get("payload"), torch.Tensor)
            and envelope["payload"].dtype == torch.uint8
            and isinstance(envelope.get("sha256"), str)):
        raise ModelError(f"checkpoint {path} is not a checkpoint of this genppl version (no "
                         "checksummed record); use another directory or delete it.")
    payload = envelope["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != envelope["sha256"]:
        raise _Damaged("is damaged (its contents do not match their SHA-256 checksum)")
    try:  # intact, yet unreadable: written by a newer torch, say
        saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception:
        raise ModelError(f"checkpoint {path} is intact but this torch cannot read its record; "
                         "resume with the genppl and torch that wrote it, or delete it."
                         ) from None
    if not isinstance(saved, dict) or saved.get("run") != run:
        other = saved.get("run") if isinstance(saved, dict) else None
        raise ModelError(f"checkpoint {path} belongs to another run ({other}), not to this "
                         f"one ({run}); use another directory or delete it.")
    return saved


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _sync_directory(directory: Path) -> None:
    """Flush a directory's entries (the renames just made) to disk, so that they survive a
    power cut as the file's contents do (POSIX; Windows cannot open a directory to flush)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def digest(values: dict[str, Any]) -> str:
    """A short fingerprint of named values (tensors, arrays, numbers, nested lists) for a
    run's description: an option given as tensors, such as starting values, can then be
    told apart without storing it in every checkpoint."""
    h = hashlib.sha256()
    for name in sorted(values):
        value = torch.as_tensor(values[name]).detach().cpu().contiguous()
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)}:".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cpu_tree(tree: Any) -> Any:
    """A tree of tensors and containers with every tensor on the CPU (loadable anywhere)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: cpu_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cpu_tree(v) for v in tree)
    return tree

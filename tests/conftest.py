"""Shared test settings.

The models under test are small: torch's intra-op threads only add synchronisation (and, on a
busy 2-core CI machine, much waiting), so tests run single-threaded.
"""

from collections.abc import Callable

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def stop_after_saves(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[int]]:
    """``stop_after_saves(n)`` makes chain checkpoints raise KeyboardInterrupt right after
    the ``n``-th save (a run killed part-way) and returns the list of steps saved so far;
    ``monkeypatch.undo()`` lets the next run finish."""
    from genppl.runtime import checkpoint as ckpt

    original = ckpt.ChainCheckpoint.save

    def stop_after(after: int) -> list[int]:
        saves: list[int] = []

        def save_then_stop(self: ckpt.ChainCheckpoint, progress: ckpt.Saved,
                           device: torch.device) -> None:
            original(self, progress, device)
            saves.append(progress.done)
            if len(saves) == after:
                raise KeyboardInterrupt
        monkeypatch.setattr(ckpt.ChainCheckpoint, "save", save_then_stop)
        return saves

    return stop_after

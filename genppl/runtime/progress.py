"""Seeds, progress bars and the finiteness check every long-running engine loop shares."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

import pyro
from tqdm.auto import tqdm

from genppl.errors import ModelError

T = TypeVar("T")


def seed_everything(seed: int | None) -> None:
    if seed is not None:
        pyro.set_rng_seed(seed)


def progress_bar(items: Iterable[T], *, total: int, desc: str, enabled: bool) -> Iterable[T]:
    """A tqdm bar on long runs; silent when disabled or when stderr is not a terminal."""
    show = enabled and sys.stderr.isatty()
    return tqdm(items, total=total, desc=desc, disable=not show, leave=False)


def check_finite(value: float, what: str, step: int | None = None) -> None:
    """Stop a run as soon as its objective stops being a number, saying where."""
    if value != value or value in (float("inf"), float("-inf")):
        at = f" at step {step}" if step is not None else ""
        raise ModelError(f"{what} became {value}{at}. Usual causes: a scale or concentration "
                         "reaching 0 (constrain it positive), data outside a distribution's "
                         "support, or a learning rate that is too large.")

"""The gallery contract: every entry in ``models_gallery/`` is a ``GalleryEntry``.

An entry declares its model once (``build``), ships or loads its data offline (``data``),
names the engines it runs under, and has one ``run`` function used by the command line,
the demo, the gallery smoke tests and the benchmarks alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest


@dataclass(frozen=True)
class RunConfig:
    """How to run an entry. ``steps`` scales the work (SVI steps, MCMC draws) and ``None``
    means the entry's own default; ``out`` is where pictures go (none when ``None``)."""

    engine: str | None = None
    steps: int | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float64
    out: Path | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class RunReport:
    """What a run says: a printable table, JSON-ready numbers, and files written."""

    entry: str
    engine: str
    table: str
    metrics: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.entry, "engine": self.engine, "metrics": self.metrics,
                "files": self.files, "seconds": self.seconds}


@dataclass(frozen=True)
class GalleryEntry:
    name: str
    title: str
    build: Callable[[], Model]
    data: Callable[[], dict[str, Any]]
    engines: tuple[str, ...]
    run: Callable[[RunConfig], RunReport]

    @property
    def default_engine(self) -> str:
        return self.engines[0]

    def check_engine(self, engine: str | None) -> str:
        chosen = engine or self.default_engine
        if chosen not in self.engines:
            raise ModelError(f"gallery entry {self.name!r} does not run under engine "
                             f"{chosen!r}." + suggest(chosen, self.engines))
        return chosen


def entries() -> dict[str, GalleryEntry]:
    """Every registered entry, in ``models_gallery.ENTRIES`` order."""
    import models_gallery

    out = {}
    for module_name in models_gallery.ENTRIES:
        module = importlib.import_module(f"models_gallery.{module_name}")
        entry = getattr(module, "ENTRY", None)
        if not isinstance(entry, GalleryEntry):
            raise ModelError(f"models_gallery/{module_name}.py defines no "
                             "ENTRY = GalleryEntry(...)")
        out[entry.name] = entry
    return out


def get_entry(name: str) -> GalleryEntry:
    table = entries()
    if name not in table:
        raise ModelError(f"unknown gallery entry {name!r}." + suggest(name, table))
    return table[name]


def output_file(config: RunConfig, name: str) -> Path | None:
    """Path for a picture under ``config.out`` (created), or None when not writing files."""
    if config.out is None:
        return None
    config.out.mkdir(parents=True, exist_ok=True)
    return config.out / name


def render_graph(model: Model, config: RunConfig, filename: str) -> Path | None:
    """Draw ``model``'s graph to ``config.out / filename``; return the file written, or None
    when ``config.out`` is None.

    A missing Graphviz ``dot`` program must not fail a gallery run (the picture is a by-product
    of the run, not its result), so the DOT source written in its place is returned instead.
    """
    from genppl.graph.render import GraphvizNotFound

    path = output_file(config, filename)
    if path is None:
        return None
    try:
        return model.render(path)
    except GraphvizNotFound as e:
        return e.dot_path

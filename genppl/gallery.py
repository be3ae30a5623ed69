"""The gallery contract: every entry in ``models_gallery/`` is a ``GalleryEntry``.

An entry declares its model once (``build``), ships or loads its data offline (``data``),
names the engines it runs under, and has one ``run`` function used by the command line,
the demo, the gallery smoke tests and the benchmarks alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.engines import get_engine, samplers
from genppl.errors import ModelError, UnknownName, suggest
from genppl.runtime.options import Role


@dataclass(frozen=True)
class RunConfig:
    """How to run an entry. ``steps`` scales the work (SVI steps, MCMC draws) and ``None``
    means the entry's own default; ``out`` is where pictures go (none when ``None``);
    ``checkpoint`` is a directory where a long run saves its progress and from which the same
    run, started again, resumes; ``max_memory`` (bytes) caps the largest table an engine may
    allocate (``None``: the engines' default budget)."""

    engine: str | None = None
    steps: int | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float64
    out: Path | None = None
    seed: int = 0
    progress: bool = True
    checkpoint: Path | None = None
    max_memory: int | None = None


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
    #: The engines under which ``run`` saves checkpoints in ``RunConfig.checkpoint`` and
    #: resumes from them; a checkpoint asked of any other is refused, never ignored.
    checkpoints: tuple[str, ...] = ()

    @property
    def default_engine(self) -> str:
        return self.engines[0]

    def check(self, config: RunConfig) -> str:
        """The engine ``config`` asks for (``check_engine``), once its options are known to
        apply: a checkpoint directory only where this entry keeps checkpoints."""
        engine = self.check_engine(config.engine)
        if config.checkpoint is not None and engine not in self.checkpoints:
            where = (f"it does under {', '.join(self.checkpoints)}" if self.checkpoints
                     else "it keeps none")
            raise ModelError(f"gallery entry {self.name!r} keeps no checkpoints under engine "
                             f"{engine!r} ({where}); run it without a checkpoint directory.")
        return engine

    def check_engine(self, engine: str | None) -> str:
        chosen = engine or self.default_engine
        if chosen not in self.engines:
            raise ModelError(f"gallery entry {self.name!r} does not run under engine "
                             f"{chosen!r}." + suggest(chosen, self.engines))
        return chosen


class UnknownEntry(UnknownName):
    """A name that no registered gallery entry has."""


@dataclass
class Gallery:
    """The registered entries that loaded, and why the others did not.

    Entries load one module at a time, so one broken or unfinished entry neither hides the
    others nor stops an unrelated one from running.
    """

    entries: dict[str, GalleryEntry]
    broken: dict[str, str]  # module name -> one-line reason

    def get(self, name: str) -> GalleryEntry:
        if name in self.entries:
            return self.entries[name]
        if name in self.broken:
            raise ModelError(f"gallery entry {name!r} is registered but could not be loaded: "
                             f"{self.broken[name]}")
        broken = f" (not loadable: {', '.join(sorted(self.broken))})" if self.broken else ""
        raise UnknownEntry(f"unknown gallery entry {name!r}." + suggest(name, self.entries)
                           + broken)


def load_entry(module_name: str) -> GalleryEntry:
    """Import ``models_gallery.<module_name>`` and return its ``ENTRY``; any failure is a
    ``ModelError`` naming the file."""
    where = f"models_gallery/{module_name}.py"
    try:
        module = importlib.import_module(f"models_gallery.{module_name}")
    except ModuleNotFoundError as e:
        if e.name == f"models_gallery.{module_name}":
            raise ModelError(f"{where} does not exist (listed in models_gallery.ENTRIES)"
                             ) from None
        raise ModelError(f"{where} failed to import: {type(e).__name__}: {e}") from None
    except Exception as e:  # any import-time failure makes the entry broken, not the caller
        raise ModelError(f"{where} failed to import: {type(e).__name__}: {e}") from None
    entry = getattr(module, "ENTRY", None)
    if not isinstance(entry, GalleryEntry):
        raise ModelError(f"{where} defines no ENTRY = GalleryEntry(...)")
    return entry


def load_gallery(only: str | None = None) -> Gallery:
    """Load the registered entries, in ``models_gallery.ENTRIES`` order; with ``only``, load
    just the module of that name when it defines that entry (so running one model does not
    import every other)."""
    import models_gallery

    modules = list(models_gallery.ENTRIES)
    if only is not None and only in modules:
        try:
            entry = load_entry(only)
        except ModelError as e:
            return Gallery({}, {only: str(e)})
        if entry.name == only:
            return Gallery({only: entry}, {})
    entries: dict[str, GalleryEntry] = {}
    broken: dict[str, str] = {}
    for module_name in modules:
        try:
            entry = load_entry(module_name)
        except ModelError as e:
            broken[module_name] = str(e)
            continue
        entries[entry.name] = entry
    return Gallery(entries, broken)


def get_entry(name: str) -> GalleryEntry:
    """The entry called ``name`` (``UnknownEntry`` lists the valid names)."""
    return load_gallery(name).get(name)


@contextmanager
def figure(config: RunConfig, filename: str, written: list[str], *, tight: bool = True,
           **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``(fig, axes)`` of ``plt.subplots(**subplots)``, saved under ``config.out`` (and the
    path appended to ``written``) when the block ends. Matplotlib loads on first use, with
    the file-only Agg backend, so that no entry depends on a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = output_file(config, filename)
    if path is None:
        raise ModelError(f"figure {filename!r}: RunConfig.out is not set; pass out= to write "
                         "pictures.")
    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        if tight:
            fig.tight_layout()
        fig.savefig(path, dpi=120)
        written.append(str(path))
    finally:
        plt.close(fig)


def engine_options(engine: str, config: RunConfig, draws: int = 2000) -> dict[str, Any]:
    """What a sampling engine needs from a run: ``draws`` draws (``config.steps`` when it
    counts draws), the run's seed and progress bar; nothing for exact engines. Which of its
    options count draws, seed the run and draw the bar is the engine's contract's to say."""
    if engine not in SAMPLERS:
        return {}
    chosen = get_engine(engine)
    given = {Role.DRAWS: draws, Role.SEED: config.seed, Role.PROGRESS: config.progress}
    return {name: value for role, value in given.items()
            if (name := chosen.option_with(role)) is not None}


#: Engines that answer with draws rather than exact marginals (and fit nothing).
SAMPLERS = samplers()


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

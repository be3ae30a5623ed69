"""The gallery contract: every entry of a gallery package is a ``GalleryEntry``.

An entry declares its model once (``build``), ships or loads its data offline (``data``),
names the engines it runs under, and writes its experiment against a ``Report``. The
gallery's runner (``GalleryEntry.run``), used by the command line, the demo, the gallery
smoke tests and the benchmarks alike, does what every entry would otherwise repeat: it
checks the engine, times the run, draws the model's graph and hands the entry a ``Report``
that records each number once, for the printed table and the JSON metrics together.

Gallery packages are found by the ``genppl.gallery`` entry-point group (``models_gallery``
registers itself there), so the library never imports the application that uses it.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch

from genppl.dsl.model import Model
from genppl.engines import get_engine, samplers
from genppl.errors import ModelError, UnknownName, suggest
from genppl.runtime.options import Role

#: The entry-point group under which gallery packages register (``name = "package"``).
GALLERY_GROUP = "genppl.gallery"

#: A metric's place in ``RunReport.metrics``: a name, or a path of names into nested dicts.
MetricKey = str | tuple[str, ...]
V = TypeVar("V")


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


@dataclass
class Report:
    """What an entry's experiment writes, one call per thing it has to say.

    A number shown in the table is recorded by the same call that shows it (``number``,
    ``row``), so the printed table and the JSON metrics cannot disagree; ``metric`` records
    what the table does not show (curves, tables of numbers), ``line`` prints what is not a
    number. ``build`` and ``place`` put models on the run's device and precision, ``figure``
    and ``graph`` write pictures under ``config.out`` and list them.
    """

    entry: GalleryEntry
    config: RunConfig
    engine: str
    rows: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    #: The width ``number`` pads its labels to, so that a block of numbers lines up.
    label_width: int = 0

    @property
    def dtype(self) -> torch.dtype:
        """The run's precision: the entry's own where it fixes one, else the config's."""
        return self.config.dtype if self.entry.dtype is None else self.entry.dtype

    def build(self, *args: Any, **kwargs: Any) -> Model:
        """The entry's model, ``entry.build(*args, **kwargs)``, on the run's device and dtype."""
        return self.place(self.entry.build(*args, **kwargs))

    def place(self, model: Model) -> Model:
        """``model`` moved to the run's device and dtype."""
        return model.to(self.config.device, self.dtype)

    def line(self, text: str) -> None:
        """A row of the table that records no number (a heading, a picture in characters)."""
        self.rows.append(text)

    def number(self, label: str, value: V, fmt: str = "", *, key: MetricKey, unit: str = "",
               shown: str | None = None) -> V:
        """``value`` as the row ``label value unit`` (the label padded to ``label_width``,
        the value formatted by ``fmt`` or written as ``shown``) and as the metric ``key``;
        returns ``value``."""
        text = format(value, fmt) if shown is None else shown
        self.rows.append(f"{label:<{self.label_width}} {text}{unit}")
        return self.metric(key, value)

    def row(self, template: str, **numbers: Any) -> None:
        """One row holding several numbers: ``template`` names each by its metric key
        (``"log p {log_likelihood:.3f} vs {reference:.3f}"``), and every keyword is both
        formatted into the row and recorded as that metric."""
        self.rows.append(template.format(**numbers))
        for key, value in numbers.items():
            self.metric(key, value)

    def metric(self, key: MetricKey, value: V) -> V:
        """Record ``value`` under ``key`` (a path into nested dicts) without printing it."""
        *parents, last = (key,) if isinstance(key, str) else key
        where = self.metrics
        for name in parents:
            where = where.setdefault(name, {})
        if last in where:
            raise ModelError(f"gallery entry {self.entry.name!r} records the metric {key!r} "
                             "twice; each number is recorded once.")
        where[last] = value
        return value

    @contextmanager
    def figure(self, filename: str, *, tight: bool = True, **subplots: Any
               ) -> Iterator[tuple[Any, Any]]:
        """``(fig, axes)`` of ``plt.subplots(**subplots)``, saved under ``config.out`` as
        ``filename`` (and listed in ``files``) when the block ends. Matplotlib loads on first
        use, with the file-only Agg backend, so that no entry depends on a display."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = self._output(filename)
        if path is None:
            raise ModelError(f"figure {filename!r}: RunConfig.out is not set; pass out= to "
                             "write pictures.")
        fig, axes = plt.subplots(**subplots)
        try:
            yield fig, axes
            if tight:
                fig.tight_layout()
            fig.savefig(path, dpi=120)
            self.files.append(str(path))
        finally:
            plt.close(fig)

    def samples(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Write ``samples.npz`` under ``config.out`` (nothing when it is not set), the one
        convention every image entry follows so that any tool scores its samples:
        ``images`` (N x H x W, values in [0, 1], float32) and, for a label-conditional model,
        ``labels`` (N, the class each image was generated for)."""
        import numpy as np

        if images.dim() != 3 or not bool(((images >= 0) & (images <= 1)).all()):
            raise ModelError(f"samples: images must be N x H x W with values in [0, 1]; got "
                             f"shape {tuple(images.shape)}, range [{float(images.min())}, "
                             f"{float(images.max())}].")
        if labels is not None and labels.shape != images.shape[:1]:
            raise ModelError(f"samples: labels must be one per image, shape "
                             f"({images.shape[0]},); got {tuple(labels.shape)}.")
        path = self._output("samples.npz")
        if path is None:
            return
        arrays = {"images": images.detach().float().cpu().numpy()}
        if labels is not None:
            arrays["labels"] = labels.detach().long().cpu().numpy()
        np.savez(path, **arrays)
        self.files.append(str(path))

    def graph(self, model: Model, filename: str) -> None:
        """Draw ``model``'s graph under ``config.out`` (nothing when it is not set).

        A missing Graphviz ``dot`` program must not fail a gallery run (the picture is a
        by-product of the run, not its result), so the DOT source written in its place is
        listed instead."""
        from genppl.graph.render import GraphvizNotFound

        path = self._output(filename)
        if path is None:
            return
        try:
            written = model.render(path)
        except GraphvizNotFound as e:
            written = e.dot_path
        self.files.append(str(written))

    def _output(self, name: str) -> Path | None:
        """Path for a picture under ``config.out`` (created), or None when not writing files."""
        if self.config.out is None:
            return None
        self.config.out.mkdir(parents=True, exist_ok=True)
        return self.config.out / name

    def finish(self, seconds: float) -> RunReport:
        return RunReport(self.entry.name, self.engine, "\n".join(self.rows),
                         metrics=self.metrics, files=self.files, seconds=seconds)


@dataclass(frozen=True)
class GalleryEntry:
    """One model of a gallery: declared once, run under each of its engines by ``run``."""

    name: str
    title: str
    #: The model; called with no arguments it gives the one drawn and rendered, an entry
    #: may take options of its own (``Report.build`` passes them through).
    build: Callable[..., Model]
    data: Callable[[], dict[str, Any]]
    engines: tuple[str, ...]
    #: The entry's own work: it fits, compares and draws what is particular to it, writing
    #: every number and picture through the ``Report`` it is given.
    experiment: Callable[[Report], None]
    #: The engines under which ``run`` saves checkpoints in ``RunConfig.checkpoint`` and
    #: resumes from them; a checkpoint asked of any other is refused, never ignored.
    checkpoints: tuple[str, ...] = ()
    #: The stem after ``name_`` of the picture of ``build()``'s graph that every run with
    #: ``RunConfig.out`` draws first (``None``: the entry draws no graph).
    graph: str | None = "graph"
    #: A precision the entry always runs in, whatever ``RunConfig.dtype`` says (neural
    #: entries train in float32); ``None``: the config's.
    dtype: torch.dtype | None = None

    @property
    def default_engine(self) -> str:
        return self.engines[0]

    def run(self, config: RunConfig) -> RunReport:
        """Run the experiment under ``config``: the engine checked before any work, the
        graph drawn, the whole run timed."""
        start = time.perf_counter()
        report = Report(self, config, self.check(config))
        if self.graph is not None:
            report.graph(self.build(), f"{self.name}_{self.graph}.svg")
        self.experiment(report)
        return report.finish(time.perf_counter() - start)

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


def gallery_packages() -> tuple[list[ModuleType], dict[str, str]]:
    """The packages registered under ``GALLERY_GROUP``, and why any of them did not import
    (by entry-point name)."""
    packages: list[ModuleType] = []
    broken: dict[str, str] = {}
    for point in entry_points(group=GALLERY_GROUP):
        try:
            package = point.load()
        except Exception as e:  # a broken package is reported, never fatal to the others
            broken[point.name] = (f"gallery package {point.value!r} failed to import: "
                                  f"{type(e).__name__}: {e}")
            continue
        if not isinstance(getattr(package, "ENTRIES", None), list):
            broken[point.name] = (f"gallery package {point.value!r} lists no ENTRIES "
                                  "(the names of its entry modules)")
            continue
        packages.append(package)
    return packages, broken


def load_entry(package: ModuleType, module_name: str) -> GalleryEntry:
    """Import ``<package>.<module_name>`` and return its ``ENTRY``; any failure is a
    ``ModelError`` naming the file."""
    where = f"{package.__name__}/{module_name}.py"
    qualified = f"{package.__name__}.{module_name}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as e:
        if e.name == qualified:
            raise ModelError(f"{where} does not exist (listed in {package.__name__}.ENTRIES)"
                             ) from None
        raise ModelError(f"{where} failed to import: {type(e).__name__}: {e}") from None
    except Exception as e:  # any import-time failure makes the entry broken, not the caller
        raise ModelError(f"{where} failed to import: {type(e).__name__}: {e}") from None
    entry = getattr(module, "ENTRY", None)
    if not isinstance(entry, GalleryEntry):
        raise ModelError(f"{where} defines no ENTRY = GalleryEntry(...)")
    return entry


def load_gallery(only: str | None = None) -> Gallery:
    """Load the entries of every registered gallery package, in each package's ``ENTRIES``
    order; with ``only``, load just the module of that name when it defines that entry (so
    running one model does not import every other)."""
    packages, broken = gallery_packages()
    if only is not None:
        for package in packages:
            if only in package.ENTRIES:
                try:
                    entry = load_entry(package, only)
                except ModelError as e:
                    return Gallery({}, {only: str(e)})
                if entry.name == only:
                    return Gallery({only: entry}, {})
    entries: dict[str, GalleryEntry] = {}
    for package in packages:
        for module_name in package.ENTRIES:
            try:
                entry = load_entry(package, module_name)
            except ModelError as e:
                broken[module_name] = str(e)
                continue
            entries[entry.name] = entry
    return Gallery(entries, broken)


def get_entry(name: str) -> GalleryEntry:
    """The entry called ``name`` (``UnknownEntry`` lists the valid names)."""
    return load_gallery(name).get(name)


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

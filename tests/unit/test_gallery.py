"""The gallery's runner and report: each number recorded once for the table and the metrics,
the engine checked before an entry's code runs, the run timed and its graph drawn by the
runner, models placed on the run's device and dtype, and gallery packages found through the
``genppl.gallery`` entry-point group."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl import gallery
from genppl.errors import ModelError
from genppl.gallery import GalleryEntry, Report, RunConfig, load_gallery

pytestmark = pytest.mark.unit


def coin() -> genppl.Model:
    m = genppl.Model("coin")
    m.latent("heads", lambda: dist.Bernoulli(torch.tensor(0.3)))
    return m


def entry(experiment: object, **options: object) -> GalleryEntry:
    return GalleryEntry(name="coin", title="a coin", build=coin, data=dict,
                        engines=("exact", "gibbs"), experiment=experiment,  # type: ignore[arg-type]
                        **options)  # type: ignore[arg-type]


def test_one_call_writes_the_row_and_the_metric() -> None:
    def experiment(report: Report) -> None:
        report.line("heading")
        report.label_width = 12
        assert report.number("  log p", -1.23456, ".3f", key="log_p", unit=" nats") == -1.23456
        report.number("  P(x = a)", 0.25, ".2f", key=("posterior", "x", "a"))
        report.number("  P(x = b)", 0.75, ".2f", key=("posterior", "x", "b"))
        report.number("  a _||_ b", True, key=("separated", "a _||_ b"), shown="yes")
        report.row("fit {fit:.1f} vs reference {reference:.1f}", fit=2.04, reference=1.96)
        report.metric("curve", [1, 2, 3])

    result = entry(experiment).run(RunConfig(progress=False))
    assert result.table.splitlines() == ["heading", "  log p      -1.235 nats",
                                         "  P(x = a)   0.25", "  P(x = b)   0.75",
                                         "  a _||_ b   yes", "fit 2.0 vs reference 2.0"]
    assert result.metrics == {"log_p": -1.23456, "posterior": {"x": {"a": 0.25, "b": 0.75}},
                              "separated": {"a _||_ b": True}, "fit": 2.04,
                              "reference": 1.96, "curve": [1, 2, 3]}


def test_a_number_recorded_twice_is_refused() -> None:
    def experiment(report: Report) -> None:
        report.metric("x", 1.0)
        report.number("x again", 1.0, key="x")

    with pytest.raises(ModelError, match="records the metric 'x' twice"):
        entry(experiment).run(RunConfig(progress=False))


def test_the_engine_and_checkpoint_are_checked_before_the_experiment_runs(tmp_path: Path
                                                                         ) -> None:
    ran: list[str] = []

    def experiment(report: Report) -> None:
        ran.append(report.engine)

    with pytest.raises(ModelError, match="does not run under engine 'nuts'"):
        entry(experiment).run(RunConfig(engine="nuts", progress=False))
    with pytest.raises(ModelError, match="keeps no checkpoints under engine 'exact'"):
        entry(experiment, checkpoints=("gibbs",)).run(
            RunConfig(checkpoint=tmp_path, progress=False))
    assert ran == []
    result = entry(experiment).run(RunConfig(progress=False))
    assert ran == ["exact"] and result.engine == "exact" and result.entry == "coin"


def test_the_runner_times_the_run_and_draws_the_graph_first(tmp_path: Path) -> None:
    def experiment(report: Report) -> None:
        with report.figure("coin_picture.png") as (_, ax):
            ax.plot([0, 1], [0, 1])

    result = entry(experiment).run(RunConfig(out=tmp_path, progress=False))
    assert [Path(f).stem for f in result.files] == ["coin_graph", "coin_picture"]
    assert all(Path(f).parent == tmp_path and Path(f).stat().st_size > 0 for f in result.files)
    assert result.seconds > 0
    assert set(result.to_dict()) == {"entry", "engine", "metrics", "files", "seconds"}
    named = entry(experiment, graph="chain_graph").run(RunConfig(out=tmp_path, progress=False))
    assert Path(named.files[0]).stem == "coin_chain_graph"
    none = entry(experiment, graph=None).run(RunConfig(out=tmp_path, progress=False))
    assert [Path(f).stem for f in none.files] == ["coin_picture"]


def test_without_graphviz_the_run_lists_the_graphs_dot_source(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("PATH", "")
    result = entry(lambda report: None).run(RunConfig(out=tmp_path, progress=False))
    assert result.files == [str(tmp_path / "coin_graph.dot")]
    assert (tmp_path / "coin_graph.dot").read_text().startswith("digraph coin {")


@pytest.mark.parametrize(("fixed", "asked", "placed"), [
    (None, torch.float32, torch.float32), (torch.float32, torch.float64, torch.float32)])
def test_built_models_take_the_runs_dtype_unless_the_entry_fixes_one(
        fixed: torch.dtype | None, asked: torch.dtype, placed: torch.dtype) -> None:
    dtypes: list[torch.dtype] = []

    def experiment(report: Report) -> None:
        dtypes.extend([report.dtype, report.build().dtype, report.place(coin()).dtype])

    entry(experiment, dtype=fixed).run(RunConfig(dtype=asked, progress=False))
    assert dtypes == [placed] * 3


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[list[EntryPoint]]:
    """Two gallery packages on a temporary path, registered in place of the installed ones."""
    for name, body in {"gallery_one": "ENTRIES = ['first', 'absent']",
                       "gallery_two": "ENTRIES = ['second']",
                       "gallery_bad": "raise RuntimeError('half written')"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
    for package, module in (("gallery_one", "first"), ("gallery_two", "second")):
        (tmp_path / package / f"{module}.py").write_text(textwrap.dedent(f"""
            from genppl.gallery import GalleryEntry
            ENTRY = GalleryEntry(name={module!r}, title={module!r}, build=None, data=dict,
                                 engines=("exact",), experiment=print)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [EntryPoint(name, name, gallery.GALLERY_GROUP)
              for name in ("gallery_one", "gallery_two", "gallery_bad")]
    monkeypatch.setattr(gallery, "entry_points", lambda group: [
        p for p in points if p.group == group])
    yield points
    for name in ("gallery_one", "gallery_two", "gallery_bad"):
        for module in [m for m in sys.modules if m.split(".")[0] == name]:
            del sys.modules[module]


def test_entries_come_from_every_registered_package(packages: list[EntryPoint]) -> None:
    found = load_gallery()
    assert list(found.entries) == ["first", "second"]
    assert "gallery_one/absent.py does not exist" in found.broken["absent"]
    assert "failed to import: RuntimeError: half written" in found.broken["gallery_bad"]
    assert list(load_gallery("second").entries) == ["second"]



def test_samples_file_follows_the_image_convention(tmp_path: Path) -> None:
    """``Report.samples`` writes ``samples.npz`` (images N x H x W in [0, 1], labels one per
    image), lists it, writes nothing without ``out``, and refuses what breaks the
    convention by name."""
    import numpy as np

    coin_entry = entry(print)
    images = torch.rand(4, 3, 5, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 2])
    report = Report(coin_entry, RunConfig(out=tmp_path), "exact")
    report.samples(images, labels)
    assert report.files == [str(tmp_path / "samples.npz")]
    with np.load(tmp_path / "samples.npz") as saved:
        assert saved["images"].dtype == np.float32 and saved["images"].shape == (4, 3, 5)
        np.testing.assert_allclose(saved["images"], images.float().numpy())
        np.testing.assert_array_equal(saved["labels"], labels.numpy())
    quiet = Report(coin_entry, RunConfig(), "exact")
    quiet.samples(images)
    assert quiet.files == []
    with pytest.raises(ModelError, match=r"samples: images must be N x H x W with values in "
                                         r"\[0, 1\]"):
        report.samples(images * 2)
    with pytest.raises(ModelError, match=r"samples: labels must be one per image"):
        report.samples(images, labels[:3])

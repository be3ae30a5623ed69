"""The images scale: registered (no longer "not yet"), its rows found through the gallery's
entry point, its sanity line naming the literature's ranking and checking the families
present, and ``genppl leaderboard images --quick`` printing, writing and caching the Bernoulli
mixture's exact row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genppl.cli import EXIT_OK, EXIT_USAGE, main
from genppl.errors import ModelError
from genppl.evaluate import image_board
from genppl.evaluate.rows import Row
from genppl.evaluate.scale import get_scale

pytestmark = pytest.mark.unit


def _row(value: float) -> Row:
    return Row(model="m", entry="e", estimator="exact", bound="exact", value=value,
               stderr=None, unit=image_board.UNIT, command="genppl leaderboard images")


def test_images_is_a_scale_and_unknown_scales_are_still_usage_errors(capsys) -> None:
    assert get_scale("images") is image_board.SCALE
    assert main(["leaderboard", "sound"]) == EXIT_USAGE
    assert "unknown scale 'sound'" in capsys.readouterr().err
    assert main(["leaderboard", "images", "--only", "nope"]) == EXIT_USAGE
    assert "--only nope: no such row" in capsys.readouterr().err


def test_rows_are_found_through_the_gallery_entry_point() -> None:
    makers = {m.id: m for m in image_board.makers(quick=True)}
    assert list(makers) == list(image_board.ENTRIES)
    mixture = makers["bernoulli_mixture_mnist"]
    assert mixture.settings == {"entry": "bernoulli_mixture_mnist", "quick": True}
    assert mixture.rows == ("bernoulli_mixture_mnist",)
    assert "models_gallery.bernoulli_mixture_mnist" in mixture.sources
    assert image_board.families()["bernoulli_mixture_mnist"] == "mixture"
    vae = makers["vae_mnist"]
    assert {"models_gallery.vae_mnist", "models_gallery._vae", "models_gallery.flows",
            "models_gallery.vae_digits", "genppl.evaluate.image_protocol"} <= set(vae.sources)
    assert "models_gallery.bernoulli_mixture_mnist" not in vae.sources
    from models_gallery import vae_mnist

    assert vae.rows == tuple(vae_mnist.LEADERBOARD)
    with pytest.raises(ModelError, match="no registered gallery package lists the entry"):
        image_board.entry_rows("no_such_entry")
    with pytest.raises(ModelError, match="must define LEADERBOARD"):
        image_board.entry_rows("pearson_crabs")


def test_an_entry_naming_a_family_outside_the_ranking_is_refused(monkeypatch) -> None:
    from models_gallery import bernoulli_mixture_mnist as mixture

    monkeypatch.setattr(mixture, "LEADERBOARD", {"bernoulli_mixture_mnist": "mixtures"})
    with pytest.raises(ModelError, match="families outside"):
        image_board.families()


def test_sanity_names_the_ranking_and_checks_the_families_present(monkeypatch) -> None:
    expected = ("expected (literature, binarised MNIST, nats/image): autoregressive < "
                "deep latent-variable < VAE < RBM < mixture.")
    assert image_board.sanity({}) == [expected, "present: no rows to check it."]
    one = image_board.sanity({"bernoulli_mixture_mnist": _row(150.0)})
    assert one[0] == expected
    assert one[1].startswith("present: mixture (bernoulli_mixture_mnist 150.00); missing: "
                             "autoregressive, deep latent-variable, VAE, RBM.")
    assert one[2] == "one family scored, no ranking to check."
    monkeypatch.setattr(image_board, "families", lambda: {
        "vae": "VAE", "rbm": "RBM", "bernoulli_mixture_mnist": "mixture"})
    holds = image_board.sanity({"vae": _row(90.0), "rbm": _row(100.0),
                                "bernoulli_mixture_mnist": _row(150.0)})
    assert holds[-1] == "ranking holds among the present families."
    broken = image_board.sanity({"vae": _row(120.0), "rbm": _row(100.0),
                                 "bernoulli_mixture_mnist": _row(150.0)})
    assert broken[-1] == "ranking does NOT hold: VAE (120.00) is not below RBM (100.00)."


def _bounded(value: float, bound: str, model: str = "m") -> Row:
    return Row(model=model, entry="e", estimator="x", bound=bound, value=value, stderr=0.1,
               unit=image_board.UNIT, command="genppl leaderboard images")


def test_sanity_reads_each_familys_reach_from_its_bounds(monkeypatch) -> None:
    """A VAE's rows bound its cost from above (lower bounds on the log-likelihood); an
    RBM's forward AIS bounds it from below and RAISE from above: where the reaches overlap
    the pair is undetermined, where they are apart it holds or is violated."""
    monkeypatch.setattr(image_board, "families", lambda: {
        "vae-ais": "VAE", "iaf-ais": "VAE", "rbm-ais": "RBM", "rbm-raise": "RBM",
        "mix": "mixture"})
    rows = {"vae-ais": _bounded(105.65, "lower", "vae"), "iaf-ais": _bounded(104.73, "lower",
                                                                            "iaf"),
            "rbm-ais": _bounded(102.05, "upper", "rbm"),
            "rbm-raise": _bounded(110.22, "lower", "rbm"), "mix": _row(154.77)}
    lines = image_board.sanity(rows)
    assert lines[1] == ("present: VAE (at most 104.73: iaf-ais), RBM (102.05 to 110.22: "
                        "rbm-ais, rbm-raise), mixture (mix 154.77); missing: autoregressive, "
                        "deep latent-variable.")
    assert lines[2] == ("ranking undetermined: the bounds of VAE (at most 104.73) and RBM "
                        "(102.05 to 110.22) overlap (tighter bounds would order them).")
    apart = image_board.sanity({**rows, "rbm-ais": _bounded(106.0, "upper", "rbm")})
    assert apart[-1] == "ranking holds among the present families."
    # an RBM certainly worse than the mixture: its forward bound already above it
    worse = image_board.sanity({**rows, "rbm-ais": _bounded(160.0, "upper", "rbm"),
                                "rbm-raise": _bounded(170.0, "lower", "rbm")})
    assert worse[-1] == "ranking does NOT hold: RBM (160.00 to 170.00) is not below mixture " \
                        "(154.77)."
    # a second RBM model with no bound from above leaves the family unbounded below
    other = image_board.sanity({**rows, "rbm-ais": _bounded(160.0, "upper", "rbm"),
                                "rbm-raise": _bounded(150.0, "lower", "rbm2")})
    assert "RBM (at most 150.00: rbm-raise)" in other[1]


def test_quick_images_board_prints_writes_and_caches_the_mixture_row(
        tmp_path: Path, capsys, monkeypatch) -> None:
    from models_gallery import bernoulli_mixture_mnist as mixture

    monkeypatch.setattr(mixture, "QUICK", mixture.Setting(components=2, iterations=2))
    monkeypatch.setattr(image_board, "ENTRIES", ("bernoulli_mixture_mnist",))
    assert main(["leaderboard", "images", "--quick", "--out", str(tmp_path)]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    row = next(x for x in lines if " bernoulli_mixture_mnist " in x)
    assert " exact " in row
    assert "genppl leaderboard images --only bernoulli_mixture_mnist --quick" in row
    assert any(x.startswith("expected (literature") for x in lines)
    assert any(x.startswith("present: mixture (bernoulli_mixture_mnist") for x in lines)
    assert (tmp_path / "leaderboard_images.png").stat().st_size > 0
    first = json.loads((tmp_path / "leaderboard_images.json").read_text())
    assert [r["cached"] for r in first["rows"]] == [False]
    assert first["unit"] == "nats/image" and first["rows"][0]["bound"] == "exact"
    assert main(["leaderboard", "images", "--quick", "--out", str(tmp_path), "--json"]) == \
        EXIT_OK
    again = json.loads(capsys.readouterr().out)
    assert [r["cached"] for r in again["rows"]] == [True]
    assert again["rows"][0]["value"] == first["rows"][0]["value"]


def test_entry_rows_computes_an_entrys_rows_and_images_points_there(monkeypatch) -> None:
    from genppl import evaluate
    from models_gallery import bernoulli_mixture_mnist as mixture

    monkeypatch.setattr(mixture, "QUICK", mixture.Setting(components=2, iterations=2))
    rows = evaluate.entry_rows("bernoulli_mixture_mnist", quick=True)
    again = mixture.leaderboard_rows(quick=True)  # EM from the data: deterministic
    assert list(rows) == list(again) == ["bernoulli_mixture_mnist"]
    assert rows["bernoulli_mixture_mnist"].value == again["bernoulli_mixture_mnist"].value
    with pytest.raises(ModelError, match=r"genppl.evaluate.entry_rows\('vae_mnist'\)"):
        evaluate.images("vae_mnist", estimator="ais")  # type: ignore[arg-type]

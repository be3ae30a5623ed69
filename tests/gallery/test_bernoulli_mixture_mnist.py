"""bernoulli_mixture_mnist: the exact engine's held-out log-likelihood equals a naive
logsumexp over the components computed by hand from the fitted params, EM's objective never
decreases, the pseudo-counts keep every pixel probability off 0 and 1, the samples file
follows issue 15's convention and the leaderboard row is an exact row in nats per image."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from genppl.data import digits
from genppl.gallery import RunConfig
from models_gallery import bernoulli_mixture_mnist as mixture

pytestmark = pytest.mark.gallery
F64 = torch.float64


@pytest.fixture(scope="module")
def small_fit() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list[float],
                         torch.Tensor]:
    """Three components, eight iterations, on 300 training digits; 200 test digits."""
    split = digits.binarised(F64)
    train, test = split.train_images[:300], split.test_images[:200]
    model, result = mixture.fit(train, mixture.Setting(components=3, iterations=8), seed=1)
    per_image = mixture.held_out_log_likelihood(model, result.params, test)
    return train, test, result.params, [-loss for loss in result.losses], per_image


def test_held_out_log_likelihood_equals_a_naive_logsumexp(small_fit) -> None:
    _, test, params, _, per_image = small_fit
    weights, probs = params["weights"], params["probs"]
    by_component = torch.stack([
        (test * probs[:, k].log() + (1 - test) * (1 - probs[:, k]).log()).sum(-1)
        + weights[k].log() for k in range(len(weights))], -1)
    naive = torch.logsumexp(by_component, -1)
    assert per_image.dtype == F64 and per_image.shape == (200,)
    torch.testing.assert_close(per_image, naive, rtol=0, atol=1e-8)


def test_em_objective_never_decreases_and_climbs(small_fit) -> None:
    objective = small_fit[3]
    assert len(objective) == 8
    assert all(b >= a - 1e-9 * abs(a) for a, b in itertools.pairwise(objective))
    assert objective[-1] > objective[0] + 1000


def test_every_component_keeps_digits(small_fit) -> None:
    weights = small_fit[2]["weights"]
    assert float(weights.min()) > 0.1  # none emptied by the start (initial_probs)


def test_pseudo_counts_keep_every_probability_off_zero_and_one(small_fit) -> None:
    train, _, params, _, per_image = small_fit
    assert bool((train.sum(0) == 0).any())  # border pixels never on: the MLE would be 0
    assert float(params["probs"].min()) > 0 and float(params["probs"].max()) < 1
    assert bool(torch.isfinite(per_image).all())


def test_a_run_writes_samples_in_the_conventions_shape_and_range(tmp_path: Path) -> None:
    report = mixture.ENTRY.run(RunConfig(steps=1, progress=False, out=tmp_path))
    with np.load(tmp_path / "samples.npz") as saved:
        images = saved["images"]
    assert images.shape == (mixture.NUM_SAMPLES, digits.SIDE, digits.SIDE)
    assert images.min() >= 0 and images.max() <= 1
    assert str(tmp_path / "bernoulli_mixture_means.png") in report.files
    assert report.metrics["test_nats"] > 0
    assert report.metrics["test_bits_per_pixel"] == pytest.approx(
        report.metrics["test_nats"] / (digits.NUM_PIXELS * np.log(2)), rel=1e-12)


def test_the_leaderboard_row_is_exact_in_nats_per_image(monkeypatch) -> None:
    monkeypatch.setattr(mixture, "QUICK", mixture.Setting(components=2, iterations=2))
    rows = mixture.leaderboard_rows(quick=True)
    assert list(rows) == list(mixture.LEADERBOARD)
    row = rows["bernoulli_mixture_mnist"]
    assert (row.estimator, row.bound, row.stderr, row.unit) == ("exact", "exact", None,
                                                                "nats/image")
    assert row.command.startswith("genppl leaderboard images") and "--quick" in row.command
    assert row.settings["components"] == 2
    assert 50 < row.value < digits.NUM_PIXELS * np.log(2)  # better than a coin per pixel


def test_the_full_row_carries_the_sample_quality_of_its_draws(monkeypatch) -> None:
    """Full settings (shrunk here) add the draws' scores in the features of a network
    (an untrained one: the scores are checked against a direct call, not for their size)."""
    from genppl.evaluate import digits_features, sample_quality

    torch.manual_seed(0)
    network = digits_features.LeNet(16).eval()
    monkeypatch.setattr(digits_features, "load_or_train", lambda: network)
    monkeypatch.setattr(mixture, "FULL", mixture.Setting(components=2, iterations=2))
    row = mixture.leaderboard_rows(quick=False)["bernoulli_mixture_mnist"]
    assert "--quick" not in row.command
    fitted = mixture.evaluate(mixture.FULL)
    expected = sample_quality.diagnostics(
        mixture.draw_images(fitted.params, mixture.NUM_SAMPLES, seed=0), network)
    assert {k: row.diagnostics[k] for k in expected} == pytest.approx(expected, rel=1e-9)
    assert row.diagnostics["samples"] == mixture.NUM_SAMPLES
    assert row.diagnostics["iterations_run"] == 2

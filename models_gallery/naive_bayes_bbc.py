"""Multinomial naive Bayes on the BBC news articles (McCallum & Nigam 1998; Nigam, McCallum,
Thrun & Mitchell 2000), declared once and run under three engines.

Each document has a class ``c`` drawn from the class prior, and each of its words is drawn
from the class's word distribution: the words plate inside the documents plate, each
document with its own number of words (a ragged plate sized by the input ``length``), as
the textbooks draw it -- McCallum & Nigam's multinomial event model, whose likelihood
is the multinomial of the document's counts up to their multinomial coefficient, a
constant. The data are the tokens, document after document. The prior and the words are
global latents with Dirichlet priors: flat on the class prior (its MAP is the class
frequencies) and Dirichlet(1 + alpha) on each class's words, whose MAP is additive smoothing
with alpha pseudo-counts per word -- with alpha = 1, scikit-learn's ``MultinomialNB(alpha=1)``.
So the smoothing is part of the model, and every engine that fits it finds the same estimate:

- ``em``: with every label given, one closed-form M-step; with most labels hidden (NaN), EM
  over the hidden classes from the labelled documents' fit (Nigam et al.'s semi-supervised
  EM), each E-step the exact class posterior of every unlabelled document;
- ``svi``: the same MAP by gradient steps (a delta guide; labels given as data condition on);
- ``exact``: the posterior over each test document's class given the fitted values, by
  exact enumeration over the plate of documents (each document's words multiplied into
  its table).

Words come from ``genppl.data.text`` (the tokenizer and stop words shared with the BBC LDA
entry): a vocabulary of the 2,000 most frequent words of the training articles found in at
least 2 and at most half of them. The held-out split is stratified, 20% of each class.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch

import genppl
from genppl.data import bbc, text
from genppl.gallery import GalleryEntry, Report, RunConfig

ALPHA = 1.0  # additive smoothing: the words' Dirichlet(1 + ALPHA) prior
NUM_CLASSES = 5
VOCABULARY = {"min_df": 2, "max_df": 0.5, "max_features": 2000}
TEST_FRACTION = 0.2
LABELLED_FRACTION = 0.05  # training labels kept for semi-supervised EM
SEED = 0


def build(num_words: int = VOCABULARY["max_features"],
          num_classes: int = NUM_CLASSES) -> genppl.Model:
    """The model for a vocabulary of ``num_words`` words and ``num_classes`` classes."""
    m = genppl.Model("naive_bayes_bbc")
    m.latent("prior", lambda: dist.Dirichlet(torch.ones(num_classes)))
    m.latent("words", lambda: dist.Dirichlet(torch.full((num_words,), 1.0 + ALPHA))
             .expand([num_classes]).to_event(1))
    with m.plate("documents", symbol="D"):
        m.latent("c", lambda prior: dist.Categorical(prior))
        with m.plate("tokens", sizes="length", symbol="N"):
            m.observed("w", lambda c, words: dist.Categorical(words[c]))
    return m


@dataclass(frozen=True)
class Split:
    """The articles' words over the training vocabulary (CPU), split once."""

    classes: tuple[str, ...]
    vocabulary: text.Vocabulary
    train: text.TokenCounts
    train_labels: torch.Tensor
    test: text.TokenCounts
    test_labels: torch.Tensor
    labelled: torch.Tensor  # indices into the training set whose labels semi-supervised EM keeps


@functools.cache
def load_split() -> Split:
    corpus = bbc.load()
    labels = torch.tensor(corpus.labels)
    train, test = text.split(len(labels), TEST_FRACTION, SEED, labels=labels)
    train_docs = [corpus.documents[i] for i in train.tolist()]
    test_docs = [corpus.documents[i] for i in test.tolist()]
    vocabulary = text.Vocabulary.build(train_docs, **VOCABULARY)  # type: ignore[arg-type]
    _, labelled = text.split(len(train), LABELLED_FRACTION, SEED, labels=labels[train])
    return Split(corpus.classes, vocabulary, text.token_counts(train_docs, vocabulary),
                 labels[train], text.token_counts(test_docs, vocabulary), labels[test],
                 labelled)


def documents(counts: text.TokenCounts, config: RunConfig) -> dict[str, torch.Tensor]:
    """The documents' tokens and lengths on the run's device."""
    return {"w": counts.tokens().to(config.device), "length": counts.lengths().to(config.device)}


def data() -> dict[str, torch.Tensor]:
    """The training articles' tokens, lengths and classes."""
    split = load_split()
    return {"w": split.train.tokens(), "length": split.train.lengths(), "c": split.train_labels}


def fit_em(model: genppl.Model, counts: text.TokenCounts, labels: torch.Tensor,
           config: RunConfig, *, steps: int = 2, init: dict[str, torch.Tensor] | None = None
           ) -> genppl.FitResult:
    """MAP of prior and words by EM; labels of NaN are hidden classes summed over."""
    given = documents(counts, config) | {"c": labels.to(config.device)}
    return genppl.fit(model, given, engine="em", steps=steps, init=init, seed=config.seed,
                      progress=config.progress)


def fit_svi(model: genppl.Model, counts: text.TokenCounts, labels: torch.Tensor,
            config: RunConfig) -> dict[str, torch.Tensor]:
    """MAP of prior and words by gradient steps: a delta guide on the full-batch objective
    (deterministic: no latent is sampled). Adam's steps are about ``lr`` per coordinate, and
    the unconstrained coordinates of rare words have far to go, so ``lr`` starts at 1 and
    decays a hundredfold: after 300 steps the largest gap to the closed form in
    log P(word | class) was 5e-6 (0.5 after 100 steps; 3e-3 after 300 starting at 0.3)."""
    steps = config.steps or 300
    given = documents(counts, config) | {"c": labels.to(config.device)}
    result = genppl.fit(model, given, engine="svi", guide="delta", steps=steps, lr=1.0,
                        lrd=0.01 ** (1 / steps), seed=config.seed, progress=config.progress,
                        checkpoint=config.checkpoint)
    point = result.info["guide"].median(**given)
    return {k: point[k].detach() for k in ("prior", "words")}


def classify(model: genppl.Model, params: dict[str, torch.Tensor], counts: text.TokenCounts,
             config: RunConfig) -> torch.Tensor:
    """P(class | document) for each document, by the exact engine given the fitted values."""
    posterior = genppl.infer(model, documents(counts, config) | params, engine="exact")
    return posterior.marginals["c"]


def experiment(report: Report) -> None:
    config, engine = report.config, report.engine
    split = load_split()
    model = report.build(len(split.vocabulary), len(split.classes))
    truth = split.test_labels
    report.row("BBC news: {train_size} training and {test_size} test articles, "
               f"{len(split.classes)} classes, " "{vocabulary_size} words; " f"engine {engine}",
               train_size=len(split.train_labels), test_size=len(truth),
               vocabulary_size=len(split.vocabulary))
    report.line(f"{'classifier':<58}accuracy")
    report.label_width = 57

    def score(name: str, key: str, probs: torch.Tensor) -> torch.Tensor:
        report.number(name, float((probs.argmax(-1).cpu() == truth).double().mean()), ".2%",
                      key=key)
        return probs

    params = fit_em(model, split.train, split.train_labels, config).params
    if engine == "svi":
        closed_form = params
        params = fit_svi(model, split.train, split.train_labels, config)
    fitter = "svi" if engine == "svi" else "em"
    probs = score(f"genppl: {fitter} MAP fit, exact class posterior", "accuracy",
                  classify(model, params, split.test, config))
    if engine == "svi":
        report.row("  largest |log P(word | class) - em's closed form|: "
                   "{max_log_word_gap_to_closed_form:.1e}",
                   max_log_word_gap_to_closed_form=float(
                       (params["words"].log() - closed_form["words"].log()).abs().max()))
    sk = _sklearn(split.train, split.train_labels)
    if sk is not None:
        sk_probs = torch.as_tensor(sk.predict_proba(split.test.dense().numpy()))
        score("scikit-learn MultinomialNB(alpha=1)", "sklearn_accuracy", sk_probs)
        report.row("  largest |P(class) - scikit-learn's| over test articles: "
                   "{max_probability_gap_to_sklearn:.1e}",
                   max_probability_gap_to_sklearn=float(
                       (probs.cpu().double() - sk_probs).abs().max()))
    if engine == "em":
        _semi_supervised(report, model, split, score)
    if config.out is not None:
        _confusion(report, split, probs.argmax(-1).cpu())


def _semi_supervised(report: Report, model: genppl.Model, split: Split, score: Any) -> None:
    """Nigam et al.'s experiment: keep a few labels, fit on them alone, then run EM over the
    hidden labels of every other training article from that fit."""
    config = report.config
    kept = split.labelled
    labelled = fit_em(model, split.train.select(kept), split.train_labels[kept], config)
    report.row("-- {labelled} training labels kept " f"({LABELLED_FRACTION:.0%}, stratified) --",
               labelled=len(kept))
    score("  labelled articles only (genppl em)", "labelled_only_accuracy",
          classify(model, labelled.params, split.test, config))
    hidden = torch.full_like(split.train_labels, float("nan"), dtype=torch.float64)
    hidden[kept] = split.train_labels[kept].double()
    semi = fit_em(model, split.train, hidden, config, steps=config.steps or 100,
                  init=labelled.params)
    score(f"  + EM over the {len(hidden) - len(kept)} unlabelled articles",
          "semi_supervised_accuracy", classify(model, semi.params, split.test, config))
    objective = report.metric("em_objective", [-loss for loss in semi.losses])
    report.metric("em_converged", semi.info["converged"])
    report.row("  EM: {em_iterations} iterations, log p(data) + log prior "
               f"{objective[0]:.1f} -> {objective[-1]:.1f}",
               em_iterations=semi.info["iterations"])


def _sklearn(counts: text.TokenCounts, labels: torch.Tensor) -> Any:
    """scikit-learn's ``MultinomialNB(alpha=1)`` on the same words as a count matrix, when
    it is installed (it is in the gallery extra); None otherwise."""
    try:
        from sklearn.naive_bayes import MultinomialNB
    except ImportError:
        return None
    return MultinomialNB(alpha=ALPHA).fit(counts.dense().numpy(), labels.numpy())


def _confusion(report: Report, split: Split, predicted: torch.Tensor) -> None:
    k = len(split.classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((split.test_labels, predicted), torch.ones_like(predicted),
                         accumulate=True)
    with report.figure("naive_bayes_bbc_confusion.png", figsize=(5.5, 4.5)) as (fig, ax):
        image = ax.imshow(confusion.numpy(), cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center",
                        color="white" if confusion[i, j] > confusion.max() / 2 else "black")
        ax.set_xticks(range(k), split.classes, rotation=30)
        ax.set_yticks(range(k), split.classes)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title("Naive Bayes on held-out BBC articles")
        fig.colorbar(image, ax=ax)


ENTRY = GalleryEntry(
    name="naive_bayes_bbc",
    title="Multinomial naive Bayes on BBC news (McCallum & Nigam 1998), semi-supervised EM "
          "(Nigam et al. 2000)",
    build=build,
    data=data,
    engines=("em", "exact", "svi"),
    experiment=experiment,
    checkpoints=("svi",),
)

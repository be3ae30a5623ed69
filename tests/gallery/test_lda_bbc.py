"""LDA (models_gallery/lda_bbc.py) under engines cavi and gibbs: planted topics are
recovered, the held-out bound is scikit-learn's for the same topics, the collapsed
log-likelihood is the closed form's, and the entry runs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from genppl.data import text
from genppl.gallery import RunConfig
from models_gallery import lda_bbc

pytestmark = pytest.mark.gallery

F64 = torch.float64


def _planted(num_docs: int, length: int, seed: int) -> tuple[torch.Tensor, lda_bbc.Corpus]:
    """Three topics over 15 words, each on its own 5 words; documents mostly of one topic."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.zeros(3, 15, dtype=F64)
    for k in range(3):
        topics[k, 5 * k:5 * k + 5] = torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1], dtype=F64)
    mix = torch.distributions.Dirichlet(torch.full((3,), 0.2, dtype=F64)).sample((num_docs,))
    doc = torch.arange(num_docs).repeat_interleave(length)
    z = torch.multinomial(mix[doc], 1, generator=g).squeeze(-1)
    word = torch.multinomial(topics[z], 1, generator=g).squeeze(-1)
    pairs = torch.stack([doc, word]).unique(dim=1, return_counts=True)
    counts = text.TokenCounts(pairs[0][0], pairs[0][1], pairs[1], (num_docs, 15))
    return topics, lda_bbc.Corpus(doc, word, counts)


def test_cavi_recovers_planted_topics_with_a_monotone_elbo() -> None:
    """The best of three random starts by ELBO (CAVI finds local optima; a poor start ends
    hundreds of nats lower, so restarts are how it is used)."""
    torch.manual_seed(0)
    truth, corpus = _planted(60, 50, seed=0)
    runs = [lda_bbc.fit_cavi(corpus, 15, steps=300, tol=1e-10, num_topics=3, seed=seed)
            for seed in range(3)]
    for run in runs:
        assert all(b >= a - 1e-10 * abs(a) for a, b in itertools.pairwise(run.info["elbo"]))
    result = max(runs, key=lambda r: r.info["elbo"][-1])
    found = result.info["q"]["topics"].mean
    error = min(float((found[list(p)] - truth).abs().max())
                for p in itertools.permutations(range(3)))
    assert error < 0.05


def test_held_out_bound_equals_scikit_learns_for_the_same_topics() -> None:
    """With scikit-learn's fitted topics held, genppl's held-out perplexity is the one
    scikit-learn computes (the same variational bound, each test document's mixture fitted
    to convergence by both)."""
    train, test, _ = lda_bbc.load(max_documents=120)
    lda = lda_bbc.sklearn_lda(train, max_iter=5)
    lda.mean_change_tol, lda.max_doc_update_iter = 1e-10, 5000
    expected = float(lda.perplexity(test.counts.dense().numpy()))
    topics = torch.distributions.Dirichlet(torch.as_tensor(lda.components_, dtype=F64))
    found = lda_bbc.held_out_perplexity(topics, test, steps=5000, tol=1e-13)
    assert math.isclose(found.sklearn, expected, rel_tol=1e-6)
    # Without the topics' term: the bound is larger, by exactly that KL per token.
    kl = torch.distributions.kl_divergence(
        topics, torch.distributions.Dirichlet(torch.full_like(topics.concentration,
                                                              lda_bbc.ETA))).sum()
    assert math.isclose(math.log(found.sklearn / found.documents),
                        float(kl) / test.num_tokens, rel_tol=1e-9)


def test_collapsed_gibbs_recovers_planted_topics() -> None:
    """Twenty-five sweeps from a random start (the last five kept); the topics given the
    kept draws' counts."""
    truth, corpus = _planted(60, 50, seed=0)
    post = lda_bbc.fit_gibbs(corpus, 15, sweeps=25, num_topics=3, seed=0)
    counts = lda_bbc.topic_word_counts(post.samples["z"][0], corpus, 3, 15)
    found = (lda_bbc.ETA + counts.to(F64).mean(0))
    found = found / found.sum(-1, keepdim=True)
    error = min(float((found[list(p)] - truth).abs().max())
                for p in itertools.permutations(range(3)))
    assert error < 0.05


def test_collapsed_log_likelihood_is_the_dirichlet_multinomial_closed_form() -> None:
    """log p(words | z): each topic's Dirichlet-multinomial, written out here with Beta
    functions, against the entry's vectorised one."""
    counts = torch.tensor([[[3, 0, 1], [0, 2, 2]], [[1, 1, 2], [2, 1, 1]]])
    eta = lda_bbc.ETA

    def log_beta(a: torch.Tensor) -> float:
        return float(torch.lgamma(a).sum() - torch.lgamma(a.sum()))

    expected = [sum(log_beta(eta + row.to(F64)) - log_beta(torch.full((3,), eta, dtype=F64))
                    for row in draw) for draw in counts]
    found = lda_bbc.collapsed_log_likelihood(counts).tolist()
    assert found == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("engine", ["cavi", "gibbs", "svi"])
def test_entry_runs_and_reports_beside_scikit_learn(engine: str, tmp_path) -> None:
    report = lda_bbc.ENTRY.run(RunConfig(engine=engine, steps=3, progress=False, out=tmp_path))
    m = report.metrics
    assert m["vocabulary"] > 5000 and len(report.files) == 3
    assert 1 < m["held_out_perplexity"] < m["vocabulary"] * 10
    assert m["sklearn_held_out_perplexity"] < m["sklearn_perplexity_own_definition"]
    if engine == "cavi":
        assert m["iterations"] == 3
        assert m["held_out_perplexity"] < m["held_out_perplexity_sklearn_definition"]
    elif engine == "gibbs":
        assert m["sweeps"] == 3 and m["kept"] == 1
        assert m["held_out_perplexity"] < m["held_out_perplexity_sklearn_definition"]
    else:
        assert m["svi_steps"] == 3 and m["held_out_perplexity_sklearn_definition"] is None
    assert report.table.count(":") >= 10  # ten topics' top words


def test_float32_path_runs() -> None:
    _, corpus = _planted(10, 20, seed=2)
    result = lda_bbc.fit_cavi(corpus, 15, steps=5, num_topics=3, dtype=torch.float32)
    assert result.info["q"]["topics"].concentration.dtype == torch.float32
    assert all(math.isfinite(e) for e in result.info["elbo"])


def test_model_declares_topics_read_by_words() -> None:
    model = lda_bbc.build(3, 4, 15)
    assert set(model.graph.predecessors("w")) == {"z", "topics"}
    # As Blei et al. draw it: each document's mixture in the documents plate, its words'
    # topics and words in the (ragged) words plate inside it.
    assert set(model.graph.predecessors("z")) == {"theta"}
    assert model.graph.nodes["theta"]["plates"] == ("documents",)
    assert model.graph.nodes["z"]["plates"] == ("documents", "words")
    assert model.graph.graph["plates"]["words"]["parent"] == "documents"

"""Minibatches of documents with their words: a ragged plate's enclosing plate subsampled.

A minibatch of B of the D documents holds all of its documents' words, so the words count
D / B times, like the documents (not N / n). Oracles: the log joint of the chosen documents
written out by hand, and the exact average over every minibatch, which is the full log
joint.
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import genppl
from genppl.variational.minibatch import on_indices

pytestmark = pytest.mark.unit

F64 = torch.float64
LENGTHS = torch.tensor([3, 0, 5, 1, 0, 4])  # empty documents included
DOC = torch.repeat_interleave(torch.arange(6), LENGTHS)
W = torch.tensor([0, 3, 1, 2, 2, 0, 3, 1, 1, 0, 3, 2, 2])
C = torch.tensor([1, 0, 2, 2, 1, 0])
PRIOR = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
WORDS = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.4, 0.1]],
                     dtype=F64)


def naive_bayes(batch: int | None, words_read: str = "at entries",
                labelled: bool = False) -> genppl.Model:
    """Word tables a global latent, a class per document (a latent, or observed:
    ``labelled``), the words of its class's table (read at the document, or through a
    word-level latent copy of its class: the gathered path)."""
    m = genppl.Model("nb")
    m.latent("words", lambda: dist.Dirichlet(torch.ones(4)).expand([3]).to_event(1))
    with m.plate("documents", 6, subsample_size=batch):
        if labelled:
            m.observed("c", lambda: dist.Categorical(PRIOR))
        else:
            m.latent("c", lambda: dist.Categorical(PRIOR), enumerate=False)
        with m.plate("tokens", sizes="lengths"):
            if words_read == "at entries":
                m.observed("w", lambda c, words: dist.Categorical(words[c]))
            else:  # each word's class, a copy of its document's: w reads a word-level
                # parent, so its document's class gathered per word
                m.latent("k", lambda c: dist.Categorical(torch.eye(3)[c]), enumerate=False)
                m.observed("w", lambda k, c, words: dist.Categorical(
                    words[c].where(k.unsqueeze(-1) == c.unsqueeze(-1), torch.nan)))
    return m.to(dtype=F64)


def log_joint(model: genppl.Model, chosen: torch.Tensor | None, **extra) -> float:
    program = model.pyro_model if chosen is None else on_indices(
        model.pyro_model, {"documents": chosen})
    with pyro.get_param_store().scope():
        trace = poutine.trace(program).get_trace(lengths=LENGTHS, w=W, c=C, words=WORDS,
                                                 **extra)
    return float(trace.log_prob_sum())


def by_hand(chosen: list[int]) -> float:
    """log p(words) + D / B * sum over the chosen documents of log p(c_d) + log p(w_d | c_d)."""
    table = float(dist.Dirichlet(torch.ones(4, dtype=F64)).log_prob(WORDS).sum())
    local = sum(float(PRIOR[C[d]].log() + WORDS[C[d], W[DOC.eq(d)]].log().sum()) for d in chosen)
    return table + 6 / len(chosen) * local


@pytest.mark.parametrize("words_read", ["at entries", "gathered"])
@pytest.mark.parametrize("chosen", [[4, 2], [1, 4], [5, 0, 3]])
def test_a_minibatch_scores_its_documents_words_scaled_like_the_documents(
        chosen: list[int], words_read: str) -> None:
    """The chosen documents (in the minibatch's order, an all-empty one included) with
    their words, scaled by D / B."""
    model = naive_bayes(len(chosen), words_read)
    extra = {"k": C[DOC]} if words_read == "gathered" else {}
    got = log_joint(model, torch.tensor(chosen), **extra)  # (k at its class scores log 1)
    assert got == pytest.approx(by_hand(chosen), abs=1e-10)


def test_the_average_over_every_minibatch_is_the_full_log_joint() -> None:
    full = log_joint(naive_bayes(None), None)
    for b in (1, 2, 4):
        batches = [torch.tensor(s) for s in itertools.combinations(range(6), b)]
        mean = sum(log_joint(naive_bayes(b), s) for s in batches) / len(batches)
        assert mean == pytest.approx(full, abs=1e-10)


def test_a_random_minibatch_reads_its_words_at_their_documents() -> None:
    """Without fixed indices Pyro draws the minibatch: the words' site holds exactly the
    chosen documents' words, in the minibatch's order, and the data of the documents' nodes
    the chosen entries."""
    pyro.set_rng_seed(3)
    with pyro.get_param_store().scope():
        trace = poutine.trace(naive_bayes(3).pyro_model).get_trace(
            lengths=LENGTHS, w=W, c=C, words=WORDS)
    chosen = trace.nodes["documents"]["value"]
    expected = torch.cat([W[DOC.eq(d)] for d in chosen.tolist()])
    assert torch.equal(trace.nodes["w"]["value"], expected)
    assert torch.equal(trace.nodes["c"]["value"], C[chosen])
    assert trace.nodes["w"]["scale"] == pytest.approx(2.0)


def lda(batch: int | None) -> genppl.Model:
    m = genppl.Model("lda")
    m.latent("topics", lambda: dist.Dirichlet(torch.full((4,), 0.5)).expand([2]).to_event(1))
    with m.plate("documents", 6, subsample_size=batch):
        m.latent("theta", lambda: dist.Dirichlet(torch.full((2,), 0.3)))
        with m.plate("words", sizes="lengths"):
            m.latent("z", lambda theta: dist.Categorical(theta))
            m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    return m.to(dtype=F64)


def test_engines_on_the_lowered_model_read_every_document_as_for_a_flat_plate() -> None:
    """A subsampled flat plate runs in full in the tabulating engines; the lowered ragged
    plate follows the same rule: CAVI on the minibatched declaration is CAVI on the whole."""
    data = {"lengths": LENGTHS, "w": W}
    whole = genppl.fit(lda(None), data, engine="cavi", steps=5, seed=0, local=("theta",))
    batched = genppl.fit(lda(2), data, engine="cavi", steps=5, seed=0, local=("theta",))
    assert batched.info["elbo"] == whole.info["elbo"]


def test_svi_with_batch_size_minibatches_the_documents_with_their_words() -> None:
    """``batch_size=`` names the plates holding observed data; a ragged plate goes with its
    enclosing plate's minibatch. With a point-mass guide and no learning (lr 0), each step's
    loss is one minibatch's -log joint, and over an epoch (three batches of two of the six
    documents) their mean is the full -log joint."""
    from torch.distributions import constraints

    m = naive_bayes(None, labelled=True)
    g = m.guide()
    g.param("q", WORDS, constraint=constraints.simplex)
    g.latent("words", lambda q: dist.Delta(q).to_event(2))
    data = {"lengths": LENGTHS, "w": W, "c": C}
    with pyro.get_param_store().scope():
        batched = genppl.fit(m, data, engine="svi", guide=g, steps=3, seed=0, batch_size=2,
                             lr=0.0)
    full = log_joint(naive_bayes(None, labelled=True), None)
    assert sum(batched.losses) / 3 == pytest.approx(-full, abs=1e-9)
    assert len(set(batched.losses)) == 3  # (three different minibatches)

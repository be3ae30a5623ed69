"""The BBC articles as token corpora, shared by the topic models of the ``lda_bbc`` entry
(LDA here, ProdLDA in ``_prodlda``) so that both fit the same split, vocabulary and counts:
a stratified 80/20 split by class, tokenised by ``genppl.data.text`` (lower-case words,
English stop words removed), with a vocabulary of words in at least ``MIN_DF`` training
documents and at most ``MAX_DF`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genppl.data import bbc, text

#: The number of topics both models fit (so that their perplexities compare).
NUM_TOPICS = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0
MIN_DF, MAX_DF = 5, 0.5


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
        """The tokens in the LDA model's layout: words document after document (as they are
        stored), and each document's number of tokens."""
        return {"length": torch.bincount(self.doc, minlength=self.num_documents),
                "w": self.word}


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

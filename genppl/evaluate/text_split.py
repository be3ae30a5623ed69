"""The text scale's corpus: Shannon's alphabet and the BBC split by document.

One definition for ``markov_text`` (whose held-out figures are the n-gram rows) and for the
text protocol (``genppl.evaluate.text``), so the leaderboard scores exactly the text the entry
reports on: every ``HELD_OUT_EVERY``-th document is held out, each document is normalised to
the alphabet (``genppl.data.text.normalise``) and the documents of each part are joined by
one space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from genppl.data.text import encode, normalise
from genppl.errors import ModelError

__all__ = ["ENGLISH", "HELD_OUT_EVERY", "Split", "english", "split_documents"]

#: Shannon's 27 symbols: the 26 letters and the word space.
ENGLISH = " abcdefghijklmnopqrstuvwxyz"
HELD_OUT_EVERY = 10  # document i is held out when i % 10 == 0


@dataclass(frozen=True)
class Split:
    """A language's alphabet and its training and held-out codes."""

    language: str
    alphabet: str
    train: torch.Tensor
    test: torch.Tensor


def split_documents(language: str, documents: Sequence[str], alphabet: str,
                    limit: int | None = None) -> Split:
    """Normalise each document; every ``HELD_OUT_EVERY``-th is held out; the rest, joined by
    spaces, train. ``limit`` keeps the first ``limit`` characters of each part (small runs)."""
    parts: tuple[list[str], list[str]] = ([], [])
    sizes = [0, 0]
    for i, doc in enumerate(documents):
        if limit is not None and min(sizes) > limit:
            break
        text = normalise(doc, alphabet)
        if text:
            held_out = i % HELD_OUT_EVERY == 0
            parts[held_out].append(text)
            sizes[held_out] += len(text) + 1
    train, test = (" ".join(p)[:limit] for p in parts)
    if not train or not test:
        raise ModelError(f"{language}: too few documents to split into training and held-out "
                         "text.")
    return Split(language, alphabet, encode(train, alphabet), encode(test, alphabet))


def english(limit: int | None = None) -> Split:
    """The text scale's split: the BBC articles (``genppl.data.bbc``) in ``ENGLISH``."""
    from genppl.data import bbc

    return split_documents("English (BBC news)", bbc.load().documents, ENGLISH, limit)

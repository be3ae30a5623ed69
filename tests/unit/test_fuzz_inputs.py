"""Fuzzing what users hand genppl: BIF files and ``--evidence`` pairs.

Whatever the bytes, ``read_bif`` must return a network whose tables are distributions, or
raise its own error (a ``ModelError`` of one line that names the file), never another
exception, and within a deadline. The inputs are random bytes (raw and gzipped, whole and cut
short), soups of BIF's own tokens, and mutations of the ten bnlearn networks pgmpy ships
(truncations, swapped and deleted tokens, deleted braces, numbers such as ``1e400``,
``10**400``, negative or NaN probabilities, deep nesting, duplicated blocks). Before the reader
was hardened they found ``UnicodeDecodeError``, ``gzip.BadGzipFile`` and ``EOFError`` from
damaged files, ``ValueError`` from state counts ``int()`` cannot read (``²``, 5,000 digits),
empty files read as empty networks, and duplicated blocks silently replacing the first.

``parse_evidence`` is checked against an independent statement of what it must accept, and
``genppl query`` end to end for exit codes and one-line errors. The settings are derandomized
with no example database, so every run, CI's included, tries the same inputs.
"""

from __future__ import annotations

import functools
import gzip
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from genppl import Model, ModelError
from genppl.bif import read_bif
from genppl.cli import main
from genppl.errors import UnknownName
from genppl.query import parse_evidence

pytestmark = pytest.mark.unit
NETWORKS = ["asia", "sachs", "child", "insurance", "alarm", "hailfinder", "win95pts", "hepar2",
            "andes", "pathfinder"]


def fuzz(max_examples: int, *also_suppress: HealthCheck) -> settings:
    """The one profile: reproducible (derandomized, no database), and a deadline far above
    the slowest honest read (pathfinder, 1.6 MB, about a second on a loaded CPU) but far below
    what a quadratic blow-up or a retry loop would take."""
    return settings(max_examples=max_examples, derandomize=True, database=None,
                    deadline=timedelta(seconds=8), print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           *also_suppress])


def examples() -> Path:
    """pgmpy's copies of the bnlearn networks; only the tests that start from them need it."""
    pgmpy = pytest.importorskip("pgmpy", reason="pgmpy (dev/bench extra) is not installed")
    return Path(pgmpy.__file__).parent / "utils" / "example_models"


@pytest.fixture(scope="module")
def bif_path(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A file name in a module-wide directory: hypothesis runs a test body many times, and
    refuses function-scoped fixtures, which would be shared across those runs anyway."""
    directory = tmp_path_factory.mktemp("fuzz")
    return lambda suffix: directory / f"input{suffix}"


def read_or_refuse(path: Path, data: bytes) -> None:
    """The reader's whole contract on one input."""
    path.write_bytes(data)
    try:
        model = read_bif(path)
    except ModelError as e:
        message = str(e)
        assert "\n" not in message and str(path) in message, message
        return
    assert isinstance(model, Model) and model.nodes
    for node in model.nodes.values():
        table = node.fn.table
        assert table.shape[-1] == len(node.states) and bool(torch.isfinite(table).all())
        torch.testing.assert_close(table.sum(-1), torch.ones(table.shape[:-1], dtype=table.dtype))


# --------------------------------------------------------------------------- random bytes
@fuzz(300)
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".bif", ".bif.gz"]),
       gzipped=st.booleans(), cut=st.integers(0, 40))
def test_random_bytes(bif_path: Callable[[str], Path], data: bytes, suffix: str,
                      gzipped: bool, cut: int) -> None:
    if gzipped:  # valid gzip around junk, or gzip cut short by up to 40 bytes
        data = gzip.compress(data)
        data = data[:len(data) - cut]
    read_or_refuse(bif_path(suffix), data)


VOCABULARY = ["network", "variable", "probability", "property", "type", "discrete", "table",
              "default", "{", "}", "(", ")", "[", "]", ",", ";", "|", "2", "0.5", "a", "b",
              "x", "/*", "*/", "//", "\n", "1e400", "-1", "nan", "²"]


@fuzz(300)
@given(tokens=st.lists(st.sampled_from(VOCABULARY) | st.text(max_size=4), max_size=80))
def test_token_soup(bif_path: Callable[[str], Path], tokens: list[str]) -> None:
    read_or_refuse(bif_path(".bif"), " ".join(tokens).encode())


# --------------------------------------------------------------------------- mutated networks
# Whitespace is kept as pieces of its own, so that joining the pieces gives the file back.
_PIECES = re.compile(r"\s+|[{}()\[\],;|]|[^\s{}()\[\],;|]+")
WEIRD_NUMBERS = ["1e400", "-1e400", "10**400", "1" + "0" * 400, "9" * 5000, "1e-400", "-0.5",
                 "-0", "nan", "NaN", "-nan", "inf", "Infinity", "0x10", "1_0", "²", "٣", "0.5.5",
                 "1e", ".", "+1", "0" * 50 + "2"]


@functools.cache
def pieces(network: str) -> tuple[str, ...]:
    text = gzip.decompress((examples() / f"{network}.bif.gz").read_bytes()).decode()
    return tuple(_PIECES.findall(text))


def _block_spans(tokens: list[str]) -> list[tuple[int, int]]:
    """``[start, end)`` of each top-level block, from its keyword to the piece before the
    next one."""
    starts = [i for i, t in enumerate(tokens) if t in ("network", "variable", "probability")]
    return list(zip(starts, [*starts[1:], len(tokens)], strict=False))


@st.composite
def mutated_network(draw: st.DrawFn) -> str:
    tokens = list(pieces(draw(st.sampled_from(NETWORKS))))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "swap", "delete", "brace", "number", "nest",
                                     "duplicate", "insert"]))
        spot = draw(st.integers(0, max(len(tokens) - 1, 0)))
        if kind == "truncate":
            del tokens[spot:]
        elif kind == "swap" and tokens:
            other = draw(st.integers(0, len(tokens) - 1))
            tokens[spot], tokens[other] = tokens[other], tokens[spot]
        elif kind == "delete" and tokens:
            del tokens[spot]
        elif kind == "brace":
            braces = [i for i, t in enumerate(tokens) if t in "{}"]
            if braces:
                del tokens[draw(st.sampled_from(braces))]
        elif kind == "number":
            numbers = [i for i, t in enumerate(tokens) if t[:1].isdigit()]
            if numbers:
                tokens[draw(st.sampled_from(numbers))] = draw(st.sampled_from(WEIRD_NUMBERS))
        elif kind == "nest":
            opening = draw(st.sampled_from(["{", "(", "["]))
            depth = draw(st.sampled_from([1, 2, 50, 5000]))
            closing = {"{": "}", "(": ")", "[": "]"}[opening]
            tokens[spot:spot] = [opening] * depth + [closing] * depth
        elif kind == "duplicate":
            spans = _block_spans(tokens)
            if spans:
                start, end = draw(st.sampled_from(spans))
                tokens[end:end] = tokens[start:end]
        elif kind == "insert":
            tokens.insert(spot, draw(st.sampled_from(VOCABULARY)))
    return "".join(tokens)


@fuzz(60)
@given(text=mutated_network())
def test_mutated_networks(bif_path: Callable[[str], Path], text: str) -> None:
    read_or_refuse(bif_path(".bif"), text.encode())


@fuzz(15)
@given(network=st.sampled_from(NETWORKS[:-1]), data=st.data())
def test_a_duplicated_block_is_refused(bif_path: Callable[[str], Path], network: str,
                                       data: st.DataObject) -> None:
    """The mutation above that a reader can survive silently: a second copy of a block
    (network, variable or probability) used to replace the first without a word."""
    tokens = list(pieces(network))
    start, end = data.draw(st.sampled_from(_block_spans(tokens)))
    path = bif_path(".bif")
    path.write_text("".join(tokens[:end] + tokens[start:]))
    with pytest.raises(ModelError, match=r"declared twice|a second (probability|'network')"):
        read_bif(path)


# --------------------------------------------------------------------------- --evidence
def well_formed(items: list[str]) -> bool:
    """What ``parse_evidence`` accepts, stated independently of it."""
    if not all(re.fullmatch(r"[^=]+=.+", item, re.S) for item in items):
        return False
    names = [item.split("=", 1)[0] for item in items]
    return len(set(names)) == len(names)


@fuzz(500)
@given(items=st.lists(st.text(alphabet="ab=\n ", max_size=5) | st.text(max_size=8),
                      max_size=6))
def test_parse_evidence(items: list[str]) -> None:
    try:
        evidence = parse_evidence(items)
    except UnknownName as e:
        assert not well_formed(items) and "\n" not in str(e)
        return
    assert well_formed(items)
    assert [f"{var}={state}" for var, state in evidence.items()] == items


ASIA = ["asia", "tub", "smoke", "lung", "bronc", "either", "xray", "dysp"]  # all yes/no
PAIRS = st.sampled_from([f"{var}={state}" for var in ASIA for state in ("yes", "no")])
EVIDENCE = st.lists(PAIRS | PAIRS | PAIRS | st.sampled_from(["asia", "asai=yes", "smoke=maybe",
                                                             "=", "a==b", "-x"])
                    | st.text(max_size=6), min_size=1, max_size=2)


@fuzz(40, HealthCheck.function_scoped_fixture)
@given(groups=st.lists(EVIDENCE, min_size=1, max_size=2))
@example(groups=[["smoke=no"], ["asia=no"]])
@example(groups=[["tub=yes"], ["either=no"]])  # either is tub or lung: impossible
def test_query_command(groups: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """Any mix of repeated flags and pairs: an answer (exit 0), impossible evidence such as
    either=no with tub=yes (exit 1), or anything else (exit 2), each error in one line."""
    capsys.readouterr()  # a fixture shared across examples: start each one empty
    argv = ["query", str(examples() / "asia.bif.gz")]
    for group in groups:
        argv += ["--evidence", *group]
    code = main(argv)
    out, err = capsys.readouterr()
    flat = [item for group in groups for item in group]
    if any(item.startswith("-") for item in flat):
        assert code == 2  # argparse's own usage error: the item reads as an option
        return
    if code == 0:
        assert out.startswith("log p(evidence) = ") and err == ""
    else:
        assert out == "" and err.startswith("genppl: error: ") and err.count("\n") == 1, err
    names_known = all(item.partition("=")[0] in ASIA and item.partition("=")[2] in ("yes", "no")
                      for item in flat)
    assert code in ((0, 1) if well_formed(flat) and names_known else (2,))

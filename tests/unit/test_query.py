"""``genppl query``: the JSON contract, names checked with exit code 2 (a variable given twice
too), impossible evidence, a memory budget too small and unreadable files exit code 1 with one
line, and answers equal to brute-force enumeration and to pgmpy on asia."""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from genppl import ModelError
from genppl.cli import main
from genppl.query import query

pytestmark = pytest.mark.unit

# rain -> wet <- sprinkler, with a deterministic "wet only if something happened".
NETWORK = """network lawn {
}
variable rain { type discrete [ 2 ] { no, yes }; }
variable sprinkler { type discrete [ 2 ] { off, on }; }
variable wet { type discrete [ 2 ] { dry, wet }; }
probability ( rain ) { table 0.8, 0.2; }
probability ( sprinkler ) { table 0.6, 0.4; }
probability ( wet | rain, sprinkler ) {
  (no, off) 1.0, 0.0;
  (no, on) 0.1, 0.9;
  (yes, off) 0.2, 0.8;
  (yes, on) 0.01, 0.99;
}
"""
P_RAIN = {"no": 0.8, "yes": 0.2}
P_SPRINKLER = {"off": 0.6, "on": 0.4}
P_WET = {("no", "off"): 0.0, ("no", "on"): 0.9, ("yes", "off"): 0.8, ("yes", "on"): 0.99}


@pytest.fixture
def network(tmp_path: Path) -> Path:
    path = tmp_path / "lawn.bif"
    path.write_text(NETWORK)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_contract_equals_brute_force(network: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "query", str(network), "--evidence", "wet=wet", "--map",
                        "--json")
    assert code == 0
    answer = json.loads(out)
    assert set(answer) == {"log_evidence", "marginals", "map"}
    joint = {(r, s): P_RAIN[r] * P_SPRINKLER[s] * P_WET[r, s]
             for r, s in itertools.product(P_RAIN, P_SPRINKLER)}
    evidence = sum(joint.values())
    assert answer["log_evidence"] == pytest.approx(math.log(evidence), abs=1e-12)
    assert answer["marginals"]["rain"]["yes"] == pytest.approx(
        (joint["yes", "off"] + joint["yes", "on"]) / evidence, abs=1e-12)
    assert set(answer["marginals"]) == {"rain", "sprinkler"}
    assert answer["map"] == dict(zip(("rain", "sprinkler"), max(joint, key=joint.get),
                                     strict=True))


def test_target_narrows_the_answer(network: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "query", str(network), "--target", "wet", "--json")
    assert code == 0
    answer = json.loads(out)
    assert list(answer["marginals"]) == ["wet"] and answer["log_evidence"] == pytest.approx(0.0)
    code, out, _ = _run(capsys, "query", str(network), "--target", "wet", "--target", "rain",
                        "--json")
    assert code == 0 and list(json.loads(out)["marginals"]) == ["wet", "rain"]


@pytest.mark.parametrize(("argv", "listed"), [
    (["--evidence", "wte=wet"], "Did you mean 'wet'?"),
    (["--evidence", "wet=soaked"], "Valid names: dry, wet."),
    (["--target", "rian"], "Did you mean 'rain'?"),
    (["--evidence", "wet"], "is not VAR=STATE"),
])
def test_unknown_names_exit_2_listing_the_valid_ones(network: Path, argv: list[str],
                                                     listed: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "query", str(network), *argv)
    assert code == 2 and listed in err


def test_impossible_evidence_exits_1_without_nan(network: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "query", str(network), "--evidence", "rain=no",
                          "sprinkler=off", "wet=wet", "--json")
    assert code == 1 and out == ""
    assert "probability zero" in err and "nan" not in err.lower()


def test_a_variable_given_twice_is_refused(network: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Within one flag or across flags, with the same state or another: it is a slip (the
    last one would otherwise silently win), and the message names the variable."""
    for argv in (["--evidence", "rain=yes", "rain=no"],
                 ["--evidence", "rain=yes", "--evidence", "sprinkler=on", "rain=yes"]):
        code, out, err = _run(capsys, "query", str(network), *argv)
        assert code == 2 and out == ""
        assert err.startswith("genppl: error: evidence gives variable 'rain' twice")
        assert err.count("\n") == 1


# --------------------------------------------------------------------------- asia, against pgmpy
def _examples() -> Path:
    pgmpy = pytest.importorskip("pgmpy", reason="pgmpy (dev/bench extra) is not installed")
    return Path(pgmpy.__file__).parent / "utils" / "example_models"


def test_repeated_evidence_flags_mean_one_flag_and_equal_pgmpy(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--evidence A --evidence B` once kept only B: P(bronc=yes) came back as 0.45, its value
    given smoke=no alone, instead of 0.30."""
    asia = str(_examples() / "asia.bif.gz")
    evidence = {"smoke": "no", "asia": "no"}
    answers = []
    for argv in (["--evidence", "smoke=no", "--evidence", "asia=no"],
                 ["--evidence", "smoke=no", "asia=no"]):
        code, out, _ = _run(capsys, "query", asia, *argv, "--json")
        assert code == 0
        answers.append(json.loads(out))
    assert answers[0] == answers[1]
    with warnings.catch_warnings():  # pgmpy's own deprecation notices
        warnings.simplefilter("ignore", FutureWarning)
        from pgmpy.inference import VariableElimination
        from pgmpy.utils import get_example_model

        oracle = VariableElimination(get_example_model("asia"))
        marginals = answers[0]["marginals"]
        assert set(marginals) == {"tub", "lung", "bronc", "either", "xray", "dysp"}
        for var, probs in marginals.items():
            factor = oracle.query([var], evidence=evidence, show_progress=False)
            for state, p in probs.items():
                assert p == pytest.approx(factor.get_value(**{var: state}), abs=1e-10)
    assert marginals["bronc"]["yes"] == pytest.approx(0.30, abs=1e-12)


def test_max_memory_reaches_the_elimination(capsys: pytest.CaptureFixture[str]) -> None:
    """alarm's largest CPT takes 864 bytes and its elimination a table of 1,152: a budget of
    1000 reads the file and refuses the elimination; one of 8 refuses the file itself."""
    alarm = _examples() / "alarm.bif.gz"
    code, out, err = _run(capsys, "query", str(alarm), "--max-memory", "1000")
    assert code == 1 and out == ""
    assert err.startswith("genppl: error: exact inference (a table of ")
    assert "over the memory budget" in err and err.count("\n") == 1
    with pytest.raises(ModelError, match="over the memory budget"):
        query(alarm, budget_bytes=1000)
    code, out, err = _run(capsys, "query", str(alarm), "--max-memory", "8")
    assert code == 1 and err.startswith(f"genppl: error: {alarm}:")
    code, out, _ = _run(capsys, "query", str(alarm), "--max-memory", "64MiB", "--target", "HR")
    assert code == 0 and out.startswith("log p(evidence) = ")


# --------------------------------------------------------------------------- unreadable files
def _permission_denied(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the user may not read. chmod cannot make one for root, who reads regardless, so
    the read itself is made to fail as the kernel would fail it."""
    path.write_text(NETWORK)

    def refuse(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)


@pytest.mark.parametrize(("name", "make", "what"), [
    ("latin1.bif", lambda p, _: p.write_bytes(NETWORK.replace("no", "n\u00f6").encode("latin-1")),
     "not UTF-8 text"),
    ("plain.bif.gz", lambda p, _: p.write_text(NETWORK), "not valid gzip data"),
    ("cut.bif.gz", lambda p, _: p.write_bytes((_examples() / "asia.bif.gz").read_bytes()[:100]),
     "the gzip data is cut short"),
    ("folder.bif", lambda p, _: p.mkdir(), "Is a directory"),
    ("missing.bif", lambda p, _: None, "No such file or directory"),
    ("secret.bif", _permission_denied, "Permission denied"),
])
def test_unreadable_network_is_one_line_and_exit_1(
        tmp_path: Path, name: str, make: Callable[[Path, pytest.MonkeyPatch], object],
        what: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    make(path, monkeypatch)
    code, out, err = _run(capsys, "query", str(path), "--evidence", "rain=yes")
    assert code == 1 and out == ""
    assert err.startswith(f"genppl: error: cannot read BIF file {path}: ") and what in err
    assert err.count("\n") == 1

"""``genppl query``: the JSON contract, names checked with exit code 2, impossible evidence
exit code 1 with no NaN, and answers equal to brute-force enumeration."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from genppl.cli import main

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

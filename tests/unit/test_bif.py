"""BIF files: the parser reports syntax errors with line numbers and round-trips through
``write_bif``. (That it reads the networks pgmpy ships, with every marginal equal to pgmpy's,
is tests/unit/test_bn_oracles.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import genppl
from genppl import ModelError
from genppl.bif import BIFSyntaxError, read_bif, write_bif

pytestmark = pytest.mark.unit
F64 = torch.float64

ASIA = """network asia {
}
variable asia { type discrete [ 2 ] { yes, no }; }
variable tub { type discrete [ 2 ] { yes, no }; property note = "x"; }
probability ( asia ) { table 0.01, 0.99; }
probability ( tub | asia ) {
  (yes) 0.05, 0.95;
  (no) 0.01, 0.99;
}
"""


def _examples() -> Path:
    pgmpy = pytest.importorskip("pgmpy", reason="pgmpy (dev/bench extra) is not installed")
    return Path(pgmpy.__file__).parent / "utils" / "example_models"


def test_parses_tables_rows_and_properties(tmp_path: Path) -> None:
    path = tmp_path / "asia.bif"
    path.write_text(ASIA)
    m = read_bif(path)
    assert list(m.nodes) == ["asia", "tub"] and m["tub"].states == ("yes", "no")
    torch.testing.assert_close(m["tub"].fn.table, torch.tensor([[0.05, 0.95], [0.01, 0.99]],
                                                                dtype=F64))
    post = genppl.infer(m.to(dtype=F64), {"tub": torch.tensor(0)}, engine="exact")
    p_yes = 0.01 * 0.05 / (0.01 * 0.05 + 0.99 * 0.01)
    assert float(post.marginals["asia"][0]) == pytest.approx(p_yes, abs=1e-12)


@pytest.mark.parametrize(("text", "where", "what"), [
    (ASIA.replace("[ 2 ] { yes, no }; }\nvariable tub", "[ 3 ] { yes, no }; }\nvariable tub"),
     ":3:", "declares [3] states but lists 2"),
    (ASIA.replace("(no) 0.01, 0.99;", "(no) 0.01 0.99;"), ":8:", "expected ';'"),
    (ASIA.replace("table 0.01, 0.99;", "table 0.01, x;"), ":5:", "expected a probability"),
    (ASIA.replace("probability ( tub | asia )", "probability ( tub | smoke )"), ":6",
     "undeclared variable 'smoke'"),
    (ASIA.replace("  (no) 0.01, 0.99;\n", ""), ":6", "no row for parent states ('no',)"),
    (ASIA[:ASIA.index("probability ( tub")], ":4:", "'tub' has no probability table"),
    (ASIA.replace("(no) 0.01, 0.99;", "(no) 0.01, 0.9;"), ":6:",
     "the table of 'tub' has a row summing to"),
])
def test_syntax_errors_name_the_line(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = tmp_path / "bad.bif"
    path.write_text(text)
    with pytest.raises(BIFSyntaxError) as info:
        read_bif(path)
    assert str(path) + where in str(info.value) and what in str(info.value)


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    model = read_bif(_examples() / "asia.bif.gz")
    again = read_bif(write_bif(model, tmp_path / "asia.bif.gz"))
    assert list(again.nodes) == list(model.nodes)
    for name, node in model.nodes.items():
        assert again[name].states == node.states
        assert [p.node for p in again[name].parents] == [p.node for p in node.parents]
        torch.testing.assert_close(again[name].fn.table, node.fn.table, rtol=0, atol=0)


def test_write_bif_refuses_models_that_are_not_cpts(tmp_path: Path) -> None:
    import pyro.distributions as dist

    m = genppl.Model("not_a_bn")
    m.latent("z", lambda: dist.Normal(0.0, 1.0))
    with pytest.raises(ModelError, match=r"'z'.*not a CPT"):
        write_bif(m, tmp_path / "x.bif")

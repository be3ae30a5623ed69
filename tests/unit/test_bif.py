"""BIF files: the parser reports syntax errors with line numbers and round-trips through
``write_bif``. (That it reads the networks pgmpy ships, with every marginal equal to pgmpy's,
is tests/unit/test_bn_oracles.py.)"""

from __future__ import annotations

import gzip
from collections.abc import Callable
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
    # Declared twice: the second would silently replace the first.
    (ASIA.replace("probability ( asia )", "variable tub { type discrete [ 2 ] { a, b }; }\n"
                  "probability ( asia )"), ":5:",
     "variable 'tub' is declared twice (first at line 4)"),
    (ASIA.replace("{ yes, no }; property", "{ yes, yes }; property"), ":4:",
     "variable 'tub' lists state 'yes' twice"),
    (ASIA.replace("[ 2 ] { yes, no }; property", "[ 2 ] { yes, no }; type discrete [ 2 ] "
                  "{ a, b }; property"), ":4:", "variable 'tub' has a second 'type'"),
    (ASIA + "probability ( asia ) { table 0.5, 0.5; }\n", ":10:",
     "a second probability block for 'asia' (the first is at line 5)"),
    (ASIA + "network other { }\n", ":10:1", "a second 'network' block"),
    (ASIA.replace("(no) 0.01, 0.99;", "(yes) 0.01, 0.99;"), ":8:",
     "gives the row ('yes',) twice"),
    (ASIA.replace("table 0.01, 0.99;", "table 0.01, 0.99; table 0.5, 0.5;"), ":5:",
     "has a second 'table' line"),
    (ASIA.replace("  (no) 0.01, 0.99;\n", "  table 0.05, 0.01, 0.95, 0.99;\n"), ":8:",
     "mixes a 'table' line with rows"),
    (ASIA.replace("( tub | asia )", "( tub | asia, asia )"), ":6:", "lists parent 'asia' twice"),
    # Numbers Python's int() refuses, found by tests/unit/test_fuzz_inputs.py.
    (ASIA.replace("[ 2 ] { yes, no }; }\nvariable tub", "[ \u00b2 ] { yes, no }; }\nvariable tub"),
     ":3:", "declares [\u00b2] states but lists 2"),
    (ASIA.replace("[ 2 ] { yes, no }; }\nvariable tub", "[ " + "9" * 5000 + " ] { yes, no }; }\n"
                  "variable tub"), ":3:", "declares [9999999999"),
    (ASIA.replace("table 0.01, 0.99;", "table 1e400, 0.99;"), ":5:",
     "probability 1e400 is not a finite non-negative number"),
    (ASIA.replace("table 0.01, 0.99;", "table 0.01, -0.99;"), ":5:",
     "probability -0.99 is not a finite"),
    (ASIA.replace("table 0.01, 0.99;", "table 0.01, 10**400;"), ":5:", "expected a probability"),
    (ASIA + "/* a comment left open\n", ":10:1", "comment '/*' is never closed"),
    ("// nothing but a comment\n", ": declares no variables", "at least one 'variable' block"),
])
def test_syntax_errors_name_the_line(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = tmp_path / "bad.bif"
    path.write_text(text)
    with pytest.raises(BIFSyntaxError) as info:
        read_bif(path)
    assert str(path) + where in str(info.value) and what in str(info.value)


def _cut_gzip(path: Path) -> None:
    path.write_bytes(gzip.compress(ASIA.encode())[:60])


def _corrupt_gzip(path: Path) -> None:
    data = bytearray(gzip.compress(ASIA.encode()))
    data[20:30] = b"\xff" * 10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "make", "what"), [
    ("latin1.bif", lambda p: p.write_bytes(ASIA.replace("yes", "s\u00ed").encode("latin-1")),
     "not UTF-8 text (byte 0xed at offset"),
    ("plain.bif.gz", lambda p: p.write_text(ASIA), "not valid gzip data (Not a gzipped file"),
    ("cut.bif.gz", _cut_gzip, "the gzip data is cut short"),
    ("corrupt.bif.gz", _corrupt_gzip, "not valid gzip data"),
    ("folder.bif", lambda p: p.mkdir(), "Is a directory"),
    ("missing.bif", lambda p: None, "No such file or directory"),
])
def test_unreadable_files_raise_model_error(tmp_path: Path, name: str,
                                            make: Callable[[Path], object], what: str) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(ModelError) as info:
        read_bif(path)
    message = str(info.value)
    assert message.startswith(f"cannot read BIF file {path}: ") and what in message
    assert "\n" not in message


def test_byte_order_mark_is_not_part_of_the_first_word(tmp_path: Path) -> None:
    path = tmp_path / "bom.bif"
    path.write_bytes(b"\xef\xbb\xbf" + ASIA.encode())
    assert list(read_bif(path).nodes) == ["asia", "tub"]


def test_long_chain_listed_child_first(tmp_path: Path) -> None:
    """Ordering parents first must not recurse once per link: 3,000 would pass Python's
    recursion limit."""
    n = 3000
    lines = [f"variable v{i} {{ type discrete [ 2 ] {{ a, b }}; }}" for i in range(n)]
    lines += [f"probability ( v{i} | v{i - 1} ) {{ (a) 0.9, 0.1; (b) 0.2, 0.8; }}"
              for i in reversed(range(1, n))]
    lines.append("probability ( v0 ) { table 0.5, 0.5; }")
    path = tmp_path / "chain.bif"
    path.write_text("\n".join(lines))
    model = read_bif(path)
    assert list(model.nodes) == [f"v{i}" for i in range(n)]
    assert [p.node for p in model["v2999"].parents] == ["v2998"]


def test_a_cycle_is_named(tmp_path: Path) -> None:
    path = tmp_path / "cycle.bif"
    path.write_text(ASIA.replace("probability ( asia )", "probability ( asia | tub )")
                    .replace("table 0.01, 0.99;", "(yes) 0.01, 0.99; (no) 0.5, 0.5;"))
    with pytest.raises(BIFSyntaxError, match=r"cycle\.bif:\d+: the network has a cycle: "
                                             r"(asia -> tub -> asia|tub -> asia -> tub)\."):
        read_bif(path)


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


def test_a_default_row_over_many_parents_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """Two hundred bytes can ask, through 'default', for a table of 2**32 rows: the reader
    checks its size against the memory budget first (and within it, reads it)."""
    def network(parents: int) -> str:
        lines = ["network big {}"]
        lines += [f"variable p{i} {{ type discrete [ 2 ] {{ a, b }}; }}" for i in range(parents)]
        lines += ["variable c { type discrete [ 2 ] { a, b }; }"]
        lines += [f"probability ( p{i} ) {{ table 0.5, 0.5; }}" for i in range(parents)]
        lines += [f"probability ( c | {', '.join(f'p{i}' for i in range(parents))} ) "
                  "{ default 0.3, 0.7; }"]
        return "\n".join(lines)

    path = tmp_path / "big.bif"
    path.write_text(network(32))
    with pytest.raises(ModelError, match=rf"{path}:67: .* table of 8,589,934,592 "
                       "probabilities needs 64 GiB, over the memory budget"):
        read_bif(path)
    path.write_text(network(3))
    table = read_bif(path)["c"].fn.table
    assert table.shape == (2, 2, 2, 2)
    assert torch.equal(table[..., 1], torch.full((2, 2, 2), 0.7, dtype=torch.float64))
    with genppl.memory_limit(100), pytest.raises(ModelError, match="over the memory budget"):
        read_bif(path)

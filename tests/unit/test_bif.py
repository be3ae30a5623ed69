"""BIF files: the parser reads every network pgmpy ships, reports syntax errors with line
numbers, round-trips through ``write_bif``, and the exact engine's marginals under random
evidence equal pgmpy's variable elimination."""

from __future__ import annotations

import gzip
import random
import warnings
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


NETWORKS = ["asia", "sachs", "child", "insurance", "alarm", "hailfinder", "win95pts", "hepar2"]


@pytest.mark.parametrize("network", NETWORKS)
def test_marginals_under_random_evidence_equal_pgmpy(network: str) -> None:
    path = _examples() / f"{network}.bif.gz"
    model = read_bif(path).to(dtype=F64)
    with warnings.catch_warnings():  # the peer's own deprecation notices, not ours
        warnings.simplefilter("ignore")
        from pgmpy.inference import VariableElimination
        from pgmpy.readwrite import BIFReader

        reference = BIFReader(string=gzip.decompress(path.read_bytes()).decode()).get_model()
        for cpd in reference.get_cpds():  # genppl rescales rounded rows to sum to one
            cpd.normalize(inplace=True)
    # Evidence drawn from the network itself, so it has positive probability.
    draw = genppl.infer(model, {}, engine="prior", num_samples=1, seed=0, progress=False)
    rng = random.Random(network)
    observed = rng.sample(sorted(model.nodes), 5)
    evidence = {v: int(draw.samples[v].reshape(-1)[0]) for v in observed}
    post = genppl.infer(model, {v: torch.tensor(s) for v, s in evidence.items()}, engine="exact")
    ve = VariableElimination(reference)
    named = {v: model[v].states[s] for v, s in evidence.items()}
    hidden = [u for u in model.nodes if u not in evidence]
    for v in rng.sample(hidden, min(6, len(hidden))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = ve.query([v], evidence=named, show_progress=False)
        order = [q.state_names[v].index(s) for s in model[v].states]
        expected = torch.tensor(q.values[order], dtype=F64)
        torch.testing.assert_close(post.marginals[v], expected, rtol=0, atol=1e-8)

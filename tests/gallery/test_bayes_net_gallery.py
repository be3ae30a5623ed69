"""Oracle tests of the Bayesian-network gallery entries (asia, cancer, alarm).

Each entry's posterior and log evidence are checked twice: against brute-force enumeration of
the joint over the entry's own tables, and against pgmpy's VariableElimination on the copy of
the network that ships with pgmpy (typed independently of the entry's tables, so a typo in
either fails). Every d-separation answer is checked against pgmpy's ``is_dconnected`` on the
entry's own graph and on pgmpy's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import genppl
from genppl.gallery import RunConfig, RunReport
from models_gallery import alarm, asia, cancer

pytestmark = pytest.mark.gallery
pytest.importorskip("pgmpy", reason="pgmpy (gallery/dev extra) is not installed")

F64 = torch.float64
TOL = 1e-9
ENTRIES = {"asia": asia, "cancer": cancer, "alarm": alarm}


@contextmanager
def pgmpy_quiet() -> Iterator[None]:
    """pgmpy's own deprecation notices (FutureWarning on import and on use), which the test
    configuration would otherwise turn into errors; genppl's code never runs inside."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def pgmpy_network(name: str) -> Any:
    with pgmpy_quiet():
        from pgmpy.utils import get_example_model

        bn = get_example_model(name)
    for cpd in bn.get_cpds():  # genppl rescales bnlearn's rounded rows; so must the peer
        cpd.normalize(inplace=True)
    return bn


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RunReport, Path]]:
    out = {}
    for name, module in ENTRIES.items():
        folder = tmp_path_factory.mktemp(name)
        out[name] = (module.ENTRY.run(RunConfig(out=folder, progress=False)), folder)
    return out


@pytest.mark.parametrize("name", list(ENTRIES))
def test_run_reports_queries_and_draws_the_graph(
        reports: dict[str, tuple[RunReport, Path]], name: str) -> None:
    report, folder = reports[name]
    module = ENTRIES[name]
    assert report.entry == name and report.engine == "exact"
    assert set(report.metrics["posterior"]) == set(module.TARGETS)
    assert len(report.metrics["d_separated"]) == len(module.SEPARATIONS)
    assert math.isfinite(report.metrics["log_evidence"]) and report.metrics["log_evidence"] < 0
    assert [Path(f).parent for f in report.files] == [folder]
    assert Path(report.files[0]).stat().st_size > 0


def brute_force(model: genppl.Model, evidence: dict[str, str]
                ) -> tuple[float, dict[str, torch.Tensor]]:
    """log p(evidence) and every posterior marginal, from the full joint tensor (one axis per
    node; no elimination order involved)."""
    names = list(model.nodes)
    log_joint = torch.zeros((), dtype=F64)
    for name, node in model.nodes.items():
        axes = [p.node for p in node.parents] + [name]
        table = node.fn.table.log().to(F64)
        order = sorted(range(len(axes)), key=lambda a: names.index(axes[a]))
        shape = [node.fn.table.shape[axes.index(v)] if v in axes else 1 for v in names]
        log_joint = log_joint + table.permute(order).reshape(shape)
    for var, state in evidence.items():
        keep = torch.full((len(model[var].states),), -math.inf, dtype=F64)
        keep[model[var].states.index(state)] = 0.0
        log_joint = log_joint + keep.reshape([-1 if v == var else 1 for v in names])
    log_z = torch.logsumexp(log_joint.reshape(-1), 0)
    probs = (log_joint - log_z).exp()
    margs = {v: probs.sum([a for a in range(len(names)) if a != i]) for i, v in enumerate(names)}
    return float(log_z), margs


@pytest.mark.parametrize("name", ["asia", "cancer"])
def test_posterior_and_log_evidence_equal_brute_force(
        reports: dict[str, tuple[RunReport, Path]], name: str) -> None:
    module = ENTRIES[name]
    report = reports[name][0]
    log_z, margs = brute_force(module.build(), module.EVIDENCE)
    assert report.metrics["log_evidence"] == pytest.approx(log_z, abs=TOL, rel=0)
    model = module.build()
    for target, probs in report.metrics["posterior"].items():
        expected = dict(zip(model[target].states, margs[target].tolist(), strict=True))
        assert probs == pytest.approx(expected, abs=TOL, rel=0)


@pytest.mark.parametrize("name", list(ENTRIES))
def test_posterior_and_log_evidence_equal_pgmpy_on_its_own_copy(
        reports: dict[str, tuple[RunReport, Path]], name: str) -> None:
    module = ENTRIES[name]
    report = reports[name][0]
    evidence = module.EVIDENCE
    with pgmpy_quiet():
        from pgmpy.inference import VariableElimination

        ve = VariableElimination(pgmpy_network(name))
        queries = {t: ve.query([t], evidence=evidence, show_progress=False)
                   for t in module.TARGETS}
        p_evidence = ve.query(list(evidence), show_progress=False).get_value(**evidence)
    for target, probs in report.metrics["posterior"].items():
        q = queries[target]
        expected = {s: float(q.values[q.state_names[target].index(s)]) for s in probs}
        assert probs == pytest.approx(expected, abs=TOL, rel=0)
    assert report.metrics["log_evidence"] == pytest.approx(math.log(p_evidence), abs=TOL, rel=0)


@pytest.mark.parametrize("name", ["asia", "cancer"])
def test_pyro_enumeration_agrees_with_exact(reports: dict[str, tuple[RunReport, Path]],
                                            name: str) -> None:
    module = ENTRIES[name]
    enum = module.ENTRY.run(RunConfig(engine="enum", progress=False))
    exact = reports[name][0]
    assert enum.engine == "enum"
    assert enum.metrics["log_evidence"] == pytest.approx(exact.metrics["log_evidence"],
                                                         abs=TOL, rel=0)
    for target, probs in exact.metrics["posterior"].items():
        assert enum.metrics["posterior"][target] == pytest.approx(probs, abs=TOL, rel=0)


@pytest.mark.parametrize("name", list(ENTRIES))
def test_d_separation_agrees_with_pgmpy(name: str) -> None:
    """On the entry's own graph and on pgmpy's copy of the network: the answers are a
    property of the structure, so both must agree with genppl's."""
    from pgmpy.base import DAG

    module = ENTRIES[name]
    model = module.build()
    own = DAG([(p.node, child) for child, node in model.nodes.items() for p in node.parents])
    theirs = pgmpy_network(name)
    assert set(own.edges()) == set(theirs.edges())
    for x, y, given in module.SEPARATIONS:
        expected = not own.is_dconnected(x, y, observed=list(given))
        assert model.d_separated(x, y, given=given) == expected, (x, y, given)
        assert theirs.is_dconnected(x, y, observed=list(given)) != expected
    # Both answers occur, so a d_separated that always says yes (or no) fails.
    assert {model.d_separated(x, y, given=g) for x, y, g in module.SEPARATIONS} == {True, False}


def test_entry_tables_equal_pgmpy_copies() -> None:
    """The tables typed into asia.py and cancer.py from the papers equal bnlearn's copies."""
    from genppl.pgmpy_io import from_pgmpy

    for module in (asia, cancer):
        ours = module.build(observed=())
        theirs = from_pgmpy(pgmpy_network(module.ENTRY.name))
        assert set(ours.nodes) == set(theirs.nodes)
        for name, node in ours.nodes.items():
            assert node.states == theirs[name].states
            assert [p.node for p in node.parents] == [p.node for p in theirs[name].parents]
            torch.testing.assert_close(node.fn.table, theirs[name].fn.table, rtol=0, atol=1e-12)


def test_alarm_says_how_to_get_pgmpy(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pgmpy", None)  # import pgmpy now raises ImportError
    with pytest.raises(genppl.ModelError, match=r"genppl\[gallery\]"):
        alarm.build()

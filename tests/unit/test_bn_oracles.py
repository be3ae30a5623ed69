"""The exact engine against pgmpy's VariableElimination on the bnlearn networks pgmpy ships.

For each network, evidence on 5 random variables is drawn from the network itself (so it has
positive probability); every single-variable marginal of every other variable must equal
pgmpy's answer to 1e-8 in float64. genppl reads the ``.bif.gz`` file with its own parser
(``genppl.read_bif``), pgmpy loads it with its own (``pgmpy.utils.get_example_model``, which
the design notes say works offline; sockets are disabled so that any download attempt fails
the test), so the parsers check each other too. Networks with more than 64 variables
(win95pts, hepar2, pathfinder, andes) are beyond Pyro's enumeration. Batching is checked on
ALARM against one case at a time.
"""

from __future__ import annotations

import random
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import genppl

pytestmark = pytest.mark.unit
pgmpy = pytest.importorskip("pgmpy", reason="pgmpy (dev/bench extra) is not installed")

F64 = torch.float64
EXAMPLES = Path(pgmpy.__file__).parent / "utils" / "example_models"
NETWORKS = ["asia", "sachs", "child", "insurance", "alarm", "hailfinder", "win95pts", "hepar2",
            "andes", "pathfinder"]


@contextmanager
def offline_pgmpy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pgmpy with its deprecation notices silenced and every socket connection refused."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"pgmpy tried to reach the network: {args}")

    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """pgmpy's copy of the network, rows rescaled to sum to one as genppl's reader does
    (bnlearn's rows are rounded, off by up to 1e-7)."""
    with offline_pgmpy(monkeypatch):
        from pgmpy.utils import get_example_model

        bn = get_example_model(name)
    for cpd in bn.get_cpds():
        cpd.normalize(inplace=True)
    return bn


def random_evidence(model: genppl.Model, seed: str, cases: int) -> dict[str, torch.Tensor]:
    """5 random variables, each case's states drawn jointly from the network."""
    draw = genppl.infer(model, {}, engine="prior", num_samples=cases, seed=0, progress=False)
    observed = random.Random(seed).sample(sorted(model.nodes), 5)
    return {v: draw.samples[v].reshape(-1).long() for v in observed}


@pytest.mark.parametrize("network", NETWORKS)
def test_every_marginal_under_random_evidence_equals_pgmpy(
        network: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bn = load(network, monkeypatch)
    model = genppl.read_bif(EXAMPLES / f"{network}.bif.gz").to(dtype=F64)
    evidence = {v: s[0] for v, s in random_evidence(model, network, 1).items()}
    post = genppl.infer(model, evidence, engine="exact")
    named = {v: model[v].states[int(s)] for v, s in evidence.items()}
    hidden = [v for v in model.nodes if v not in evidence]
    assert set(post.marginals) == set(model.nodes)
    with offline_pgmpy(monkeypatch):
        from pgmpy.inference import VariableElimination

        ve = VariableElimination(bn)
        queries = {v: ve.query([v], evidence=named, show_progress=False) for v in hidden}
    for v, q in queries.items():
        order = [q.state_names[v].index(s) for s in model[v].states]
        expected = torch.tensor(q.values[order], dtype=F64)
        torch.testing.assert_close(post.marginals[v], expected, rtol=0, atol=1e-8,
                                   msg=lambda m, v=v: f"{v}: {m}")


def test_batched_evidence_equals_one_case_at_a_time_on_alarm(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = genppl.read_bif(EXAMPLES / "alarm.bif.gz").to(dtype=F64)
    evidence = random_evidence(model, "batched", 40)
    together = genppl.infer(model, evidence, engine="exact")
    assert together.log_evidence.shape == (40,)
    assert len({tuple(int(s[c]) for s in evidence.values()) for c in range(40)}) > 1
    for case in range(40):
        alone = genppl.infer(model, {v: s[case] for v, s in evidence.items()}, engine="exact")
        assert float(together.log_evidence[case]) == pytest.approx(alone.log_evidence,
                                                                   abs=1e-12, rel=0)
        for v, probs in alone.marginals.items():
            torch.testing.assert_close(together.marginals[v][case], probs, rtol=0, atol=1e-12)

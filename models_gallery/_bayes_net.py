"""What the Bayesian-network entries (``asia``, ``cancer``, ``alarm``) share: evidence given
by state name, and one experiment that answers a posterior query, reports log p(evidence)
and reads d-separation statements off the graph. Each entry only declares its network, its
evidence, its targets and its independence questions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

import genppl
from genppl.gallery import GalleryEntry, Report

#: ``(x, y, given)``: is x independent of y given the nodes in ``given``?
Separation = tuple[str, str, tuple[str, ...]]


def state_indices(model: genppl.Model, evidence: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Evidence ``{node: state name}`` as the state indices the engines take."""
    return {v: torch.tensor(model[v].states.index(s))  # type: ignore[union-attr]
            for v, s in evidence.items()}


def separation_label(x: str, y: str, given: Sequence[str]) -> str:
    return f"{x} _||_ {y}" + (f" | {', '.join(given)}" if given else "")


def network_entry(name: str, title: str, build: Callable[[], genppl.Model],
                  evidence: Mapping[str, str], targets: Sequence[str],
                  separations: Sequence[Separation],
                  engines: tuple[str, ...] = ("exact", "enum")) -> GalleryEntry:
    """The gallery entry of a network: its data is ``evidence`` as state indices, its
    experiment ``query_network``; each entry module then only declares its network and
    questions."""
    def data() -> dict[str, torch.Tensor]:
        return state_indices(build(), evidence)

    def experiment(report: Report) -> None:
        query_network(report, evidence, targets, separations)

    return GalleryEntry(name=name, title=title, build=build, data=data, engines=engines,
                        experiment=experiment)


def query_network(report: Report, evidence: Mapping[str, str], targets: Sequence[str],
                  separations: Sequence[Separation]) -> None:
    """Posterior marginals of ``targets`` given ``evidence`` (names as in the network), the
    log evidence, and each d-separation statement; metrics hold them by name for tests."""
    model = report.build()
    posterior = genppl.infer(model, state_indices(model, evidence), engine=report.engine)
    given = ", ".join(f"{v} = {s}" for v, s in evidence.items())
    report.metric("evidence", dict(evidence))
    report.line(f"exact queries (engine {report.engine}), evidence: {given}")
    report.label_width = 42
    report.number("  log p(evidence)", posterior.log_evidence, ".6f", key="log_evidence")
    for t in targets:
        for s, p in zip(model[t].states, posterior.marginals[t].tolist(),  # type: ignore[arg-type]
                        strict=True):
            report.number(f"  P({t} = {s} | evidence)", p, ".6f", key=("posterior", t, s))
    report.line("d-separation (read off the graph alone):")
    for x, y, given_nodes in separations:
        label = separation_label(x, y, given_nodes)
        separated = model.d_separated(x, y, given=given_nodes)
        report.number(f"  {label}", separated, key=("d_separated", label),
                      shown="yes" if separated else "no")

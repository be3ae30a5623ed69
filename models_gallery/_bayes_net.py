"""What the Bayesian-network entries (``asia``, ``cancer``, ``alarm``) share: evidence given
by state name, and one ``run`` that answers a posterior query, reports log p(evidence), reads
d-separation statements off the graph and draws it. Each entry only declares its network,
its evidence, its targets and its independence questions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch

import genppl
from genppl.gallery import GalleryEntry, RunConfig, RunReport, render_graph

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
    """The gallery entry of a network: its data is ``evidence`` as state indices, its run
    ``run_network``; each entry module then only declares its network and questions."""
    def data() -> dict[str, torch.Tensor]:
        return state_indices(build(), evidence)

    def run(config: RunConfig) -> RunReport:
        return run_network(entry, config, build(), evidence, targets, separations)

    entry = GalleryEntry(name=name, title=title, build=build, data=data, engines=engines,
                         run=run)
    return entry


def run_network(entry: GalleryEntry, config: RunConfig, model: genppl.Model,
                evidence: Mapping[str, str], targets: Sequence[str],
                separations: Sequence[Separation]) -> RunReport:
    """Posterior marginals of ``targets`` given ``evidence`` (names as in the network), the
    log evidence, and each d-separation statement; metrics hold them by name for tests."""
    start = time.perf_counter()
    engine = entry.check(config)
    model = model.to(config.device, config.dtype)
    posterior = genppl.infer(model, state_indices(model, evidence), engine=engine)
    marginals = {t: dict(zip(model[t].states, posterior.marginals[t].tolist(),  # type: ignore[arg-type]
                             strict=True)) for t in targets}
    separated = {separation_label(x, y, given): model.d_separated(x, y, given=given)
                 for x, y, given in separations}
    given = ", ".join(f"{v} = {s}" for v, s in evidence.items())
    rows = [f"exact queries (engine {engine}), evidence: {given}",
            f"  {'log p(evidence)':<40} {posterior.log_evidence:.6f}"]
    for t, probs in marginals.items():
        rows += [f"  {f'P({t} = {s} | evidence)':<40} {p:.6f}" for s, p in probs.items()]
    rows.append("d-separation (read off the graph alone):")
    rows += [f"  {label:<40} {'yes' if sep else 'no'}" for label, sep in separated.items()]
    files = []
    graph = render_graph(model, config, f"{entry.name}_graph.svg")
    if graph is not None:
        files.append(str(graph))
    return RunReport(entry.name, engine, "\n".join(rows),
                     metrics={"evidence": dict(evidence), "log_evidence": posterior.log_evidence,
                              "posterior": marginals, "d_separated": separated},
                     files=files, seconds=time.perf_counter() - start)

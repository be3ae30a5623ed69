"""Answer Bayesian-network queries from a BIF file: the ``genppl query`` contract.

Evidence and answers speak in the file's own variable and state names; the result is one
JSON-ready dict ``{"log_evidence": float, "marginals": {var: {state: prob}}, "map": {var:
state}}`` that other tools rely on, so names are checked up front and every failure is a
``ModelError`` that says what would fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from genppl.bif import read_bif
from genppl.budget import memory_limit
from genppl.errors import UnknownName, suggest
from genppl.inference import infer


def parse_evidence(items: Sequence[str]) -> dict[str, str]:
    """``["VAR=STATE", ...]`` -> ``{VAR: STATE}``.

    A variable given twice is refused, even with the same state: with a dict the last pair
    would silently win, and a repeated variable in a command is more likely a typo for another
    one than a deliberate restatement."""
    out: dict[str, str] = {}
    for item in items:
        var, sep, state = item.partition("=")
        if not sep or not var or not state:
            raise UnknownName(f"evidence {item!r} is not VAR=STATE.")
        if var in out:
            first = f"{var}={out[var]}"
            raise UnknownName(f"evidence gives variable {var!r} twice ({first!r} and {item!r}); "
                              "give each variable once.")
        out[var] = state
    return out


def query(path: str | Path, evidence: Mapping[str, str] | None = None,
          targets: Sequence[str] | None = None, *, want_map: bool = False,
          budget_bytes: int | None = None) -> dict[str, Any]:
    """Exact posterior marginals (of ``targets``, else every non-evidence variable), log
    p(evidence), and with ``want_map`` the most probable joint state of the others.

    ``budget_bytes`` caps the largest table the elimination may allocate (``None``: the
    budget in force, ``genppl.budget``); a network that needs more is refused before
    anything is allocated."""
    with memory_limit(budget_bytes):  # the file's tables count against the budget too
        model = read_bif(path).to(dtype=torch.float64)
    evidence = dict(evidence or {})
    for var, state in evidence.items():
        _check_variable(model, var)
        states = model[var].states or ()
        if state not in states:
            raise UnknownName(f"variable {var!r} has no state {state!r}."
                              + suggest(state, states))
    hidden = [v for v in model.nodes if v not in evidence]
    chosen = list(targets) if targets else hidden
    for var in chosen:
        _check_variable(model, var)
        if var in evidence:
            raise UnknownName(f"target {var!r} is also given as evidence; drop one of them.")
    data = {v: torch.tensor(model[v].states.index(s)) for v, s in evidence.items()}  # type: ignore[union-attr]
    posterior = infer(model, data, engine="exact", map=want_map, budget_bytes=budget_bytes)
    out: dict[str, Any] = {
        "log_evidence": float(posterior.log_evidence),  # type: ignore[arg-type]
        "marginals": {v: dict(zip(model[v].states, posterior.marginals[v].tolist(),  # type: ignore[arg-type]
                                  strict=True)) for v in chosen},
    }
    if want_map:
        out["map"] = {v: model[v].states[int(posterior.info["map"][v])]  # type: ignore[index]
                      for v in hidden}
    return out


def _check_variable(model: Any, var: str) -> None:
    if var not in model.nodes:
        raise UnknownName(f"network {model.name!r} has no variable {var!r}."
                          + suggest(var, model.nodes))


"""Data as cases of a one-case grounding: each data entry's leading axis is a case, then the
node's own layout (time axis for a chain, then its plates). Engines that keep a batch of
cases as a ``(cases, V)`` state on one grounding (``cd``'s minibatches, ``ais``'s per-case
log-likelihoods) read their data through ``data_cases``."""

from __future__ import annotations

from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest
from genppl.gibbs.grounding import FactorGraph
from genppl.pyro.program import bind_data


def data_cases(model: Model, graph: FactorGraph, data: dict[str, Any] | None, engine: str
               ) -> dict[str, torch.Tensor]:
    """Each data entry as state indices ``(cases, instances)`` in the block's instance order
    (a reversed chain's time axis in the order it runs), checked; ``engine`` names the
    caller in the messages."""
    if not data:
        raise ModelError(f"engine {engine!r} needs data: values of some variables of "
                         f"{model.name!r} ({sorted(graph.blocks)}), one case per entry of a "
                         "leading axis.")
    out: dict[str, torch.Tensor] = {}
    for name, value in bind_data(model, data).items():
        block = graph.blocks.get(name)
        if block is None:
            raise ModelError(f"engine {engine!r}: data names {name!r}, which is not a finite "
                             f"variable of {model.name!r}." + suggest(name, graph.blocks))
        layout = block.layout
        if value.dim() != 1 + len(layout) or tuple(value.shape[1:]) != layout:
            raise ModelError(f"engine {engine!r}: data for {name!r} has shape "
                             f"{tuple(value.shape)}; it needs (cases, "
                             f"{', '.join(map(str, layout))}): a leading axis of cases, then "
                             "the node's time axis and plates.")
        if block.reverse:
            value = value.flip(1)
        match = value.reshape(len(value), -1, 1) == block.states.to(value.dtype)
        if not bool(match.any(-1).all()):
            raise ModelError(f"engine {engine!r}: data for {name!r} has values outside its "
                             f"states {block.states.tolist()}.")
        out[name] = match.long().argmax(-1)
    counts = {len(v) for v in out.values()}
    if len(counts) > 1:
        raise ModelError(f"engine {engine!r}: the data entries have different numbers of "
                         f"cases { {n: len(v) for n, v in out.items()} }; give every case of "
                         "each.")
    return out

"""The tables of a Bayesian network (a model made only of CPT latents outside plates and
chains), kept between queries: they do not depend on the evidence, and re-deriving them (and
what the elimination derives from them) costs more than a query of the network.

A ``NetworkTables`` is the object that keeps them, for one model: it tabulates the network
once and again only when a node, a table, the device or the dtype changed, and keeps the
indicator table of each (variable, state) that single-case evidence has named, so that a
query repeating one reuses the table and what the elimination derived from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.dsl.tables import CPT
from genppl.exact.contract import Factor, indicator_factor
from genppl.pyro.program import default_tensor_context
from genppl.tabulation.evidence import evidence_match
from genppl.tabulation.tabulator import Tabulator
from genppl.tabulation.uses import TabulatedModel


def is_network(model: Model) -> bool:
    """Whether ``model`` is made only of CPT latents outside plates and chains."""
    return not model.plates and not model.chains and all(
        n.kind == "latent" and isinstance(n.fn, CPT) and not n.plates and n.chain is None
        for n in model.nodes.values())


class NetworkTables:
    """The evidence-free tables of one Bayesian network, what they were made from (nothing
    that refers back to the model, which would keep it alive), and the indicator tables of
    single-case evidence named so far."""

    def __init__(self) -> None:
        self._made_from: tuple[Any, ...] | None = None
        self._tables: tuple[torch.Tensor, ...] = ()
        self._factors: TabulatedModel | None = None
        self._indicators: dict[tuple[str, Any], Factor] = {}

    def with_evidence(self, model: Model, data: Mapping[str, torch.Tensor]) -> TabulatedModel:
        """The network's tables (``model``'s, which ``is_network``), made afresh if it
        changed, with an indicator table for each evidence variable in ``data``."""
        fm = self._current(model)
        evidence = []
        for name, value in data.items():
            key = (name, value.item()) if value.dim() == 0 else None
            f = self._indicators.get(key) if key is not None else None
            if f is None:
                match = evidence_match(model.nodes[name], value, fm.variables[name].states)
                f = indicator_factor(name, match, like=fm.factors[0][1].log_table)
                if key is not None:
                    self._indicators[key] = f
            evidence.append((frozenset(), f))
        return TabulatedModel([*fm.factors, *evidence], fm.chains, fm.variables, fm.plates,
                              fm.sizes, fm.latents, fm.nested)

    def _current(self, model: Model) -> TabulatedModel:
        nodes = tuple(model.nodes.values())
        made_from = (model.device, model.dtype, *((n.name, id(n)) for n in nodes))
        tables = tuple(n.fn.log_table() for n in nodes)  # type: ignore[union-attr]
        if self._factors is not None and self._made_from == made_from and all(
                a is b for a, b in zip(self._tables, tables, strict=True)):
            return self._factors
        with default_tensor_context(model.device, model.dtype), torch.no_grad():
            self._factors = Tabulator(model, {}, False, {}).run()
        self._made_from, self._tables, self._indicators = made_from, tables, {}
        return self._factors


def network_tables(model: Model) -> NetworkTables:
    """The ``NetworkTables`` ``model`` keeps (``Model.derived``): it lives as long as the
    model does and is dropped when the declaration changes."""
    return model.derived(NetworkTables)

"""The record-and-replay of a tabulation (``Tabulation``): what the reference tabulator
derived from the model's structure and the data, per table (a ``Recipe``), and the replay
that only calls the factories again on the recorded grids and lays their log-probabilities
out. Each replayed result is checked against what the record derived from it; a difference
raises ``Stale``, and the caller tabulates afresh."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from genppl.dsl.model import Model
from genppl.dsl.nodes import Node
from genppl.dsl.tables import CountingMeasure
from genppl.exact.contract import Factor
from genppl.exact.factors import ChainBlock, MaskedFactor, Nesting, Variable
from genppl.library_internals import version
from genppl.tabulation.factories import (
    Args,
    call_factory,
    evaluate,
    form,
    log_prob_and_mask,
    shaped_states,
    sums_to_one,
    support_of,
)
from genppl.tabulation.placement import Target, put
from genppl.tabulation.uses import Placed, Retable, TabulatedModel, Use, retabled


class Stale(Exception):
    """A replayed factory returned something the record does not describe."""


@dataclass
class Plan:
    """What ``Tabulation`` recorded, and what it was recorded for: the model's structure
    (its node, plate and chain objects, device and dtype: kept, so compared by identity),
    the data tensors' versions, and the names, shapes, dtypes and devices of the params,
    modules and point values (``signature``)."""

    structure: tuple[Any, ...]
    versions: tuple[tuple[torch.Tensor, int], ...]
    signature: tuple[Any, ...]
    globals: tuple[Node, ...]
    recipes: list[Recipe | Const]
    variables: dict[str, Variable]
    plates: tuple[str, ...]
    sizes: dict[str, int]
    chains: tuple[tuple[str, int, tuple[str, ...], bool], ...]
    latents: list[str]
    nested: dict[str, Nesting]

    def current(self, model: Model) -> bool:
        """Whether the model's structure and the data are those recorded."""
        now = structure(model)
        return (len(now) == len(self.structure)
                and all(map(operator.is_, now, self.structure))
                and all(version(t) == v for t, v in self.versions))

    def replay(self, fixed: Mapping[str, Any], track: bool, grad: bool,
               retable: Retable | None = None) -> TabulatedModel:
        """The tables at new ``fixed`` values (params, modules, point values); ``Stale``
        when a factory's result differs from what the record derived from it."""
        factors: list[tuple[frozenset[str], Factor]] = []
        chains = {name: ChainBlock(name, length, plates, reverse)
                  for name, length, plates, reverse in self.chains}
        uses: list[Use] = []
        for r in self.recipes:
            if type(r) is Const:
                put(factors, chains, r.target, r.node, r.factor)
            else:
                r.make(fixed, track, grad, uses, factors, chains, retable)
        return TabulatedModel(factors, list(chains.values()), dict(self.variables),
                              self.plates, dict(self.sizes), list(self.latents),
                              dict(self.nested), uses)


def structure(model: Model) -> tuple[Any, ...]:
    """What a record depends on in the model: its device and dtype, and its node, plate and
    chain objects (compared by identity: a redeclared node is a new one)."""
    return (model.device, model.dtype, *model.nodes.values(), None, *model.plates.values(),
            None, *model.chains.values())


def signature(fixed: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the structure of a tabulation may depend on in the params, modules and point
    values: their names, and each tensor's shape, dtype and device (a module's identity)."""
    def of(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return (tuple(v.shape), v.dtype, v.device)
        return id(v) if isinstance(v, torch.nn.Module) else type(v)
    return tuple(sorted((k, of(v)) for k, v in fixed.items()))


class Const(NamedTuple):
    """A table that depends on the data only (evidence indicators), kept as made."""

    node: Node
    factor: Factor
    target: Target


class Recipe:
    """One node table as the reference made it, and what remaking it with other values
    needs (``make``): the factory, its arguments' sources, the tensor its distribution is
    evaluated at (a latent's grid of states, an observed node's laid-out data), the
    table's shape before and after layout, its variables, child link and target. What the
    reference derived from the factory's result beyond its values is checked on each
    remake (see ``Tabulation``); a difference raises ``Stale``."""

    __slots__ = ("args", "batch", "child", "events", "fn", "form", "full", "kind", "linked",
                 "mask", "node", "replaced", "shape", "states", "table", "target", "value",
                 "vars")

    def __init__(self, kind: str, node: Node, fn: Any, args: Args,
                 value: torch.Tensor | None, table: torch.Tensor, f: Factor, target: Target,
                 result: Any = None, replaced: Use | None = None) -> None:
        self.kind, self.node, self.fn, self.args, self.value = kind, node, fn, args, value
        # A table the last call's ``retable`` replaced: its use, and the factor's mask.
        self.replaced = replaced
        self.mask = f.mask if isinstance(f, MaskedFactor) else None
        self.target, self.vars, self.child = target, f.vars, f.child
        # Whether ``child`` is the factory's table's link (a replaced table has none).
        self.linked = replaced is None
        self.shape, self.full = table.shape, f.log_table.shape
        self.form = form(result) if kind in ("latent", "observed") else None
        # Kept: a CPT's log table (a set_table makes a new one), and a counting measure's,
        # which is 0 whatever its logits (only its batch shape can change).
        counting = self.form == (CountingMeasure, None)
        self.table = table if kind == "cpt" or counting else None
        self.batch = result.batch_shape if counting else None
        self.states = shaped_states(result) if kind == "latent" else None
        self.events = len(result.event_shape) if kind == "observed" else None

    def make(self, fixed: Mapping[str, Any], track: bool, grad: bool, uses: list[Use],
             factors: list[tuple[frozenset[str], Factor]], chains: dict[str, ChainBlock],
             retable: Retable | None = None) -> None:
        """Remake the table at ``fixed`` and add it to ``factors`` or ``chains``."""
        if track and retable is not None and self.replaced is not None:
            last = self.replaced
            use = Use(self.node, self.fn, last.args, last.distribution, last.table, last.value)
            if retabled(use, retable):  # see ``Retable``: no factory call
                self.replaced = use
                uses.append(use)
                use.placed = self._add(use.table, None, self.mask, track, grad, factors,
                                       chains)
                return
        kind, child, mask, d = self.kind, self.child, None, None
        args: dict[str, Any] = {}
        if kind == "cpt":
            table = self.fn.log_table()
            if table is not self.table:  # set_table checks rows to 1e-6, the link to rounding
                child = self.vars[-1] if sums_to_one(table) else None
        else:
            args = evaluate(self.args, fixed)
            d = call_factory(self.node, self.fn, args)
            if kind == "factor":
                table = torch.as_tensor(d)
                if table.shape != self.shape:
                    raise Stale
                put(factors, chains, self.target, self.node,
                     Factor(self.vars, table.expand(self.full)))
                return
            if form(d) != self.form:
                raise Stale
            if kind == "latent":
                if self.states is None:
                    if not torch.equal(support_of(self.node, d), self.value.reshape(-1)):
                        raise Stale
                elif shaped_states(d) != self.states:
                    raise Stale
                if self.batch is not None and d.batch_shape == self.batch:
                    table = self.table
                else:
                    table, mask = log_prob_and_mask(d, self.value)
                    table = table.movedim(0, -1)
                if mask is not None:
                    mask = mask.unsqueeze(-1)
                elif self.states is None or not self.linked:
                    child = self.vars[-1] if sums_to_one(table) else None
                    if not self.linked:
                        self.child, self.linked = child, True
            else:
                if len(d.event_shape) != self.events:
                    raise Stale
                table, mask = log_prob_and_mask(d, self.value)
        if table.shape != self.shape:
            raise Stale
        self.replaced = None
        if track:
            use = Use(self.node, self.fn, args, d, table,
                      self.value if kind == "observed" else None)
            if retabled(use, retable):
                child, self.replaced = None, use
            table = use.table
            uses.append(use)
        placed = self._add(table, child, mask, track, grad, factors, chains)
        if track:
            uses[-1].placed = placed

    def _add(self, table: torch.Tensor, child: str | None, mask: torch.Tensor | None,
             track: bool, grad: bool, factors: list[tuple[frozenset[str], Factor]],
             chains: dict[str, ChainBlock]) -> list[Placed]:
        with torch.set_grad_enabled(track or grad):
            full = table.expand(self.full)
            if mask is None:
                f = Factor(self.vars, full, child=child)
            else:
                f = MaskedFactor(self.vars, full, torch.broadcast_to(
                    mask, torch.broadcast_shapes(mask.shape, full.shape)))
                self.mask = f.mask
            return put(factors, chains, self.target, self.node, f)

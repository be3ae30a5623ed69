"""The reference tabulation: a DSL model turned into log-space factors for the elimination
engine (``genppl.exact``), re-deriving everything from the model and the data.

Each random node becomes one table over its finite latent parents and itself, by calling its
factory once on a grid of parent states; observed nodes contribute a table over their
parents at the observed value (continuous observations included); factor nodes a table over
their scope. Deterministic nodes are evaluated on the same grid, so a child reading them
depends on the latents they read.

Tables are laid out as ``genppl.exact.factors`` describes: batch axes first (the chain's time
axis, then one axis per plate of the model, size 1 where the node is not in that plate -- the
compact data layout with absent plates kept as singleton axes; or evidence cases for models
without plates or chains), then one axis per variable. Factories therefore see parent
values whose leading axes are batch and whose trailing axes (before any event axes) are the
states of the latents they read, and must broadcast like any Pyro factory under enumeration.

Chain nodes are tabulated for all steps at once: the chain index argument is a tensor of
steps along the time axis, and a node that reads ``z_prev`` reads the variable ``z@prev``.

A ragged plate (a document's words) is a nested plate of the factor model
(``genppl.exact.factors.Nesting``): its tables lie along its own flat axis, and a word's
factory reads the document's data at the word's document (a document's finite latent needs
nothing: its grid of states is the same for every document).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.dsl.nodes import Node, Parent
from genppl.dsl.tables import CPT
from genppl.errors import ModelError
from genppl.exact.contract import Factor, indicator_factor
from genppl.exact.factors import PREV, ChainBlock, MaskedFactor, Nesting, Variable
from genppl.pyro.layout import plate_dims, ragged_index, resolve_sizes
from genppl.pyro.program import bind_data, check_support
from genppl.tabulation.evidence import evidence_match, state_index
from genppl.tabulation.factories import (
    Args,
    Derived,
    Fixed,
    call_factory,
    evaluate,
    global_value,
    log_prob_and_mask,
    sums_to_one,
    support_of,
)
from genppl.tabulation.placement import GLOBAL, Target, put
from genppl.tabulation.replay import Const, Recipe
from genppl.tabulation.uses import Placed, Retable, TabulatedModel, Use, retabled


def model_data(model: Model, data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The data as tensors on the model's device (``as_data``), names checked, a ragged
    plate's sizes given."""
    data = bind_data(model, data)
    unknown = [k for k in data if k not in model.nodes
               or model.nodes[k].kind not in ("latent", "observed", "input")]
    if unknown:
        raise ModelError(f"data names {unknown[0]!r}, which is not a random node or input of "
                         f"{model.name!r}.")
    for spec in model.plates.values():
        if spec.ragged and spec.sizes not in data:
            raise ModelError(f"ragged plate {spec.name!r} ({spec.declared_at}) has no sizes: "
                             f"pass {spec.sizes}=... (each {spec.parent!r} entry's number of "
                             "copies).")
    return data


class Tabulator:
    """The reference tabulation (see ``model_factors``). With ``recipes`` (a list), it also
    records every table it makes as a ``Recipe`` (or a ``Const`` for evidence), for
    ``Tabulation`` to replay with other values."""

    def __init__(self, model: Model, data: dict[str, torch.Tensor], track: bool,
                 point: Mapping[str, torch.Tensor], grad: bool = False,
                 recipes: list[Recipe | Const] | None = None,
                 retable: Retable | None = None) -> None:
        self.model = model
        self.retable = retable
        self.replaced: Use | None = None  # the last table ``retable`` replaced (``_emit``)
        self.data = data
        self.track = track
        self.grad = grad
        self.recipes = recipes
        self.uses: list[Use] = []
        dims = plate_dims(model)
        self.plates = tuple(sorted(model.plates, key=lambda p: dims[p]))
        self.sizes, self.lengths = resolve_sizes(model, data)
        self.nested = {p: Nesting(model.plates[p].parent, entries)  # type: ignore[arg-type]
                       for p, entries in ragged_index(model, data, self.sizes).items()}
        self.variables: dict[str, Variable] = {}
        self.event_dims: dict[str, int] = {}  # observed node -> event dims of its data
        self.fixed: dict[str, Any] = dict(point)
        self.factors: list[tuple[frozenset[str], Factor]] = []
        self.chains = {c: ChainBlock(c, self.lengths[c], spec.plates, spec.reverse)
                       for c, spec in model.chains.items()}

    def run(self) -> TabulatedModel:
        for node in self.model.nodes.values():
            if node.kind in ("param", "module"):
                self.fixed[node.name] = global_value(self.model, node, self.grad)
            elif node.name in self.fixed:
                continue
            elif node.kind in ("latent", "observed", "factor"):
                if node.chain is None:
                    self._tabulate(node, node.fn, node.parents, None, GLOBAL)
                else:
                    self._tabulate_chain(node)
        latents = [v.node for name, v in self.variables.items()]
        return TabulatedModel(self.factors, list(self.chains.values()), self.variables,
                              self.plates, {p: self.sizes[p] for p in self.plates}, latents,
                              self.nested, self.uses)

    # ----------------------------------------------------------------- where tables go
    def _add(self, target: Target, node: Node, f: Factor) -> list[Placed]:
        return put(self.factors, self.chains, target, node, f)

    def _tabulate_chain(self, node: Node) -> None:
        block = self.chains[node.chain]  # type: ignore[index]
        order = torch.arange(block.length, device=self.model.device)
        if block.reverse:
            order = order.flip(0)
        first, rest = order[:1], order[1:]
        if node.init_fn is not None:
            self._tabulate(node, node.init_fn, node.init_parents, (first, None),
                           ("first", block.name))
            if len(rest):
                self._tabulate(node, node.fn, node.parents, (rest, order[:-1]),
                               ("rest", block.name))
            return
        self._tabulate(node, node.fn, node.parents, (order, None), ("split", block.name))

    # ----------------------------------------------------------------- tabulation
    def _tabulate(self, node: Node, fn: Any, parents: tuple[Parent, ...],
                  steps: tuple[torch.Tensor, torch.Tensor | None] | None,
                  target: Target) -> None:
        scope = self._scope(node, parents, steps)
        if node.kind == "latent" and isinstance(fn, CPT) and scope == fn.parents \
                and not node.plates and steps is None:
            support = torch.arange(fn.table.shape[-1], device=self.model.device)
            self._new_variable(node, support)
            table = fn.log_table()
            f = self._emit(node, fn, {}, None, table, None, target, (*scope, node.name), None,
                           fn.table.shape[-1:])
            self._record("cpt", node, fn, (), None, table, f, target)
            self._evidence(node, support, steps, None, table, target)
            return
        plan = self._arg_plan(node, parents, scope, steps, node)
        args = evaluate(plan, self.fixed)
        result = call_factory(node, fn, args)
        lead = self._batch_shape(node, steps)
        if node.kind == "factor":
            table = torch.as_tensor(result)
            f = Factor(scope, self._expand(table, lead, scope, ()))
            self._add(target, node, f)
            self._record("factor", node, fn, plan, None, table, f, target)
            return
        if node.kind == "latent":
            var = node.name
            support = support_of(node, result)
            if var not in self.variables:
                self._new_variable(node, support)
            elif not torch.equal(self.variables[var].states, support):
                raise ModelError(f"latent {var!r} ({node.declared_at}): its first step and later "
                                 "steps have different supports; a chain state needs one.")
            dims = len(result.batch_shape)
            grid = support.reshape(-1, *([1] * dims))
            table, mask = log_prob_and_mask(result, grid)
            table = table.movedim(0, -1)
            f = self._emit(node, fn, args, result, table, None, target, (*scope, var), lead,
                           support.shape, None if mask is None else mask.unsqueeze(-1))
            self._record("latent", node, fn, plan, grid, table, f, target, result)
            self._evidence(node, support, steps, lead, table, target)
            return
        value = self.data.get(node.name)
        if value is None:
            raise ModelError(f"observed node {node.name!r} ({node.declared_at}) has no data; "
                             f"pass {node.name}=...")
        events = len(result.event_shape)
        self.event_dims[node.name] = events
        if isinstance(fn, CPT):
            value = state_index(node, value, torch.arange(fn.table.shape[-1],
                                                           device=value.device))
        check_support(node, result, value)  # (the data as given: its indices are the user's)
        value = self._layout(node, value, events, len(scope), steps)
        table, mask = log_prob_and_mask(result, value)
        f = self._emit(node, fn, args, result, table, value, target, scope, lead, (), mask)
        self._record("observed", node, fn, plan, value, table, f, target, result)

    def _record(self, kind: str, node: Node, fn: Any, plan: Args, value: torch.Tensor | None,
                table: torch.Tensor, f: Factor, target: Target, result: Any = None) -> None:
        if self.recipes is not None:
            self.recipes.append(Recipe(kind, node, fn, plan, value, table, f, target, result,
                                        self.replaced if kind in ("latent", "observed") else None))

    def _evidence(self, node: Node, support: torch.Tensor,
                  steps: tuple[torch.Tensor, Any] | None, lead: tuple[int, ...] | None,
                  like: torch.Tensor, target: Target) -> None:
        """Data given for a latent is evidence: an indicator table of its observed state
        (every state where the entry is NaN: unobserved, e.g. the missing labels of
        semi-supervised learning)."""
        value = self.data.get(node.name)
        if value is None:
            return
        match = evidence_match(node, self._layout(node, value, 0, 0, steps), support)
        indicator = indicator_factor(node.name, match, like=like).log_table
        f = Factor((node.name,), self._expand(indicator, lead, (), support.shape))
        self._add(target, node, f)
        if self.recipes is not None:
            self.recipes.append(Const(node, f, target))

    def _emit(self, node: Node, fn: Any, args: dict[str, Any], distribution: Any,
              table: torch.Tensor, value: torch.Tensor | None, target: Target,
              variables: tuple[str, ...], lead: tuple[int, ...] | None,
              own: torch.Size | tuple[int, ...], mask: torch.Tensor | None = None) -> Factor:
        """Hand a node's table to ``target``, as a tracked leaf when EM asks for it. A masked
        table's leaf is its unmasked log-probabilities: masked entries then get no gradient,
        so they add nothing to EM's expected counts."""
        replaced = False
        self.replaced = None
        if self.track:
            use = Use(node, fn, args, distribution, table, value)
            replaced = retabled(use, self.retable)
            self.replaced = use if replaced else None
            table = use.table
            self.uses.append(use)
        scope = variables[:-1] if own else variables
        child = variables[-1] if own and mask is None and not replaced \
            and sums_to_one(table) else None
        with torch.set_grad_enabled(self.track or self.grad):
            full = self._expand(table, lead, scope, own, full_batch=node.chain is None)
            f = Factor(variables, full, child=child) if mask is None else MaskedFactor(
                variables, full, torch.broadcast_to(mask, torch.broadcast_shapes(
                    mask.shape, full.shape)))
            placed = self._add(target, node, f)  # a mask applied here stays differentiable
        if self.track:
            self.uses[-1].placed = placed
        return f

    def _new_variable(self, node: Node, support: torch.Tensor) -> None:
        self.variables[node.name] = Variable(node.name, support, node.plates, node.chain)

    def _batch_shape(self, node: Node, steps: tuple[torch.Tensor, Any] | None
                     ) -> tuple[int, ...] | None:
        """The full batch shape a node's table must have (None: evidence cases decide)."""
        if not self.plates and steps is None:
            return None
        plates = tuple(self.sizes[p] if p in node.layout_plates else 1 for p in self.plates)
        return (len(steps[0]), *plates) if steps is not None else plates

    def _expand(self, table: torch.Tensor, lead: tuple[int, ...] | None,
                scope: tuple[str, ...], own: torch.Size | tuple[int, ...],
                full_batch: bool = True) -> torch.Tensor:
        """Broadcast a table to its full batch shape and every variable's states.

        ``full_batch=False`` keeps batch axes the table does not vary along at size 1 (its
        variable axes are still full): chain tables, which the scan compacts anyway, so that
        a transition shared by every step never becomes a (T, N, K, K) tensor -- nor does
        its gradient.
        """
        cards = [len(self.variables[v.removesuffix(PREV)].states) for v in scope]
        if own:
            cards.append(own[0])
        if lead is None:
            rank = max(table.dim(), len(cards))
            table = table.reshape((1,) * (rank - table.dim()) + tuple(table.shape))
            lead = tuple(table.shape[: rank - len(cards)])
        elif table.dim() > len(lead) + len(cards):
            raise ModelError(f"a table of shape {tuple(table.shape)} has more axes than the "
                             f"batch {lead} and variables {scope}: check the factory's shapes.")
        try:
            full = table.expand((*lead, *cards))
            if full_batch:
                return full
            table = table.reshape((1,) * (full.dim() - table.dim()) + tuple(table.shape))
            return table.expand((*table.shape[: len(lead)], *cards))
        except RuntimeError as e:
            raise ModelError(f"a table of shape {tuple(table.shape)} does not fit batch {lead} "
                             f"and variables {scope} with {cards} states: {e}") from e

    def _scope(self, node: Node, parents: tuple[Parent, ...],
               steps: tuple[torch.Tensor, Any] | None) -> tuple[str, ...]:
        """The latent variables a factory reads, directly or through deterministic nodes."""
        scope: dict[str, None] = {}
        for p in parents:
            parent = self.model.nodes.get(p.node) if p.node is not None else None
            if parent is None or parent.name in self.fixed:
                continue
            if parent.kind == "latent":
                if parent.chain is not None and node.chain != parent.chain:
                    raise ModelError(f"node {node.name!r} ({node.declared_at}) reads chain node "
                                     f"{parent.name!r} from outside its chain; engine 'exact' "
                                     "eliminates a chain as one block. Use engine='enum'.")
                if parent.name not in self.variables:
                    raise ModelError(f"node {node.name!r} ({node.declared_at}) reads "
                                     f"{parent.name!r}, whose support is not finite; engine "
                                     "'exact' needs every latent finite. Use 'nuts' or 'svi'.")
                scope[parent.name + (PREV if p.lag else "")] = None
            elif parent.kind == "deterministic":
                if p.lag:
                    raise ModelError(f"node {node.name!r} ({node.declared_at}) reads "
                                     f"deterministic {parent.name!r} at the previous step; "
                                     "engine 'exact' reads deterministic nodes at lag 0 only.")
                scope.update(dict.fromkeys(self._scope(parent, parent.parents, steps)))
        return tuple(scope)

    def _arg_plan(self, node: Node, parents: tuple[Parent, ...], scope: tuple[str, ...],
                  steps: tuple[torch.Tensor, torch.Tensor | None] | None, reader: Node
                  ) -> Args:
        """Where each argument of a factory comes from (see ``evaluate``): the grids of
        latent states, data and chain steps are fixed tensors; params, modules and point
        values are read by name; deterministic parents are called on the same grid.
        ``reader`` is the node whose table this is: in a ragged plate, it reads its
        document's data at each of its copies."""
        args: list[tuple[str, Any]] = []
        for p in parents:
            if p.node is None:  # the chain index, along the time axis
                assert steps is not None
                args.append((p.arg, steps[0].reshape(
                    -1, *([1] * (len(self.plates) + len(scope))))))
                continue
            parent = self.model.nodes[p.node]
            at = steps if steps is None or not p.lag else (steps[1], None)
            if parent.name in self.fixed:  # params, modules, point-estimated latents
                self._check_point(reader, parent)
                args.append((p.arg, Fixed(parent.name)))
            elif parent.kind == "latent":
                var = parent.name + (PREV if p.lag else "")
                shape = [1] * len(scope)
                shape[scope.index(var)] = -1
                args.append((p.arg, self.variables[parent.name].states.reshape(shape)))
            elif parent.kind in ("observed", "input"):
                value = self.data.get(parent.name)
                if value is None:
                    raise ModelError(f"{parent.kind} {parent.name!r} ({parent.declared_at}) was "
                                     f"not given; pass {parent.name}=...")
                events = self.event_dims.get(parent.name, parent.event_dim)
                value = self._layout(parent, value, events, len(scope), at)
                args.append((p.arg, self._at_copies(reader, parent, value)))
            else:  # deterministic: evaluated on the same grid of states
                args.append((p.arg, Derived(parent, self._arg_plan(parent, parent.parents,
                                                                    scope, steps, reader))))
        return tuple(args)

    def _at_copies(self, reader: Node, node: Node, value: torch.Tensor) -> torch.Tensor:
        """``node``'s laid-out data as ``reader`` reads it: along the ragged plate's axis
        at each copy's entry when ``reader`` is in a ragged plate and ``node`` in its
        enclosing plate only (a word reads its document's value), else as it is."""
        outer = reader.flattened
        if outer is None or outer not in node.layout_plates:
            return value
        ragged = next(p for p in reader.plates if p in self.nested)
        axis, own = self.plates.index(outer), self.plates.index(ragged)  # (no chain here)
        return value.index_select(axis, self.nested[ragged].entries).transpose(axis, own)

    def _check_point(self, reader: Node, node: Node) -> None:
        """Point values of a ragged plate's enclosing plate are not read at the copies'
        entries: refused by name (a finite latent there is summed or sampled instead)."""
        if reader.flattened is not None and reader.flattened in node.plates \
                and node.kind == "latent":
            raise ModelError(
                f"node {reader.name!r} ({reader.declared_at}) reads {node.name!r} of plate "
                f"{reader.flattened!r} given as a point value, from a ragged plate; the "
                "tabulating engines read a document's values at its words only for data "
                "and finite latents. Declare it with one row per document outside the "
                "plates (the lowering genppl.dsl.ragged does for continuous latents), or "
                "use engine='svi'.")

    def _layout(self, node: Node, value: torch.Tensor, events: int, scope_len: int,
                steps: tuple[torch.Tensor, Any] | None) -> torch.Tensor:
        """Data in table layout: time, every model plate (1 where absent), cases for
        plate-free models, one singleton axis per variable in scope, then event axes."""
        lead = 0
        if node.chain is not None:
            if value.dim() == 0 or value.shape[0] != self.lengths[node.chain]:
                raise ModelError(f"data for chain node {node.name!r} ({node.declared_at}) needs "
                                 f"{self.lengths[node.chain]} steps on axis 0, got shape "
                                 f"{tuple(value.shape)}.")
            assert steps is not None
            value = value.index_select(0, steps[0])
            lead = 1
        plates = node.layout_plates
        extra = value.dim() - lead - len(plates) - events
        if extra < 0 or (extra and (self.plates or node.chain is not None)):
            axes = ", ".join(("time",) * lead + plates + ("event",))
            raise ModelError(f"data for {node.name!r} ({node.declared_at}) has shape "
                             f"{tuple(value.shape)}; its axes are: {axes}. (Extra leading axes "
                             "as evidence cases work only for models without plates or "
                             "chains; put the cases in a plate.)")
        shape = list(value.shape[:lead + extra])
        for axis, plate in enumerate(plates):
            size = value.shape[lead + axis]
            if size != self.sizes[plate]:
                raise ModelError(f"data for {node.name!r} ({node.declared_at}) has {size} entries "
                                 f"on the axis of plate {plate!r}, which has size "
                                 f"{self.sizes[plate]}.")
        shape += [self.sizes[p] if p in plates else 1 for p in self.plates]
        if [p for p in self.plates if p in plates] != list(plates):
            raise ModelError(f"node {node.name!r} ({node.declared_at}): plates {plates} are "
                             f"nested in an order other than the model's {self.plates}.")
        event_shape = value.shape[value.dim() - events:] if events else ()
        return value.reshape((*shape, *([1] * scope_len), *event_shape))

"""Turn a discrete DSL model into log-space factors for the elimination engine.

Each random node becomes one table over its finite latent parents and itself, by calling its
factory once on a grid of parent states; observed nodes contribute a table over their
parents at the observed value (continuous observations included); factor nodes a table over
their scope. Deterministic nodes are evaluated on the same grid, so a child reading them
depends on the latents they read.

Table layout: batch axes first, then one axis per variable. The batch axes are, in order,
the chain's time axis (chain nodes only), then one axis per plate of the model (outermost
first; size 1 where the node is not in that plate) -- the compact data layout with absent
plates kept as singleton axes. Models without plates or chains may instead give data with
extra leading axes: evidence cases, answered together. Factories therefore see parent
values whose leading axes are batch and whose trailing axes (before any event axes) are the
states of the latents they read, and must broadcast like any Pyro factory under enumeration.

Chain nodes are tabulated for all steps at once: the chain index argument is a tensor of
steps along the time axis, and a node that reads ``z_prev`` reads the variable ``z@prev``.

Engines that tabulate one model and data again and again with other continuous values or
params (contrastive divergence per update, NUTS with finite latents summed out per
leapfrog step, HMC-within-Gibbs per iteration) use ``Tabulation``: the first call records,
for every table, what the tabulation derived from the model's structure and the data
(plates and sizes, scopes, argument grids, data layouts, supports, evidence indicators,
the final shapes), and later calls only re-call the factories on the recorded grids and
lay their log-probabilities out. ``model_factors`` stays the reference, which re-derives
everything; the tests hold the two equal, invalidation included.
"""

from __future__ import annotations

import copy
import operator
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyro
import torch
from pyro.distributions.torch_distribution import MaskedDistribution

from genppl.distributions import exact_log_probs
from genppl.dsl.model import Model
from genppl.dsl.nodes import Node, Parent
from genppl.dsl.tables import CPT, CountingMeasure
from genppl.errors import ModelError
from genppl.exact.contract import Factor, indicator_factor
from genppl.exact.scan import compact
from genppl.pyro.layout import plate_dims, resolve_sizes
from genppl.pyro.program import as_data, bind_data, check_support, default_tensor_context

PREV = "@prev"  # suffix of a chain variable read at the previous step (no identifier has it)
#: A factor as it was placed in a ``FactorModel``, with ``(chain, first step, number of
#: steps)`` its time axis stands for when it is a chain's (None otherwise).
Placed = tuple[Factor, tuple[str, int, int] | None]


@dataclass
class Variable:
    """A latent's support and where it repeats (its plates and chain)."""

    node: str
    states: torch.Tensor
    plates: tuple[str, ...]
    chain: str | None


@dataclass(frozen=True)
class MaskedFactor(Factor):
    """A table of a masked distribution (``d.mask(m)``): log-probabilities where ``mask``
    holds, log 1 elsewhere. Kept apart from its mask so that a chain can skip masked steps
    (padding of shorter sequences) instead of materialising a transition table per step and
    sequence; everywhere else it is materialised."""

    mask: torch.Tensor

    def materialise(self) -> Factor:
        return Factor(self.vars, torch.where(self.mask, self.log_table,
                                             self.log_table.new_zeros(())))


def plain(f: Factor) -> Factor:
    """``f`` with any mask applied."""
    return f.materialise() if isinstance(f, MaskedFactor) else f


@dataclass
class ChainBlock:
    """A chain's factors, time axis first, in execution order (``reverse`` chains flipped).

    ``first`` holds the tables of the first executed step (time axis of size 1), ``rest``
    those of the later steps (time axis ``length - 1``, or 1 when the same at every step).
    """

    name: str
    length: int
    plates: tuple[str, ...]
    reverse: bool
    first: list[Factor] = field(default_factory=list)
    rest: list[Factor] = field(default_factory=list)


@dataclass
class Use:
    """One tabulated node table, kept for EM: the distribution the factory returned and the
    arguments it got (to probe which params it reads), and ``table``, the log table before
    broadcasting, whose gradient of log Z is the node's family marginal (for an observed
    node: the posterior of its parents' states, per data entry; ``value`` is its data)."""

    node: Node
    fn: Any
    args: dict[str, Any]
    distribution: Any
    table: torch.Tensor
    value: torch.Tensor | None
    #: Where the table went: the factors made of it (masked, broadcast, a chain's steps
    #: split), each with the chain steps it stands for (see ``Placed``).
    placed: list[Placed] = field(default_factory=list)

    @property
    def parents(self) -> tuple[Parent, ...]:
        """The parents the factory ``fn`` reads (a chain's first step has its own)."""
        node = self.node
        first = self.fn is node.init_fn and node.init_fn is not None
        return node.init_parents if first else node.parents

    @property
    def base(self) -> Any:
        """The distribution the factory returned, under any ``.mask(...)``."""
        d = self.distribution
        return d.base_dist if isinstance(d, MaskedDistribution) else d


#: A replacement of tracked tables (CAVI puts expected log-probabilities in place of the
#: factories' ones): called with each tracked ``Use``, it returns the table to use instead,
#: of the same shape, or None to keep the factory's. When ``Tabulation`` replays a table
#: that was replaced at the previous call, it does not call the factory again (its values
#: would be thrown away): the callback gets the recorded call's ``Use`` (its arguments and
#: distribution, and the table it returned last) and the recorded mask is kept.
Retable = Callable[[Use], "torch.Tensor | None"]


def _retabled(use: Use, retable: Retable | None) -> bool:
    """Put ``retable``'s table, if it gives one, in ``use`` as the tracked leaf; whether it
    did (a replaced table is not a normalised child table)."""
    new = None if retable is None else retable(use)
    if new is not None and new.shape != use.table.shape:
        raise ModelError(f"node {use.node.name!r} ({use.node.declared_at}): a replacement "
                         f"table has shape {tuple(new.shape)}, the tabulation's "
                         f"{tuple(use.table.shape)}.")
    use.table = (use.table if new is None else new).detach().requires_grad_()
    return new is not None


@dataclass
class FactorModel:
    """The factors of a model under given data.

    ``factors`` pairs each non-chain table with its plate set; ``batch`` is the shape of the
    batch axes of non-chain tables (plate sizes, or evidence cases for plate-free models).
    """

    factors: list[tuple[frozenset[str], Factor]]
    chains: list[ChainBlock]
    variables: dict[str, Variable]
    plates: tuple[str, ...]
    sizes: dict[str, int]
    latents: list[str]
    uses: list[Use] = field(default_factory=list)

    def cases(self) -> tuple[int, ...]:
        """Plate-free models: the broadcast batch shape of the tables (evidence cases)."""
        if self.plates:
            return ()
        return tuple(torch.broadcast_shapes(*(f.batch_shape for _, f in self.factors)))

    def leaf_shape(self, name: str, cases: tuple[int, ...]) -> tuple[int, ...]:
        """A latent's batch shape: evidence ``cases`` in plate-free models, else its
        chain's time axis (in the order the chain runs) and the model's plates (size 1
        where it is not in one)."""
        var = self.variables[name]
        if not self.plates and var.chain is None:
            return cases
        plates = tuple(self.sizes[p] if p in var.plates else 1 for p in self.plates)
        if var.chain is None:
            return plates
        length = next(b.length for b in self.chains if b.name == var.chain)
        return (length, *plates)


def model_factors(model: Model, data: Mapping[str, Any], *, track: bool = False,
                  point: Mapping[str, torch.Tensor] | None = None, grad: bool = False,
                  retable: Retable | None = None) -> FactorModel:
    """Tabulate every node of ``model`` given ``data`` (compact layout, see module doc).

    ``track=True`` makes every random node's table a differentiable leaf, recorded in
    ``uses`` with what produced it (for EM's expected sufficient statistics). ``point``
    fixes latents at values, read like params (EM's point-estimated continuous latents).
    ``grad=True`` keeps every table differentiable in the model's params (contrastive
    divergence follows gradients of log-potentials at sampled states). ``retable`` (with
    ``track=True``) replaces tracked tables (see ``Retable``).
    """
    if retable is not None and not track:
        raise ModelError("model_factors: retable= replaces tracked tables; pass track=True.")
    data = _as_data(model, data)
    if not track and not point and not grad and all(model.nodes[k].kind == "latent"
                                                    for k in data):
        network = _table_network(model)
        if network is not None:
            return _with_evidence(network, model, data)
    with default_tensor_context(model.device, model.dtype), torch.set_grad_enabled(grad):
        return _Tabulator(model, data, track, point or {}, grad, retable=retable).run()


def _as_data(model: Model, data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The data as tensors on the model's device (``as_data``), names checked."""
    data = bind_data(model, data)
    unknown = [k for k in data if k not in model.nodes
               or model.nodes[k].kind not in ("latent", "observed", "input")]
    if unknown:
        raise ModelError(f"data names {unknown[0]!r}, which is not a random node or input of "
                         f"{model.name!r}.")
    return data


class Tabulation:
    """``model_factors(model, data, ...)`` for many calls on one model and one data set
    with other params or ``point`` values: the engines that re-tabulate per step
    (contrastive divergence per update, NUTS with the finite latents summed out per
    leapfrog step, HMC-within-Gibbs per iteration). ``Tabulation(model, data)`` once, then
    ``tabulation(point=..., grad=..., track=...)`` per step, with ``model_factors``'s
    meaning and result (same variables, factor order, tables, masks, child links, chain
    blocks and uses).

    The first call runs the reference tabulation and records, per table, what it derived
    from the model's structure and the data -- plates and sizes, scopes, where each factory
    argument comes from (grids of latent states, laid-out data, chain steps), supports,
    evidence indicators, the tables' shapes -- so later calls only call the factories on
    those grids (and deterministic nodes on theirs) and lay their log-probabilities out:
    the structural work is most of a small model's tabulation.

    An object the engine holds rather than a cache inside ``model_factors``: the engine
    knows the model and data stay the same, the record lives exactly as long as the
    engine's run, and the reference function keeps no hidden state to invalidate.

    Invalidation. Before replaying, each call checks that the model has the same nodes,
    plates and chains on the same device and dtype, that no data tensor was edited in place
    (their version counters, as the model's Bayesian-network tables are kept), and that
    the params, modules and point values have the names, shapes, dtypes and devices of the
    record. A CPT given a new table (``set_table``) is read afresh. While replaying, what
    the record derived from a factory's result is checked against the new result: the
    table's shape, the kind of distribution (masked or not), a latent's number of states --
    or its whole support, for distributions other than Categorical, Bernoulli and counting
    measures, whose states follow from their shape -- and an observed node's event dims.
    Any difference, and the model is tabulated again by the reference and recorded anew.
    A latent's child link (its table sums to 1 over its states) is re-derived per call
    except for those three kinds of distribution, which are normalised by construction
    (a table of NaNs is the exception: the record keeps its link, the reference drops
    it). A counting measure's table is 0 whatever its logits: it is kept, its batch shape
    checked. Data other than tensors (arrays, lists) are copied here, so the data are the
    ones given; a factory's closure is not watched beyond the checks above.
    """

    def __init__(self, model: Model, data: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self._data = {k: v if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                      for k, v in (data or {}).items() if v is not None}
        self._plan: _Plan | None = None

    def __getstate__(self) -> dict[str, Any]:  # the record holds factories: made anew
        return {**self.__dict__, "_plan": None}

    def __call__(self, *, point: Mapping[str, Any] | None = None, grad: bool = False,
                 track: bool = False, retable: Retable | None = None) -> FactorModel:
        model, point = self.model, point or {}
        if retable is not None and not track:
            raise ModelError("Tabulation: retable= replaces tracked tables; pass track=True.")
        if not (track or point or grad) and all(
                getattr(model.nodes.get(k), "kind", None) == "latent" for k in self._data) \
                and _table_network(model) is not None:
            return model_factors(model, self._data)  # kept with the model already
        plan = self._plan
        with default_tensor_context(model.device, model.dtype), torch.set_grad_enabled(grad):
            if plan is not None and plan.current(model):
                fixed = dict(point)
                for node in plan.globals:
                    fixed[node.name] = _global(model, node, grad)
                if _signature(fixed) == plan.signature:
                    try:
                        return plan.replay(fixed, track, grad, retable)
                    except _Stale:
                        pass
            self._plan = None
            data = _as_data(model, self._data)
            recipes: list[_Recipe | _Const] = []
            tab = _Tabulator(model, data, track, point, grad, recipes, retable)
            fm = tab.run()
        self._plan = _Plan(
            structure=_structure(model),
            versions=tuple((t, _version(t)) for t in self._data.values()
                           if isinstance(t, torch.Tensor)),
            signature=_signature(tab.fixed),
            globals=tuple(n for n in model.nodes.values() if n.kind in ("param", "module")),
            recipes=recipes, variables=fm.variables, plates=fm.plates, sizes=fm.sizes,
            chains=tuple((b.name, b.length, b.plates, b.reverse) for b in fm.chains),
            latents=fm.latents)
        return fm


class _Stale(Exception):
    """A replayed factory returned something the record does not describe."""


@dataclass
class _Plan:
    """What ``Tabulation`` recorded, and what it was recorded for: the model's structure
    (its node, plate and chain objects, device and dtype: kept, so compared by identity),
    the data tensors' versions, and the names, shapes, dtypes and devices of the params,
    modules and point values (``_signature``)."""

    structure: tuple[Any, ...]
    versions: tuple[tuple[torch.Tensor, int], ...]
    signature: tuple[Any, ...]
    globals: tuple[Node, ...]
    recipes: list[_Recipe | _Const]
    variables: dict[str, Variable]
    plates: tuple[str, ...]
    sizes: dict[str, int]
    chains: tuple[tuple[str, int, tuple[str, ...], bool], ...]
    latents: list[str]

    def current(self, model: Model) -> bool:
        """Whether the model's structure and the data are those recorded."""
        now = _structure(model)
        return (len(now) == len(self.structure)
                and all(map(operator.is_, now, self.structure))
                and all(_version(t) == v for t, v in self.versions))

    def replay(self, fixed: Mapping[str, Any], track: bool, grad: bool,
               retable: Retable | None = None) -> FactorModel:
        factors: list[tuple[frozenset[str], Factor]] = []
        chains = {name: ChainBlock(name, length, plates, reverse)
                  for name, length, plates, reverse in self.chains}
        uses: list[Use] = []
        for r in self.recipes:
            if type(r) is _Const:
                _put(factors, chains, r.target, r.node, r.factor)
            else:
                r.make(fixed, track, grad, uses, factors, chains, retable)
        return FactorModel(factors, list(chains.values()), dict(self.variables), self.plates,
                           dict(self.sizes), list(self.latents), uses)


def _structure(model: Model) -> tuple[Any, ...]:
    return (model.device, model.dtype, *model.nodes.values(), None, *model.plates.values(),
            None, *model.chains.values())


def _version(t: torch.Tensor) -> int:
    """A tensor's version counter (bumped by every in-place edit); inference tensors, which
    cannot be edited outside inference mode, have none."""
    return -1 if t.is_inference() else t._version


def _signature(fixed: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the structure of a tabulation may depend on in the params, modules and point
    values: their names, and each tensor's shape, dtype and device (a module's identity)."""
    def of(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return (tuple(v.shape), v.dtype, v.device)
        return id(v) if isinstance(v, torch.nn.Module) else type(v)
    return tuple(sorted((k, of(v)) for k, v in fixed.items()))


#: Where a table goes: ``("global", None)``, or ``("first" | "rest" | "split", chain)``.
_Target = tuple[str, "str | None"]
_GLOBAL: _Target = ("global", None)


def _put(factors: list[tuple[frozenset[str], Factor]], chains: dict[str, ChainBlock],
         target: _Target, node: Node, f: Factor) -> list[Placed]:
    """Add a node's table where it goes: a global table with its plate set; a chain's first
    step or later steps; ``split``: one table for all steps of a chain, whose first step is
    cut off (the rest stay one table when it is the same at every step). Returns the
    factors added, with the steps they stand for."""
    where, chain = target
    if where == "global":
        factors.append((frozenset(node.plates), plain(f)))
        return [(factors[-1][1], None)]
    block = chains[chain]  # type: ignore[index]
    if where == "first":
        block.first.append(plain(f))
        return [(block.first[-1], (block.name, 0, 1))]
    if where == "rest":
        block.rest.append(f)
        return [(f, (block.name, 1, block.length - 1))]
    f = plain(f)
    t = f.log_table
    block.first.append(Factor(f.vars, t[:1]))
    placed: list[Placed] = [(block.first[-1], (block.name, 0, 1))]
    if block.length > 1:
        block.rest.append(Factor(f.vars, t[1:] if t.shape[0] > 1 else t))
        placed.append((block.rest[-1], (block.name, 1, block.length - 1)))
    return placed


@dataclass(frozen=True)
class _Fixed:
    """A factory argument read by name from the params, modules and point values."""

    name: str


@dataclass(frozen=True)
class _Derived:
    """A factory argument that is a deterministic node, called on the reader's grid."""

    node: Node
    args: _Args


#: A factory's arguments: ``(name, source)``, the source a tensor (a grid of latent states,
#: laid-out data, chain steps), a ``_Fixed`` or a ``_Derived``.
_Args = tuple[tuple[str, Any], ...]


def _evaluate(plan: _Args, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """A factory's arguments from their sources at the current ``fixed`` values."""
    args: dict[str, Any] = {}
    for arg, source in plan:
        if type(source) is _Fixed:
            args[arg] = fixed[source.name]
        elif type(source) is _Derived:
            args[arg] = _call(source.node, source.node.fn, _evaluate(source.args, fixed))
        else:
            args[arg] = source
    return args


class _Const(NamedTuple):
    """A table that depends on the data only (evidence indicators), kept as made."""

    node: Node
    factor: Factor
    target: _Target


class _Recipe:
    """One node table as the reference made it, and what remaking it with other values
    needs (``make``): the factory, its arguments' sources, the tensor its distribution is
    evaluated at (a latent's grid of states, an observed node's laid-out data), the
    table's shape before and after layout, its variables, child link and target. What the
    reference derived from the factory's result beyond its values is checked on each
    remake (see ``Tabulation``); a difference raises ``_Stale``."""

    __slots__ = ("args", "batch", "child", "events", "fn", "form", "full", "kind", "linked",
                 "mask", "node", "replaced", "shape", "states", "table", "target", "value",
                 "vars")

    def __init__(self, kind: str, node: Node, fn: Any, args: _Args,
                 value: torch.Tensor | None, table: torch.Tensor, f: Factor, target: _Target,
                 result: Any = None, replaced: Use | None = None) -> None:
        self.kind, self.node, self.fn, self.args, self.value = kind, node, fn, args, value
        # A table the last call's ``retable`` replaced: its use, and the factor's mask.
        self.replaced = replaced
        self.mask = f.mask if isinstance(f, MaskedFactor) else None
        self.target, self.vars, self.child = target, f.vars, f.child
        # Whether ``child`` is the factory's table's link (a replaced table has none).
        self.linked = replaced is None
        self.shape, self.full = table.shape, f.log_table.shape
        self.form = _form(result) if kind in ("latent", "observed") else None
        # Kept: a CPT's log table (a set_table makes a new one), and a counting measure's,
        # which is 0 whatever its logits (only its batch shape can change).
        counting = self.form == (CountingMeasure, None)
        self.table = table if kind == "cpt" or counting else None
        self.batch = result.batch_shape if counting else None
        self.states = _states(result) if kind == "latent" else None
        self.events = len(result.event_shape) if kind == "observed" else None

    def make(self, fixed: Mapping[str, Any], track: bool, grad: bool, uses: list[Use],
             factors: list[tuple[frozenset[str], Factor]], chains: dict[str, ChainBlock],
             retable: Retable | None = None) -> None:
        """Remake the table at ``fixed`` and add it to ``factors`` or ``chains``."""
        if track and retable is not None and self.replaced is not None:
            last = self.replaced
            use = Use(self.node, self.fn, last.args, last.distribution, last.table, last.value)
            if _retabled(use, retable):  # see ``Retable``: no factory call
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
                child = self.vars[-1] if _sums_to_one(table) else None
        else:
            args = _evaluate(self.args, fixed)
            d = _call(self.node, self.fn, args)
            if kind == "factor":
                table = torch.as_tensor(d)
                if table.shape != self.shape:
                    raise _Stale
                _put(factors, chains, self.target, self.node,
                     Factor(self.vars, table.expand(self.full)))
                return
            if _form(d) != self.form:
                raise _Stale
            if kind == "latent":
                if self.states is None:
                    if not torch.equal(_support(self.node, d), self.value.reshape(-1)):
                        raise _Stale
                elif _states(d) != self.states:
                    raise _Stale
                if self.batch is not None and d.batch_shape == self.batch:
                    table = self.table
                else:
                    table, mask = _log_prob(d, self.value)
                    table = table.movedim(0, -1)
                if mask is not None:
                    mask = mask.unsqueeze(-1)
                elif self.states is None or not self.linked:
                    child = self.vars[-1] if _sums_to_one(table) else None
                    if not self.linked:
                        self.child, self.linked = child, True
            else:
                if len(d.event_shape) != self.events:
                    raise _Stale
                table, mask = _log_prob(d, self.value)
        if table.shape != self.shape:
            raise _Stale
        self.replaced = None
        if track:
            use = Use(self.node, self.fn, args, d, table,
                      self.value if kind == "observed" else None)
            if _retabled(use, retable):
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
            return _put(factors, chains, self.target, self.node, f)


def _form(d: Any) -> tuple[type, type | None]:
    """A distribution's kind: its type, and its base's when masked."""
    return (type(d), type(d.base_dist) if isinstance(d, MaskedDistribution) else None)


_CATEGORICAL = (torch.distributions.Categorical, pyro.distributions.Categorical)
_BERNOULLI = (torch.distributions.Bernoulli, pyro.distributions.Bernoulli)


def _states(d: Any) -> int | None:
    """The number of states of a distribution whose support is its states in order and
    follows from its shape (Categorical, Bernoulli, counting measure; masked or not), so
    that counting them checks it; None for others, whose support is compared whole."""
    base = d.base_dist if isinstance(d, MaskedDistribution) else d
    kind = type(base)
    if kind in _CATEGORICAL:
        return base._num_events
    if kind in _BERNOULLI:
        return 2
    if kind is CountingMeasure:
        return base.logits.shape[-1]
    return None


@dataclass
class _Network:
    """A Bayesian network's tables (see ``_table_network``), what they were made from
    (nothing that refers back to the model, which would keep it alive), and the indicator
    table of each (variable, state) single-case evidence has named so far."""

    made_from: tuple[Any, ...]
    tables: tuple[torch.Tensor, ...]
    factors: FactorModel
    indicators: dict[tuple[str, Any], Factor] = field(default_factory=dict)


_NETWORKS: weakref.WeakKeyDictionary[Model, _Network] = weakref.WeakKeyDictionary()


def _table_network(model: Model) -> _Network | None:
    """The tables of a model made only of CPT latents outside plates and chains (a Bayesian
    network), tabulated once and kept until a node, a table, the device or the dtype
    changes: they do not depend on the evidence, and re-deriving them costs more than a
    query of the network. None for any other model."""
    nodes = tuple(model.nodes.values())
    if model.plates or model.chains or not all(
            n.kind == "latent" and isinstance(n.fn, CPT) and not n.plates and n.chain is None
            for n in nodes):
        return None
    made_from = (model.device, model.dtype, *((n.name, id(n)) for n in nodes))
    tables = tuple(n.fn.log_table() for n in nodes)  # type: ignore[union-attr]
    cached = _NETWORKS.get(model)
    if cached is not None and cached.made_from == made_from and all(
            a is b for a, b in zip(cached.tables, tables, strict=True)):
        return cached
    with default_tensor_context(model.device, model.dtype), torch.no_grad():
        network = _NETWORKS[model] = _Network(made_from, tables,
                                              _Tabulator(model, {}, False, {}).run())
    return network


def _with_evidence(network: _Network, model: Model, data: Mapping[str, torch.Tensor]
                   ) -> FactorModel:
    """A Bayesian network's tables with an indicator table for each evidence variable. A
    single case's indicators are kept with the network, so that a query repeating a
    (variable, state) reuses the table and what the elimination derived from it."""
    fm = network.factors
    evidence = []
    for name, value in data.items():
        key = (name, value.item()) if value.dim() == 0 else None
        f = network.indicators.get(key) if key is not None else None
        if f is None:
            match = _evidence_match(model.nodes[name], value, fm.variables[name].states)
            f = indicator_factor(name, match, like=fm.factors[0][1].log_table)
            if key is not None:
                network.indicators[key] = f
        evidence.append((frozenset(), f))
    return FactorModel([*fm.factors, *evidence], fm.chains, fm.variables, fm.plates,
                       fm.sizes, fm.latents)


class _Tabulator:
    """The reference tabulation (see ``model_factors``). With ``recipes`` (a list), it also
    records every table it makes as a ``_Recipe`` (or an ``_Const`` for evidence), for
    ``Tabulation`` to replay with other values."""

    def __init__(self, model: Model, data: dict[str, torch.Tensor], track: bool,
                 point: Mapping[str, torch.Tensor], grad: bool = False,
                 recipes: list[_Recipe | _Const] | None = None,
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
        self.variables: dict[str, Variable] = {}
        self.event_dims: dict[str, int] = {}  # observed node -> event dims of its data
        self.fixed: dict[str, Any] = dict(point)
        self.factors: list[tuple[frozenset[str], Factor]] = []
        self.chains = {c: ChainBlock(c, self.lengths[c], spec.plates, spec.reverse)
                       for c, spec in model.chains.items()}

    def run(self) -> FactorModel:
        for node in self.model.nodes.values():
            if node.kind in ("param", "module"):
                self.fixed[node.name] = _global(self.model, node, self.grad)
            elif node.name in self.fixed:
                continue
            elif node.kind in ("latent", "observed", "factor"):
                if node.chain is None:
                    self._tabulate(node, node.fn, node.parents, None, _GLOBAL)
                else:
                    self._tabulate_chain(node)
        latents = [v.node for name, v in self.variables.items()]
        return FactorModel(self.factors, list(self.chains.values()), self.variables,
                           self.plates, {p: self.sizes[p] for p in self.plates}, latents,
                           self.uses)

    # ----------------------------------------------------------------- where tables go
    def _add(self, target: _Target, node: Node, f: Factor) -> list[Placed]:
        return _put(self.factors, self.chains, target, node, f)

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
                  target: _Target) -> None:
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
        plan = self._arg_plan(node, parents, scope, steps)
        args = _evaluate(plan, self.fixed)
        result = _call(node, fn, args)
        lead = self._batch_shape(node, steps)
        if node.kind == "factor":
            table = torch.as_tensor(result)
            f = Factor(scope, self._expand(table, lead, scope, ()))
            self._add(target, node, f)
            self._record("factor", node, fn, plan, None, table, f, target)
            return
        if node.kind == "latent":
            var = node.name
            support = _support(node, result)
            if var not in self.variables:
                self._new_variable(node, support)
            elif not torch.equal(self.variables[var].states, support):
                raise ModelError(f"latent {var!r} ({node.declared_at}): its first step and later "
                                 "steps have different supports; a chain state needs one.")
            dims = len(result.batch_shape)
            grid = support.reshape(-1, *([1] * dims))
            table, mask = _log_prob(result, grid)
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
            value = _state_index(node, value, torch.arange(fn.table.shape[-1],
                                                           device=value.device))
        check_support(node, result, value)  # (the data as given: its indices are the user's)
        value = self._layout(node, value, events, len(scope), steps)
        table, mask = _log_prob(result, value)
        f = self._emit(node, fn, args, result, table, value, target, scope, lead, (), mask)
        self._record("observed", node, fn, plan, value, table, f, target, result)

    def _record(self, kind: str, node: Node, fn: Any, plan: _Args, value: torch.Tensor | None,
                table: torch.Tensor, f: Factor, target: _Target, result: Any = None) -> None:
        if self.recipes is not None:
            self.recipes.append(_Recipe(kind, node, fn, plan, value, table, f, target, result,
                                        self.replaced if kind in ("latent", "observed") else None))

    def _evidence(self, node: Node, support: torch.Tensor,
                  steps: tuple[torch.Tensor, Any] | None, lead: tuple[int, ...] | None,
                  like: torch.Tensor, target: _Target) -> None:
        """Data given for a latent is evidence: an indicator table of its observed state
        (every state where the entry is NaN: unobserved, e.g. the missing labels of
        semi-supervised learning)."""
        value = self.data.get(node.name)
        if value is None:
            return
        match = _evidence_match(node, self._layout(node, value, 0, 0, steps), support)
        indicator = indicator_factor(node.name, match, like=like).log_table
        f = Factor((node.name,), self._expand(indicator, lead, (), support.shape))
        self._add(target, node, f)
        if self.recipes is not None:
            self.recipes.append(_Const(node, f, target))

    def _emit(self, node: Node, fn: Any, args: dict[str, Any], distribution: Any,
              table: torch.Tensor, value: torch.Tensor | None, target: _Target,
              variables: tuple[str, ...], lead: tuple[int, ...] | None,
              own: torch.Size | tuple[int, ...], mask: torch.Tensor | None = None) -> Factor:
        """Hand a node's table to ``target``, as a tracked leaf when EM asks for it. A masked
        table's leaf is its unmasked log-probabilities: masked entries then get no gradient,
        so they add nothing to EM's expected counts."""
        retabled = False
        self.replaced = None
        if self.track:
            use = Use(node, fn, args, distribution, table, value)
            retabled = _retabled(use, self.retable)
            self.replaced = use if retabled else None
            table = use.table
            self.uses.append(use)
        scope = variables[:-1] if own else variables
        child = variables[-1] if own and mask is None and not retabled \
            and _sums_to_one(table) else None
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
        plates = tuple(self.sizes[p] if p in node.plates else 1 for p in self.plates)
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
                  steps: tuple[torch.Tensor, torch.Tensor | None] | None) -> _Args:
        """Where each argument of a factory comes from (see ``_evaluate``): the grids of
        latent states, data and chain steps are fixed tensors; params, modules and point
        values are read by name; deterministic parents are called on the same grid."""
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
                args.append((p.arg, _Fixed(parent.name)))
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
                args.append((p.arg, self._layout(parent, value, events, len(scope), at)))
            else:  # deterministic: evaluated on the same grid of states
                args.append((p.arg, _Derived(parent, self._arg_plan(parent, parent.parents,
                                                                    scope, steps))))
        return tuple(args)

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
        extra = value.dim() - lead - len(node.plates) - events
        if extra < 0 or (extra and (self.plates or node.chain is not None)):
            axes = ", ".join(("time",) * lead + node.plates + ("event",))
            raise ModelError(f"data for {node.name!r} ({node.declared_at}) has shape "
                             f"{tuple(value.shape)}; its axes are: {axes}. (Extra leading axes "
                             "as evidence cases work only for models without plates or "
                             "chains; put the cases in a plate.)")
        shape = list(value.shape[:lead + extra])
        for axis, plate in enumerate(node.plates):
            size = value.shape[lead + axis]
            if size != self.sizes[plate]:
                raise ModelError(f"data for {node.name!r} ({node.declared_at}) has {size} entries "
                                 f"on the axis of plate {plate!r}, which has size "
                                 f"{self.sizes[plate]}.")
        shape += [self.sizes[p] if p in node.plates else 1 for p in self.plates]
        if [p for p in self.plates if p in node.plates] != list(node.plates):
            raise ModelError(f"node {node.name!r} ({node.declared_at}): plates {node.plates} are "
                             f"nested in an order other than the model's {self.plates}.")
        event_shape = value.shape[value.dim() - events:] if events else ()
        return value.reshape((*shape, *([1] * scope_len), *event_shape))


def _global(model: Model, node: Node, grad: bool) -> Any:
    """A param's value from Pyro's param store (initialised from its declaration), or a
    module registered with Pyro; detached unless ``grad``."""
    if node.kind == "module":
        return pyro.module(node.name, node.value)
    init = node.value() if callable(node.value) else node.value
    value = pyro.param(node.name, lambda: as_data(model, node.name, init).clone(),
                       constraint=node.constraint)
    if not grad:
        value = value.detach()
    return value.to(model.device, model.dtype) if value.is_floating_point() else value


def _log_prob(d: Any, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(log_prob, mask)``: for ``d.mask(m)``, the unmasked log-probabilities computed on
    the parameters' own shapes (Pyro's masked distribution first broadcasts its base to the
    mask's shape, which for a chain's transition is a K x K table per step and sequence) and
    the mask apart; otherwise ``d.log_prob(value)`` and no mask. Exact log-probabilities
    (``exact_log_probs``): a probability of 0 is -inf, not log eps; the distribution that
    engines inspect (EM's and CAVI's closed forms read its class and ``probs``) is the
    factory's own."""
    if isinstance(d, MaskedDistribution):
        return exact_log_probs(_unexpanded(d.base_dist)).log_prob(value), d._mask
    return exact_log_probs(d).log_prob(value), None


def _unexpanded(d: Any) -> Any:
    """A shallow copy of a torch distribution with every broadcast (stride-0) axis of its
    tensors cut to size 1 -- the same values, without the copies ``expand`` stands for."""
    new = copy.copy(d)
    for key, value in vars(d).items():
        if isinstance(value, torch.Tensor):
            setattr(new, key, compact(value))
    shapes = [t.shape[: t.dim() - c.event_dim] for name, c in d.arg_constraints.items()
              if isinstance(t := vars(new).get(name), torch.Tensor)]
    if not shapes:
        return d
    new._batch_shape = torch.broadcast_shapes(*shapes)
    return new


def _sums_to_one(log_table: torch.Tensor) -> bool:
    """Whether a latent's table is a conditional distribution over its last axis, to
    rounding: its factory's log-probabilities over the whole support (an undirected
    variable's counting measure, for one, is not)."""
    t = log_table.detach()
    tol = 16 * t.shape[-1] * torch.finfo(t.dtype).eps
    return bool((torch.logsumexp(t, -1).abs() <= tol).all())


def _state_index(node: Node, value: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Evidence values (support values, e.g. 0/1 or 0..K-1) as state indices, checked."""
    return _matches(node, value, support).long().argmax(-1)


def _evidence_match(node: Node, value: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``_matches`` for evidence on a latent, where an entry of NaN (floating data) leaves
    that entry unobserved: every state matches."""
    if not value.is_floating_point():
        return _matches(node, value, support)
    missing = value.isnan()
    known = torch.where(missing, support[0].to(value.dtype), value)
    return _matches(node, known, support) | missing.unsqueeze(-1)


def _matches(node: Node, value: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``(*value.shape, K)``: which state each evidence value is, checked to be one."""
    match = value.unsqueeze(-1) == support.to(value.dtype)
    if not bool(match.any(-1).all()):
        raise ModelError(f"evidence for {node.name!r} ({node.declared_at}) has values outside "
                         f"its states {support.tolist()}.")
    return match


def _call(node: Node, fn: Any, args: dict[str, Any]) -> Any:
    try:
        return fn(**args)
    except ModelError:
        raise
    except (ValueError, RuntimeError, TypeError, IndexError, KeyError) as e:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in args.items()
                           if isinstance(v, torch.Tensor))
        raise ModelError(f"node {node.name!r} ({node.declared_at}): its factory raised "
                         f"{type(e).__name__}: {e} while tabulating it over its parents' "
                         f"states (argument shapes {shapes}); factories must broadcast over "
                         "leading axes: index tables with pyro.ops.indexing.Vindex.") from e


def _support(node: Node, d: Any) -> torch.Tensor:
    if not d.has_enumerate_support or d.event_shape:
        raise ModelError(f"latent {node.name!r} ({node.declared_at}) has no finite scalar "
                         f"support ({type(d).__name__}); engine 'exact' needs finite latents.")
    support = d.enumerate_support(expand=False)
    flat = support.reshape(support.shape[0], -1)
    if not bool((flat == flat[:, :1]).all()):
        raise ModelError(f"latent {node.name!r} ({node.declared_at}) has a support that varies "
                         "across its plates or parents; engine 'exact' needs one set of states.")
    return flat[:, 0]

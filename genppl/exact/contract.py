"""Variable elimination on log-space factors, batched over leading evidence dimensions.

A ``Factor`` is a log-potential table over named discrete variables; every factor in one
problem shares the same leading batch shape (one entry per evidence case), so thousands of
cases contract in one vectorised pass. ``plan`` picks a greedy elimination order on the
interaction graph and refuses, before allocating anything, a problem whose largest table
exceeds the memory budget.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx
import torch

from genppl.budget import memory_budget, refuse_over
from genppl.errors import ModelError
from genppl.exact.rings import SUM, Reduce, Ring
from genppl.graph import analysis
from genppl.library_internals import version


@dataclass(frozen=True)
class Factor:
    """``log_table[..., i, j, ...]`` is the log-potential of ``vars = (a, b, ...)`` at states
    ``(i, j, ...)``; leading dimensions beyond ``len(vars)`` are batch (evidence cases).

    ``child`` names the variable the table is a conditional distribution of, when it is one
    (its probabilities sum to 1 over ``child`` for every value of the others, as a CPT's
    do): summing a Bayesian network's unobserved leaves out then gives exactly 1, which
    ``marginals`` skips instead of computing.

    ``derived`` keeps what the elimination worked out from the table (its scaled
    probabilities, in each layout a program asked for), each with the table's version
    counter: a network queried again and again presents the same tables, and an in-place
    edit of one makes its entries stale."""

    vars: tuple[str, ...]
    log_table: torch.Tensor
    child: str | None = field(default=None, kw_only=True)
    derived: dict[Any, tuple[int, Any]] = field(default_factory=dict, init=False, repr=False,
                                                compare=False)

    def __post_init__(self) -> None:
        if len(set(self.vars)) != len(self.vars):
            raise ModelError(f"factor over {self.vars} names a variable twice.")
        if self.child is not None and self.child not in self.vars:
            raise ModelError(f"factor over {self.vars} is a distribution of {self.child!r}, "
                             "which is not one of its variables.")
        if self.log_table.dim() < len(self.vars):
            raise ModelError(f"factor over {self.vars} has a table of shape "
                             f"{tuple(self.log_table.shape)}: one axis per variable needed.")

    @property
    def batch_shape(self) -> torch.Size:
        return self.log_table.shape[: self.log_table.dim() - len(self.vars)]

    def cardinalities(self) -> dict[str, int]:
        k = len(self.vars)
        return dict(zip(self.vars, self.log_table.shape[self.log_table.dim() - k:], strict=True))


@dataclass(frozen=True)
class Plan:
    """An elimination order with what it costs: induced width and largest table entries."""

    order: tuple[str, ...]
    width: int
    max_table: int


def interaction_graph(factors: Sequence[Factor]) -> nx.Graph:
    """Variables joined when some factor couples them (the moral graph of a Bayes net)."""
    return _coupling_graph(f.vars for f in factors)


def _coupling_graph(scopes: Iterable[tuple[str, ...]]) -> nx.Graph:
    g = nx.Graph()
    for scope in scopes:
        g.add_nodes_from(scope)
        g.add_edges_from((u, v) for i, u in enumerate(scope) for v in scope[i + 1:])
    return g


def cardinalities(factors: Sequence[Factor]) -> dict[str, int]:
    """Each variable's number of states, checked consistent across factors."""
    return dict(_shapes(_scopes(factors), _table_shapes(factors))[0])


def _table_shapes(factors: Sequence[Factor]) -> tuple[torch.Size, ...]:
    return tuple(f.log_table.shape for f in factors)


@functools.lru_cache(maxsize=1024)
def _shapes(scopes: tuple[tuple[str, ...], ...], shapes: tuple[torch.Size, ...]
            ) -> tuple[tuple[tuple[str, int], ...], torch.Size]:
    """``(cardinalities, broadcast batch shape)`` of tables with these scopes and shapes;
    cached, since a network queried again and again presents the same shapes and working
    them out costs more than a small query's arithmetic."""
    cards: dict[str, int] = {}
    for scope, shape in zip(scopes, shapes, strict=True):
        for v, k in zip(scope, shape[len(shape) - len(scope):], strict=True):
            if cards.setdefault(v, k) != k:
                raise ModelError(f"variable {v!r} has {cards[v]} states in one factor and {k} "
                                 "in another.")
    try:
        batch = torch.broadcast_shapes(*(shape[: len(shape) - len(scope)]
                                         for scope, shape in zip(scopes, shapes, strict=True)))
    except RuntimeError as e:
        raise ModelError(f"factors have incompatible batch shapes: {e}") from e
    return tuple(cards.items()), batch


def plan(factors: Sequence[Factor], *, heuristic: str | None = None,
         budget_bytes: int | None = None) -> Plan:
    """A greedy order (``min_fill``, ``min_weight``, ``min_degree``; by default the cheapest
    of them by largest table), refused with a clear error when its largest table, times the
    batch size, would not fit in ``budget_bytes``."""
    scopes = _scopes(factors)
    cards, batch_shape = _shapes(scopes, _table_shapes(factors))
    best = _best_order(scopes, cards, heuristic)
    batch = math.prod(batch_shape)
    itemsize = factors[0].log_table.element_size() if factors else 8
    refuse_over(best.max_table * batch * itemsize, memory_budget(budget_bytes),
                f"exact inference (a table of {best.max_table:,} entries x {batch:,} cases at "
                f"induced width {best.width})", "Use an approximate engine (gibbs, svi)")
    return best


@functools.lru_cache(maxsize=256)
def _best_order(scopes: tuple[tuple[str, ...], ...], cards: tuple[tuple[str, int], ...],
                heuristic: str | None) -> Plan:
    """The cheapest greedy order for a structure; cached, since repeated queries on one
    network (new evidence, new params) share it and the greedy search is the slow part."""
    g = _coupling_graph(scopes)
    card = dict(cards)
    best: Plan | None = None
    for h in (heuristic,) if heuristic else ("min_fill", "min_weight"):
        order = analysis.elimination_order(g, h, card)
        candidate = Plan(tuple(order), analysis.induced_width(g, order),
                         analysis.max_clique_size(g, order, card))
        if best is None or candidate.max_table < best.max_table:
            best = candidate
    assert best is not None
    return best


def log_partition(factors: Sequence[Factor], *, order: Sequence[str] | None = None,
                  budget_bytes: int | None = None) -> torch.Tensor:
    """log Σ_x Π_f exp(f(x)) with shape ``batch_shape``; differentiable in the tables."""
    if not factors:
        raise ModelError("log_partition needs at least one factor.")
    order = order if order is not None else plan(factors, budget_bytes=budget_bytes).order
    program = _compile(_scopes(factors), tuple(order))
    slots, _ = _forward(program, _inward(program, factors),
                        SUM.reducer(_differentiable(factors)))
    return _scalar(program, slots, torch.add, factors[0].log_table.new_zeros(()))


def marginals(factors: Sequence[Factor], *, order: Sequence[str] | None = None,
              budget_bytes: int | None = None, families: bool = True
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
    """``(log Z, {var: probs (*batch, K)}, [family marginal per factor])`` in one pass
    (the last list empty with ``families=False``, which saves summing each clique onto
    every table's scope).

    The family marginal of factor f is ∂ log Z / ∂ f's log table, so one backward pass
    through the sum-product gives every family marginal (EM's expected sufficient
    statistics) and every single-variable marginal. The backward pass is written out
    (``_calibrate``) rather than left to autograd: the same arithmetic without building a
    graph, and each case gets its own family marginal even where a table is shared by all
    cases. The answers are detached from the input tables.

    The pass runs on probabilities, each table scaled to a largest entry of 1 (a product
    and a sum per step, where log space needs a log-sum-exp of six kernels), whenever that
    provably loses nothing: every intermediate is at most the number of joint states, so
    entries lost to underflow move Z by less than its rounding error once the scaled Z
    clears ``_probability_floor``. Otherwise -- a vast state space, or evidence so
    improbable that Z nears the smallest float -- it runs in log space.
    """
    if not factors:
        raise ModelError("marginals needs at least one factor.")
    order = order if order is not None else plan(factors, budget_bytes=budget_bytes).order
    scopes, shapes = _scopes(factors), _table_shapes(factors)
    program = _compile(scopes, tuple(order), merge=True,
                       children=tuple(f.child for f in factors))
    with torch.no_grad():
        floor = _probability_floor(scopes, shapes, factors[0].log_table.dtype)
        if floor is not None:
            nb = len(_shapes(scopes, shapes)[1])
            scaled = [_probabilities(f, layout, nb)
                      for f, layout in zip(factors, program.layouts, strict=True)]
            slots, saved = _forward(program, [p for p, _ in scaled], _sum_axis, torch.mul,
                                    keep=True)
            z = _scalar(program, slots, torch.mul, scaled[0][0].new_ones(()))
            if bool((z >= floor).all()):
                family, single = _calibrate(program, saved, z, _weigh_probabilities,
                                            families)
                log_z = z.log() + math.fsum(s for _, s in scaled if isinstance(s, float))
                for _, s in scaled:
                    if not isinstance(s, float):
                        log_z = log_z + s
                return log_z, single, family
        slots, saved = _forward(program, _inward(program, factors), torch.logsumexp,
                                torch.add, keep=True)
        log_z = _scalar(program, slots, torch.add, factors[0].log_table.new_zeros(()))
        family, single = _calibrate(program, saved, log_z, _weigh_logs, families)
    return log_z, single, family


def eliminate(factors: Sequence[Factor], variables: Iterable[str], *,
              ring: Ring = SUM, heuristic: str | None = None) -> list[Factor]:
    """Reduce ``variables`` out of ``factors`` in ``ring`` (sum, max or sample; see
    ``genppl.exact.rings``), keeping every other variable.

    The building block of structured contraction: a plate eliminates its local variables
    while the variables of enclosing plates stay as free axes. Differentiable, so the
    gradients of the result with respect to the input tables are family marginals
    (``SUM``), the indicator of the maximising assignment (``MAX``), or the indicator
    of an exact posterior draw (``SAMPLE``: a sum whose backward pass samples, i.e.
    backward sampling through the elimination). A result's batch shape is the broadcast of
    the batch shapes of the tables it was made from.
    """
    wanted = frozenset(variables)
    if not wanted:
        return list(factors)
    scopes = _scopes(factors)
    order = partial_plan(scopes, _shapes(scopes, _table_shapes(factors))[0], wanted,
                         heuristic).order
    program = _compile(scopes, order)
    slots, _ = _forward(program, _inward(program, factors),
                        ring.reducer(_differentiable(factors)))
    depth = [len(f.batch_shape) for f in factors] + [0] * (len(program.scopes) - len(factors))
    for step in program.steps:
        depth[step.out] = max(depth[i.slot] for i in step.inputs)
    return [Factor(program.scopes[i], _outward(slots[i], len(program.scopes[i]), depth[i]))
            for i in program.leftover]


def aligned(f: Factor, scope: Sequence[str], batch_dims: int) -> torch.Tensor:
    """The table viewed over ``scope`` (singleton axes for variables it does not have)."""
    t = f.log_table
    t = t.reshape((1,) * (batch_dims - len(f.batch_shape)) + tuple(t.shape))
    position = {v: batch_dims + i for i, v in enumerate(f.vars)}
    present = [v for v in scope if v in position]
    t = t.permute((*range(batch_dims), *(position[v] for v in present)))
    shape = list(t.shape[:batch_dims]) + [t.shape[batch_dims + present.index(v)] if v in
                                          position else 1 for v in scope]
    return t.reshape(shape)


# --------------------------------------------------------------------------- internals
def _batch_shape(factors: Sequence[Factor]) -> torch.Size:
    return _shapes(_scopes(factors), _table_shapes(factors))[1]


@dataclass(frozen=True)
class _Input:
    """How one table enters an elimination step's clique: ``index`` inserts singleton axes
    for the clique variables it lacks after its first one (None when it lacks only leading
    ones, which broadcasting supplies), and ``missing`` are the axes it lacks (summed out
    again on the way back), as runs of adjacent axes, last run first: torch's CPU sum over
    non-adjacent axes is some thirty times slower than summing each run in turn -- on a
    large table; a small one is summed in one call (``_SMALL``), which costs less than
    two."""

    slot: int
    index: tuple[Any, ...] | None
    missing: tuple[tuple[int, ...], ...]

    @functools.cached_property
    def missing_at_once(self) -> tuple[int, ...]:
        return tuple(sorted(a for run in self.missing for a in run))


#: Tables up to this many entries are reduced over several non-adjacent axes in one call.
_SMALL = 4096


@dataclass(frozen=True)
class _Step:
    """Eliminate ``vars`` (the leading axes of the clique over ``scope``; one variable
    unless steps were merged) from the product of the ``inputs``, writing the message over
    the remaining axes to slot ``out``."""

    vars: tuple[str, ...]
    scope: tuple[str, ...]
    inputs: tuple[_Input, ...]
    out: int
    barren: bool = False  # its message is exactly 1: skipped (see ``_barren``)

    @property
    def axes(self) -> int | tuple[int, ...]:
        """The eliminated axes, as a reduction takes them."""
        return 0 if len(self.vars) == 1 else tuple(range(len(self.vars)))


@dataclass(frozen=True)
class _Program:
    """An elimination order compiled against factor scopes: slots ``0..n-1`` are the input
    tables, slot ``n + i`` the message of step ``i``; ``leftover`` are the slots no step
    consumed (variable-free after a full elimination). Every scope lists its variables in
    one global order (eliminated ones by when, then free ones by name), so an input table
    is laid out once, by ``layouts[i]``, for the clique that takes it, and messages never
    need a permutation."""

    steps: tuple[_Step, ...]
    scopes: tuple[tuple[str, ...], ...]
    leftover: tuple[int, ...]
    layouts: tuple[_Layout, ...]

    @property
    def tables(self) -> int:
        return len(self.layouts)


@dataclass(frozen=True)
class _Layout:
    """An input table's way into its clique: its variable axes permuted by ``axes`` (None:
    already in order), then singleton axes inserted where ``present`` is False (None: no
    insertions; see ``_Input``). Hashable, to key the tables kept in this layout."""

    axes: tuple[int, ...] | None
    present: tuple[bool, ...] | None

    @functools.cached_property
    def index(self) -> tuple[Any, ...] | None:
        if self.present is None:
            return None
        return (*(slice(None) if p else None for p in self.present), Ellipsis)


def _scopes(factors: Sequence[Factor]) -> tuple[tuple[str, ...], ...]:
    return tuple(f.vars for f in factors)


@functools.lru_cache(maxsize=256)
def _compile(scopes: tuple[tuple[str, ...], ...], order: tuple[str, ...],
             merge: bool = False, children: tuple[str | None, ...] | None = None
             ) -> _Program:
    """All the bookkeeping of an elimination (which tables meet, how their axes line up)
    done once per structure, so repeated queries -- new evidence, new parameters, EM
    iterations -- run only tensor operations.

    ``merge`` folds a step into the step that takes its message whenever that step's other
    tables lie within its clique (the two are one clique of a junction tree): one product
    and one reduction over several leading axes replace two of each and the message
    between them. Only reductions that take several axes at once can run merged steps.
    ``children`` (each table's ``Factor.child``) marks the steps whose message is exactly 1
    (``_barren``); only a sum-product calibrated by hand may skip them."""
    free = sorted({v for scope in scopes for v in scope} - set(order))
    rank = {v: i for i, v in enumerate((*order, *free))}

    def in_order(variables: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(variables, key=rank.__getitem__))

    all_scopes = [in_order(scope) for scope in scopes]
    axes = tuple(None if new == own else tuple(own.index(v) for v in new)
                 for own, new in zip(scopes, all_scopes, strict=True))
    live = list(range(len(scopes)))
    steps: dict[int, _Step] = {}  # by the slot of its message
    for var in order:
        touching = [i for i in live if var in all_scopes[i]]
        if not touching:
            continue
        live = [i for i in live if i not in touching]
        scope = in_order({v for i in touching for v in all_scopes[i]})
        step = _Step((var,), scope, tuple(_input(i, all_scopes[i], scope) for i in touching),
                     len(all_scopes))
        if merge:
            step = _merged(step, steps, all_scopes)
        steps[step.out] = step
        live.append(step.out)
        all_scopes.append(scope[1:])
    present: list[Any] = [None] * len(scopes)
    for step in steps.values():  # input tables take their singleton axes once, up front
        for inp in step.inputs:
            if inp.slot < len(scopes) and inp.index is not None:
                present[inp.slot] = tuple(i is not None for i in inp.index[:-1])
    out = [replace(step, inputs=tuple(replace(inp, index=None) if inp.slot < len(scopes)
                                      else inp for inp in step.inputs))
           for step in steps.values()]
    if children is not None:
        out = _barren(out, children)
    return _Program(tuple(out), tuple(all_scopes), tuple(live), tuple(
        _Layout(a, p) for a, p in zip(axes, present, strict=True)))


def _barren(steps: list[_Step], children: tuple[str | None, ...]) -> list[_Step]:
    """Mark the steps whose message is exactly 1: those whose inputs are conditional
    distributions of the variables they eliminate, one each, and messages of such steps
    (a sub-network summed over all its states, e.g. unobserved leaves). Their messages are
    never computed and their consumers skip them; a consumer left with nothing else keeps
    them computed."""
    n = len(children)
    barren: set[int] = set()
    for step in steps:
        own = [children[i.slot] for i in step.inputs if i.slot < n]
        if all(i.slot in barren or (i.slot < n and children[i.slot] in step.vars)
               for i in step.inputs) and sorted(own, key=str) == sorted(step.vars):
            barren.add(step.out)
        elif all(i.slot in barren for i in step.inputs):
            barren.difference_update(i.slot for i in step.inputs)
    return [replace(step, barren=step.out in barren) for step in steps]


def _merged(step: _Step, steps: dict[int, _Step], scopes: list[tuple[str, ...]]) -> _Step:
    """``step`` with the step whose message it takes folded in (see ``_compile``), when
    every other input of ``step`` lies within that step's clique."""
    for inp in step.inputs:
        inner = steps.get(inp.slot)
        if inner is None:
            continue
        others = [i for i in step.inputs if i is not inp]
        if all(set(scopes[i.slot]) <= set(inner.scope) for i in others):
            del steps[inp.slot]
            return _Step((*inner.vars, *step.vars), inner.scope, (*inner.inputs, *(
                _input(i.slot, scopes[i.slot], inner.scope) for i in others)), step.out)
    return step


def _input(slot: int, own: tuple[str, ...], scope: tuple[str, ...]) -> _Input:
    """``own`` lists its variables in the clique's order (see ``_Program``)."""
    first = scope.index(own[0]) if own else len(scope)
    index = None
    if len(own) < len(scope) - first:
        index = (*(slice(None) if v in own else None for v in scope[first:]), Ellipsis)
    runs: list[list[int]] = []
    for a, v in enumerate(scope):
        if v not in own:
            if runs and runs[-1][-1] == a - 1:
                runs[-1].append(a)
            else:
                runs.append([a])
    return _Input(slot, index, tuple(tuple(run) for run in reversed(runs)))


@functools.lru_cache(maxsize=256)
def partial_plan(scopes: tuple[tuple[str, ...], ...], cards: tuple[tuple[str, int], ...],
                 wanted: frozenset[str], heuristic: str | None = None) -> Plan:
    """The cheapest greedy order eliminating only ``wanted`` (min-fill or min-weight, by
    largest table, unless ``heuristic`` names one), with its induced width and largest
    table; cached per structure like ``_best_order``."""
    g = _coupling_graph(scopes)
    card = dict(cards)
    best: Plan | None = None
    for h in (heuristic,) if heuristic else ("min_fill", "min_weight"):
        order = analysis.elimination_order(g, h, card, among=set(wanted))
        candidate = Plan(tuple(order), analysis.induced_width(g, order, partial=True),
                         analysis.max_clique_size(g, order, card, partial=True))
        if best is None or candidate.max_table < best.max_table:
            best = candidate
    assert best is not None
    return best


def _inward(program: _Program, factors: Sequence[Factor]) -> list[torch.Tensor]:
    """Every log table in the program's internal layout (see ``_internal``)."""
    nb = len(_batch_shape(factors))
    return [_internal(f.log_table, len(f.vars), layout, nb)
            for f, layout in zip(factors, program.layouts, strict=True)]


def _internal(t: torch.Tensor, nvars: int, layout: _Layout, nb: int) -> torch.Tensor:
    """A ``(*batch, *vars)`` table as ``(*vars, *batch)`` laid out for its clique (see
    ``_Layout``) with ``nb`` batch axes (singletons where it has fewer). Internally
    variables lead and cases trail:
    reducing a leading axis runs vectorised over the contiguous cases, where torch's CPU
    kernels for reducing a small trailing axis of many cases are about ten times slower.
    Batched tables are copied into that layout (results of elementwise ops keep their
    inputs' layout)."""
    own = t.dim() - nvars
    if layout.axes is not None:
        t = t.permute((*range(own), *(own + a for a in layout.axes)))
    if own:
        t = t.reshape((1,) * (nb - own) + t.shape).movedim(tuple(range(nb)), tuple(
            range(nvars, nvars + nb))).contiguous()
    elif nb:
        t = t.reshape(*t.shape, *(1,) * nb)
    return t if layout.index is None else t[layout.index]


def _probabilities(f: Factor, layout: _Layout, nb: int
                   ) -> tuple[torch.Tensor, torch.Tensor | float]:
    """``(table, shift)``: ``_scaled(f)`` in a program's internal layout, kept on the factor
    like the scaling itself."""
    now = version(f.log_table)
    hit = f.derived.get((layout, nb))
    if hit is None or hit[0] != now:
        table, shift = _scaled(f)
        hit = f.derived[(layout, nb)] = (now, (_internal(table, len(f.vars), layout, nb),
                                               shift))
    return hit[1]


def _scaled(f: Factor) -> tuple[torch.Tensor, torch.Tensor | float]:
    """``(exp(log_table - shift), shift)``, ``shift`` each case's largest log entry (0 where
    none is finite; a float when one serves every case): probabilities that cannot
    overflow. Kept on the factor until its table changes, since a network queried again
    and again presents the same tables."""
    now = version(f.log_table)
    hit = f.derived.get(_SCALED)
    if hit is None or hit[0] != now:
        t, k = f.log_table.detach(), len(f.vars)
        if f.child is not None:  # at most 1 already, and a barren sum must stay exactly 1
            hit = (now, (t.exp(), 0.0))
        else:
            shift = t.amax(tuple(range(t.dim() - k, t.dim()))) if k else t
            shift = torch.where(torch.isfinite(shift), shift, shift.new_zeros(()))
            scaled = (t - shift.reshape(shift.shape + (1,) * k)).exp()
            hit = (now, (scaled, float(shift) if shift.dim() == 0 else shift))
        f.derived[_SCALED] = hit
    return hit[1]


#: The key of ``_scaled``'s entry in ``Factor.derived`` (layouts are keyed by layout).
_SCALED = "scaled"


def _outward(t: torch.Tensor, nvars: int, depth: int | None = None) -> torch.Tensor:
    """An internal ``(*vars, *batch)`` table as ``(*batch, *vars)``, keeping only the last
    ``depth`` batch axes when given (the others are the singletons ``_inward`` added)."""
    nb = t.dim() - nvars
    if nb and nvars:
        t = t.movedim(tuple(range(nvars)), tuple(range(nb, nb + nvars)))
    if depth is not None and depth < nb:
        t = t.reshape(t.shape[nb - depth:])
    return t


Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _differentiable(factors: Sequence[Factor]) -> bool:
    """Whether a gradient of the tables is wanted (the sum then takes its NaN-free
    backward pass, ``LogSumExp``)."""
    return torch.is_grad_enabled() and any(f.log_table.requires_grad for f in factors)


def _sum_axis(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    return x.sum(dim)


def _forward(program: _Program, tables: list[torch.Tensor], reduce: Reduce,
             combine: Combine = torch.add, *, keep: bool = False
             ) -> tuple[list[torch.Tensor | None], list[Any]]:
    """Run the steps on internal-layout tables, joined by ``combine`` (``add`` for log
    tables, ``mul`` for probabilities) and reduced over each eliminated axis: ``slots``
    holds every table still in play (consumed ones dropped, so memory is freed as it goes).
    With ``keep``, what the way back (``_calibrate``) needs from each step:
    ``(clique, message)``."""
    slots: list[torch.Tensor | None] = [*tables, *([None] * (len(program.scopes) - len(tables)))]
    saved = []
    for step in program.steps:
        joint = None
        for inp in step.inputs:
            t = slots[inp.slot]
            slots[inp.slot] = None
            if t is None:  # the message of a barren step: exactly 1
                continue
            if inp.index is not None:
                t = t[inp.index]
            joint = t if joint is None else combine(joint, t)
        message = None if step.barren else reduce(joint, step.axes)
        slots[step.out] = message
        if keep:
            saved.append((joint, message))
    return slots, saved


def _calibrate(program: _Program, saved: list[tuple[torch.Tensor, torch.Tensor]],
               z: torch.Tensor, weigh: Weigh, families: bool
               ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The backward pass of the sum-product, by hand. Each step's clique marginal is
    ``weigh(clique, g, message)``, g being its message's marginal (see ``_weigh_logs``);
    each input's marginal is the clique's summed onto its scope. Returns every input
    table's family marginal (none unless ``families``) and every variable's marginal,
    batch axes first."""
    n = program.tables
    ones = torch.ones_like(z)
    grads: list[torch.Tensor | None] = [None] * len(program.scopes)
    for slot in program.leftover:
        grads[slot] = ones
    single: dict[str, torch.Tensor] = {}
    for step, (joint, out) in zip(reversed(program.steps), reversed(saved), strict=True):
        clique = weigh(joint, grads[step.out], out)  # type: ignore[arg-type]
        for axis, var in enumerate(step.vars):
            others = (*range(axis), *range(axis + 1, len(step.scope)))
            single[var] = _outward(clique.sum(others) if others else clique, 1)
        for inp in step.inputs:
            if inp.slot < n and not families:
                continue
            if len(inp.missing) > 1 and clique.numel() <= _SMALL:
                g = clique.sum(inp.missing_at_once)
            else:
                g = clique
                for run in inp.missing:
                    g = g.sum(run)
            grads[inp.slot] = g
    if not families:
        return [], single
    family = [ones if g is None else _outward(_own_order(g, axes), len(scope))
              for g, scope, axes in zip(grads[:n], program.scopes[:n],
                                        (layout.axes for layout in program.layouts),
                                        strict=True)]
    return family, single


def _own_order(t: torch.Tensor, axes: tuple[int, ...] | None) -> torch.Tensor:
    """An internal table back in its factor's own variable order (undoing ``axes``)."""
    if axes is None:
        return t
    back = sorted(range(len(axes)), key=axes.__getitem__)
    return t.permute((*back, *range(len(axes), t.dim())))


Weigh = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _weigh_logs(joint: torch.Tensor, g: torch.Tensor, message: torch.Tensor | None
                ) -> torch.Tensor:
    """exp(clique + log g - message) (a barren step's message, None, is log 1); where g is
    0 the message may be -inf: that slice is impossible and its share exactly 0, not NaN."""
    if message is None:
        return (joint + g.log()).exp_()
    shift = (g.log() - message).nan_to_num_(nan=-math.inf, neginf=-math.inf)
    return (joint + shift).exp_()


def _weigh_probabilities(joint: torch.Tensor, g: torch.Tensor, message: torch.Tensor | None
                         ) -> torch.Tensor:
    """clique * g / message (a barren step's message, None, is 1); 0 where the message is
    0 (an impossible slice)."""
    if message is None:
        return joint * g
    return joint * (g / message).nan_to_num_(nan=0.0, posinf=0.0)


@functools.lru_cache(maxsize=1024)
def _probability_floor(scopes: tuple[tuple[str, ...], ...], shapes: tuple[torch.Size, ...],
                       dtype: torch.dtype) -> float | None:
    """The least scaled Z (see ``marginals``) for which the pass on probabilities is as
    exact as in log space, or None where no Z could be (too many joint states to stay
    finite, or a floor above them). Every intermediate is a sum of products of entries
    at most 1, so at most the number of joint states S; an entry flushed to zero (an
    error under the smallest normal float) moves Z by at most that times S, for each of
    the E table entries. Asking that this stay under Z's own rounding error gives
    Z >= tiny * S * E / eps."""
    info = torch.finfo(dtype)
    cards, _ = _shapes(scopes, shapes)
    log_states = sum(math.log(k) for _, k in cards)
    entries = sum(math.prod(shape) for shape in shapes)
    log_floor = math.log(info.tiny) + log_states + math.log(max(entries, 1)) - math.log(info.eps)
    if log_states >= math.log(info.max) or log_floor >= log_states:
        return None
    return math.exp(log_floor)


def _scalar(program: _Program, slots: list[torch.Tensor | None], combine: Combine,
            one: torch.Tensor) -> torch.Tensor:
    """Combine the variable-free tables left after elimination into Z (log Z with
    ``add``), batch-shaped; ``one`` is the neutral value (all left were barren)."""
    leftovers = [program.scopes[i] for i in program.leftover if program.scopes[i]]
    if leftovers:
        raise ModelError(f"variables {leftovers} were not eliminated; pass an order naming "
                         "every variable.")
    return functools.reduce(combine, (slots[i] for i in program.leftover  # type: ignore
                                      if slots[i] is not None), one)


def evidence_factor(var: str, state: torch.Tensor | int, cardinality: int,
                    like: torch.Tensor) -> Factor:
    """A 0/-inf indicator fixing ``var`` to ``state`` (batch-shaped for many cases)."""
    state = torch.as_tensor(state, device=like.device)
    return indicator_factor(var, state.unsqueeze(-1) == torch.arange(
        cardinality, device=like.device), like)


def indicator_factor(var: str, one_hot: torch.Tensor, like: torch.Tensor) -> Factor:
    """The factor of a boolean ``(*batch, K)`` table over ``var``: log 1 where true, log 0
    elsewhere (evidence), in ``like``'s dtype. Its probabilities are the indicator itself,
    so they are handed to the probability pass as they are rather than re-derived."""
    probs = one_hot.to(like.dtype)
    f = Factor((var,), probs.log())
    f.derived[_SCALED] = (version(f.log_table), (probs, 0.0))
    return f

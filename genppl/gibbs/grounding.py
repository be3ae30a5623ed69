"""A discrete model's factors grounded into a factor graph of variable *instances*.

The exact engine keeps plates and chains as batch axes and eliminates them; a Gibbs sampler
needs the opposite view: every entry of a plate and every step of a chain is one variable
instance with its own current state, and every table entry row is a factor instance over
some of them. Grounding gives each instance an integer id and stacks the factor instances
of equal arity into one tensor per arity, so that the full conditional of *every* instance
(its Markov blanket's factors evaluated at the current states of the others) is a handful of
gathers and one ``index_add_`` per factor position -- for a BN of forty nodes and for a
128 x 128 Ising grid alike. Instances share one padded number of states, ``K``: states a
variable does not have get log-potential -inf.

Structure and values are apart: ``ground`` builds the instances, the factor rows' indices
and the padding once; ``group_tables`` re-reads only the tables of a re-tabulation of the
same model (new param values, as contrastive divergence makes every step), and
``FactorGraph.with_tables`` puts them in the same structure, so whatever was built from the
structure (the kernel's colour plans, kept in ``FactorGraph.cache``) is reused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from genppl.budget import memory_budget, refuse_over
from genppl.errors import ModelError
from genppl.exact.contract import Factor
from genppl.exact.factors import PREV, FactorModel, plain


@dataclass(frozen=True)
class Block:
    """A variable's instances: ids ``offset .. offset + numel(shape) - 1``, laid out as
    ``shape`` (time axis first for chain variables, then the model's plates, size 1 where
    absent; evidence cases for plate-free models)."""

    name: str
    offset: int
    shape: tuple[int, ...]
    states: torch.Tensor
    chain: str | None
    #: the variable's values as users see them: time axis in index order, its own plates
    layout: tuple[int, ...] = ()
    reverse: bool = False  # a chain running backwards: instances in the order it runs

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class FactorGroup:
    """Factor instances of one arity: ``tables[f]`` is the log-potential of instance f over
    ``K`` states per position, ``index[f, p]`` the variable instance at position p."""

    tables: torch.Tensor  # (F, K, ..., K)
    index: torch.Tensor  # (F, arity) long

    @property
    def arity(self) -> int:
        return self.index.shape[1]


@dataclass(frozen=True)
class Replica:
    """A graph made of ``copies`` independent copies of ``one`` side by side: instance i of
    copy r has id ``layout[r, i]``. Samplers read the one-case tables with the copies as a
    batch axis of the state instead of the copied factor rows."""

    one: FactorGraph
    layout: torch.Tensor  # (copies, one.size) long

    @property
    def copies(self) -> int:
        return self.layout.shape[0]


@dataclass(frozen=True)
class FactorGraph:
    """Variable instances (``blocks``) and factor instances (``groups``); ``padding`` is 0
    for the states an instance has and -inf for the rest, shape ``(V, K)``. ``replica`` is
    set on a graph of copies of a one-case graph (see ``Replica``); ``cache`` holds what
    is built from the structure alone, shared by every graph of the same structure, and
    ``derived`` what is built from this graph's table values (the colours' updates)."""

    blocks: dict[str, Block]
    groups: tuple[FactorGroup, ...]
    padding: torch.Tensor
    replica: Replica | None = None
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    derived: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def with_tables(self, tables: Sequence[torch.Tensor]) -> FactorGraph:
        """The same instances and factor rows with other table values (one tensor per
        group, shaped as its tables), sharing ``cache``: the structure is not rebuilt."""
        if len(tables) != len(self.groups) or any(
                t.shape != g.tables.shape for t, g in zip(tables, self.groups, strict=False)):
            raise ModelError("new tables must have the shapes of the graph's groups "
                             f"{[tuple(g.tables.shape) for g in self.groups]}, got "
                             f"{[tuple(t.shape) for t in tables]}.")
        groups = tuple(FactorGroup(t, g.index) for t, g in zip(tables, self.groups,
                                                                  strict=True))
        return replace(self, groups=groups, cache=self.cache, derived={})

    @property
    def size(self) -> int:
        return self.padding.shape[0]

    @property
    def states(self) -> int:
        return self.padding.shape[1]

    def conditionals(self, state: torch.Tensor) -> torch.Tensor:
        """``(V, K)`` log-potentials of every instance's states with all other instances at
        ``state`` (V,): each instance's full conditional, up to a constant."""
        logits = self.padding.clone()
        positions = torch.arange(self.states, device=state.device)[None, :]
        for group in self.groups:
            current = state[group.index]  # (F, arity)
            rows = torch.arange(len(current), device=state.device)[:, None]
            for p in range(group.arity):
                at = (rows, *(positions if j == p else current[:, j:j + 1]
                              for j in range(group.arity)))
                logits.index_add_(0, group.index[:, p], group.tables[at])
        return logits

    def log_joint(self, state: torch.Tensor) -> torch.Tensor:
        """The unnormalised log probability of a joint state (V,)."""
        total = self.padding.new_zeros(())
        for group in self.groups:
            current = state[group.index]
            total = total + group.tables[(torch.arange(len(current), device=state.device),
                                          *current.unbind(1))].sum()
        return total

    def neighbours(self) -> list[tuple[int, int]]:
        """Pairs of instances sharing a factor (the interaction graph's edges)."""
        pairs: set[tuple[int, int]] = set()
        for group in self.groups:
            index = group.index.tolist()
            for row in index:
                for i, a in enumerate(row):
                    for b in row[i + 1:]:
                        if a != b:
                            pairs.add((min(a, b), max(a, b)))
        return sorted(pairs)

    def values(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each variable's instances as state *values* (its support), laid out by block."""
        return {b.name: b.states[state[b.offset:b.offset + b.size]].reshape(b.shape)
                for b in self.blocks.values()}

    def compact(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """States ``(..., V)`` as each variable's values in the data's layout,
        ``(..., *layout)``."""
        out = {}
        for b in self.blocks.values():
            lead = states.shape[:-1]
            values = b.states[states[..., b.offset:b.offset + b.size]].reshape(
                (*lead, *b.layout))
            out[b.name] = values.flip(len(lead)) if b.reverse else values
        return out

    def with_values(self, state: torch.Tensor, values: dict[str, torch.Tensor]
                    ) -> torch.Tensor:
        """``state`` (V,) with the instances of the named variables set to ``values`` (the
        data's layout), checked to be among their states."""
        state = state.clone()
        for name, value in values.items():
            b = self.blocks[name]
            value = value.flip(0) if b.reverse else value
            match = value.reshape(-1, 1) == b.states.to(value.dtype)
            if not bool(match.any(-1).all()):
                raise ModelError(f"values for {name!r} must be among its states "
                                 f"{b.states.tolist()}.")
            state[b.offset:b.offset + b.size] = match.long().argmax(-1)
        return state


def ground(fm: FactorModel, like: torch.Tensor | None = None,
           budget_bytes: int | None = None) -> FactorGraph:
    """The factor graph of a tabulated model (see the module doc); ``like`` gives the dtype
    and device of a model whose tables were all taken out (collapsed Gibbs: every table
    reads a collapsed latent). A graph whose instances would take more than
    ``budget_bytes`` (default: ``genppl.budget``'s) is refused before anything is made."""
    cases = fm.cases()
    blocks: dict[str, Block] = {}
    offset = 0
    for name, var in fm.variables.items():
        shape = fm.leaf_shape(name, cases)
        own = [fm.sizes[p] for p in fm.plates if p in var.plates] if fm.plates else cases
        layout = (*shape[:1 if var.chain else 0], *own)
        reverse = var.chain is not None and next(b.reverse for b in fm.chains
                                                 if b.name == var.chain)
        blocks[name] = Block(name, offset, shape, var.states, var.chain, tuple(layout), reverse)
        offset += math.prod(shape)
    k = max(len(v.states) for v in fm.variables.values())
    tables = _tables(fm)
    if not tables and like is None:
        raise ModelError("ground: a model without tables needs like= (a tensor of its dtype).")
    itemsize = (tables[0][0].log_table if tables else like).element_size()
    refuse_over(_grounded_bytes(tables, blocks, offset, k, itemsize),
                memory_budget(budget_bytes),
                f"grounding {offset:,} latent instances for Gibbs sampling",
                "Use fewer or smaller plates, or engine 'svi'")
    padding = (tables[0][0].log_table if tables else like).new_full((offset, k), -math.inf)
    for b in blocks.values():
        padding[b.offset:b.offset + b.size, : len(b.states)] = 0.0
    by_arity: dict[int, list[torch.Tensor]] = {}
    for f, steps, copies in tables:
        if f.vars:
            by_arity.setdefault(len(f.vars), []).append(_index(f, steps, blocks, copies))
    groups = tuple(FactorGroup(t, torch.cat(i)) for t, i in zip(
        _group_rows(tables, blocks, k), by_arity.values(), strict=True))
    return FactorGraph(blocks, groups, padding)


def _grounded_bytes(tables: list[_Table], blocks: dict[str, Block], instances: int, k: int,
                    itemsize: int) -> int:
    """What ``ground`` allocates: every table's factor instances (their variable ids and
    rows of K**arity values) and the padded state table of the instances."""
    total = instances * k * itemsize
    for f, steps, copies in tables:
        if f.vars:
            count = math.prod(_grid(f, steps, blocks, copies))
            total += count * len(f.vars) * 8 + count * k ** len(f.vars) * itemsize
    return total


def ground_table(f: Factor, steps: tuple[str, int, int] | None, blocks: dict[str, Block],
                 k: int, copies: Copies = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """One table's factor instances outside a graph: the instances each reads ``(F,
    arity)`` and its values over ``K`` states per position, padded with -inf. ``steps`` is
    a chain table's ``(chain, first step, number of steps)``, as in ``FactorModel.chains``;
    ``copies`` the nested plates it lies in (``copies_of``)."""
    return (_index(f, steps, blocks, copies),
            _rows(f, _grid(f, steps, blocks, copies), k))


#: The nested plates a table lies in, each as ``(enclosing plate's axis, nested plate's
#: axis, enclosing entry of each copy)``: a word's table reads its document's variables
#: at its document.
Copies = tuple[tuple[int, int, torch.Tensor], ...]


def copies_of(fm: FactorModel, plates: frozenset[str] | tuple[str, ...]) -> Copies:
    """The ``Copies`` of a table in ``plates``."""
    return tuple((fm.plates.index(n.parent), fm.plates.index(p), n.entries)
                 for p, n in fm.nested.items() if p in plates)


def group_tables(fm: FactorModel, graph: FactorGraph) -> tuple[torch.Tensor, ...]:
    """The tables of ``graph``'s groups read from ``fm``, a tabulation of the model
    ``graph`` was grounded from (other param values, same structure): values only, in the
    order ``ground`` gives, differentiable where ``fm``'s tables are. For
    ``graph.with_tables``."""
    return _group_rows(_tables(fm), graph.blocks, graph.states)


def _group_rows(tables: list[_Table], blocks: dict[str, Block], k: int
                ) -> tuple[torch.Tensor, ...]:
    """Every table's factor rows padded to ``K`` states, concatenated by arity (in the
    order arities first appear)."""
    by_arity: dict[int, list[torch.Tensor]] = {}
    for f, steps, copies in tables:
        if f.vars:
            by_arity.setdefault(len(f.vars), []).append(
                _rows(f, _grid(f, steps, blocks, copies), k))
    return tuple(torch.cat(rows) for rows in by_arity.values())


#: A table, for a chain's tables ``(chain, first step, number of steps)`` its time axis
#: stands for, and the nested plates it lies in.
_Table = tuple[Factor, tuple[str, int, int] | None, Copies]


def _tables(fm: FactorModel) -> list[_Table]:
    out: list[_Table] = [(plain(f), None, copies_of(fm, plates)) for plates, f in fm.factors]
    for block in fm.chains:
        out += [(plain(f), (block.name, 0, 1), ()) for f in block.first]
        out += [(plain(f), (block.name, 1, block.length - 1), ()) for f in block.rest]
    return out


def _ids(f: Factor, steps: tuple[str, int, int] | None, blocks: dict[str, Block],
         copies: Copies) -> list[torch.Tensor]:
    """The instance ids each variable of ``f`` reads, laid out as its block. Along a chain
    table's time axis, step ``start + t`` of the chain's variables is read (one step
    earlier for ``z@prev``); along a nested plate's axis, an enclosing plate's variable at
    each copy's entry."""
    ids = []
    for v in f.vars:
        b = blocks[v.removesuffix(PREV)]
        at = torch.arange(b.size, device=f.log_table.device).reshape(b.shape)
        if steps is not None and b.chain == steps[0]:
            first = steps[1] - (1 if v.endswith(PREV) else 0)
            at = at[first:first + steps[2]]
        for parent_axis, axis, entries in copies:
            if at.shape[parent_axis] > 1 and at.shape[axis] == 1:
                at = at.index_select(parent_axis, entries).transpose(parent_axis, axis)
        ids.append(b.offset + at)
    return ids


def _grid(f: Factor, steps: tuple[str, int, int] | None, blocks: dict[str, Block],
          copies: Copies) -> torch.Size:
    """The batch shape of ``f``'s factor instances (its table's and its variables'
    broadcast)."""
    shapes = []
    for v in f.vars:
        shape = list(blocks[v.removesuffix(PREV)].shape)
        if steps is not None and blocks[v.removesuffix(PREV)].chain == steps[0]:
            shape[0] = steps[2]
        for parent_axis, axis, entries in copies:
            if shape[parent_axis] > 1 and shape[axis] == 1:
                shape[parent_axis], shape[axis] = 1, len(entries)
        shapes.append(shape)
    return _broadcast(f.batch_shape, *shapes)


def _index(f: Factor, steps: tuple[str, int, int] | None, blocks: dict[str, Block],
           copies: Copies) -> torch.Tensor:
    """A table's factor instances: the variable instance at each position, ``(F, arity)``."""
    ids = _ids(f, steps, blocks, copies)
    grid = _grid(f, steps, blocks, copies)
    return torch.stack([i.expand(grid).reshape(-1) for i in ids], 1)


def _rows(f: Factor, grid: torch.Size, k: int) -> torch.Tensor:
    """A table's factor instances' tables over ``K`` states per position, ``(F, K, ...)``."""
    cards = f.log_table.shape[len(f.batch_shape):]
    table = f.log_table.expand(*grid, *cards).reshape(-1, *cards)
    if all(c == k for c in cards):
        return table
    padded = table.new_full((table.shape[0], *(k,) * len(cards)), -math.inf)
    padded[(slice(None), *(slice(0, c) for c in cards))] = table
    return padded


def _broadcast(*shapes: Sequence[int]) -> torch.Size:
    """``torch.broadcast_shapes`` without its overhead (it runs once per table per CD
    step), raising as it does on shapes that do not broadcast."""
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for shape in shapes:
        for axis, size in enumerate(shape, rank - len(shape)):
            if size != 1:
                if out[axis] not in (1, size):
                    raise RuntimeError(f"shapes {shapes} do not broadcast")
                out[axis] = size
    return torch.Size(out)

"""Gibbs sampling on a grounded factor graph, as a kernel for ``pyro.infer.MCMC``.

Pyro's MCMC has HMC, NUTS and random-walk kernels only; this kernel fills the gap for
finite-support latents. One ``sample`` call is one sweep: the instances are split into
*colours* (a proper colouring of the interaction graph, so that no two instances of a colour
share a factor); all instances of a colour are conditionally independent given the rest and
are drawn together from their full conditionals. A checkerboard is the two-colouring of a
grid, a bipartite RBM the two-colouring of its layers; ``schedule="sequential"`` gives every
instance its own colour (single-site Gibbs in a fixed scan, the textbook reference).

How a colour's conditionals are computed (``ColourUpdate``). Most factors of MRFs, RBMs
and Ising grids are pairwise, and a pairwise row adds to its colour instance's logits a
column of its table picked by the neighbour's state: summed over the rows, that is one
matrix (colour instances x states by neighbours x states 1..K-1) applied to the indicators
of the neighbours' states, plus a constant (every row at neighbour state 0, the padding,
the one-variable rows). The matrix is dense where that is small or not much sparser (an
RBM layer: a BLAS matmul, as scikit-learn's ``BernoulliRBM`` does) and CSR otherwise (a
checkerboard colour of a large grid: four entries a row). With two states the draw needs
only the log-odds, a matrix of differences, and a uniform below ``sigmoid`` of it: exactly
the conditional, at one uniform per instance. Rows whose tables are -inf at states their
instances can take (hard constraints) would give 0 x -inf, and factors of three or more
variables are not a matrix: those rows are gathered at the current states, as
``FactorGraph.conditionals`` (the reference, tested against) reads every row.

What is read from the graph's structure alone -- which rows touch the colour, where each
cell goes in the matrix -- is a *plan*, built once and kept in ``FactorGraph.cache``; a
graph with new table values in the same structure (``FactorGraph.with_tables``, as CD makes
every step) only recomputes the values. States may carry a leading batch axis of chains,
``(chains, V)``: the chains share the matrices, which is how ``engines.cd`` runs its
minibatch; a graph of copies (``FactorGraph.replica``) is read the same way.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from genppl.errors import ModelError
from genppl.gibbs.grounding import FactorGraph, FactorGroup


def colouring(graph: FactorGraph, schedule: str = "chromatic") -> list[torch.Tensor]:
    """The instance ids of each colour, in update order."""
    device = graph.padding.device
    if schedule == "sequential":
        return [torch.tensor([i], device=device) for i in range(graph.size)]
    if schedule != "chromatic":
        raise ModelError(f"engine 'gibbs': schedule must be 'chromatic' or 'sequential', got "
                         f"{schedule!r}.")
    g = nx.Graph()
    g.add_nodes_from(range(graph.size))
    g.add_edges_from(graph.neighbours())
    colour = nx.greedy_color(g, strategy="largest_first")
    groups: dict[int, list[int]] = {}
    for node, c in colour.items():
        groups.setdefault(c, []).append(node)
    return [torch.tensor(sorted(ids), device=device) for _, ids in sorted(groups.items())]


def draw(logits: torch.Tensor) -> torch.Tensor:
    """One state per row, with probabilities softmax(logits) (Gumbel-max)."""
    u = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny)
    return (logits - (-u.log()).log()).argmax(-1)


def sweep(graph: FactorGraph, colours: list[torch.Tensor], state: torch.Tensor
          ) -> torch.Tensor:
    """One Gibbs sweep: each colour in turn drawn from its full conditionals. ``state`` is
    ``(V,)``, or ``(chains, V)`` for independent chains moved together."""
    state = state.clone()
    for update in updates(graph, colours):
        state[..., update.at] = update.sample(state)
    return state


def run_of(index: torch.Tensor) -> slice | torch.Tensor:
    """``index`` as a slice when it is a run of consecutive ids (a block, a layer, a
    colour of a plate), else itself: reading and writing a slice of the state is a copy,
    not a gather or scatter."""
    if len(index) > 1 and bool((index[1:] - index[:-1] == 1).all()):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def updates(graph: FactorGraph, colours: list[torch.Tensor]) -> list[Any]:
    """The colours' updates (``ColourUpdate``: ``ids``, ``logits``, ``sample``), kept with
    the graph for this colour list. Their plans -- everything read from the structure
    alone -- are kept in ``graph.cache``, so a graph from ``with_tables`` (new values,
    same structure) only recomputes values. On a graph of copies (``graph.replica``), a
    colour taken in every copy is updated from the one-case tables with the copies as a
    batch axis."""
    memo = graph.derived.get("updates")
    if memo is None or memo[0] is not colours:
        if graph.replica is not None:
            out = [_replicated(graph, ids) for ids in colours]
        else:
            out = [_value(graph, plan) for plan in _plans(graph, colours)]
        memo = graph.derived["updates"] = (colours, out)
    return memo[1]


def _plans(graph: FactorGraph, colours: list[torch.Tensor]) -> list[_Plan]:
    """The colours' plans, shared by graphs of one structure (one colour list at a time)."""
    memo = graph.cache.get("plans")
    if memo is None or memo[0] is not colours:
        memo = (colours, [_plan(graph, ids) for ids in colours])
        graph.cache["plans"] = memo
    return memo[1]


def _value(graph: FactorGraph, plan: _Plan) -> ColourUpdate:
    """``plan``'s update at ``graph``'s table values; planned afresh when a pairwise row it
    multiplies has become -inf at a state it can be read at (it then belongs to the gather
    path)."""
    update = plan.values(graph)
    return update if update is not None else _plan(graph, plan.ids).values(graph)  # type: ignore[return-value]


# --------------------------------------------------------------------------- plans
#: A pairwise row's log-odds weight, ``(c11 - c10) - (c01 - c00)``, from its cells in order.
_ODDS = torch.tensor([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class _Gather:
    """Factor rows of ``group`` with an instance of the colour at one position, read by
    one gather at the current states of their other instances (any arity): the instances
    and strides of the other positions, the stride of the colour's, and which of the
    colour's instances each row adds to."""

    group: int
    rows: torch.Tensor  # (F',)
    others: tuple[tuple[torch.Tensor, int], ...]
    stride: int
    target: torch.Tensor  # (F',)


@dataclass(frozen=True)
class _Edges:
    """Pairwise rows touching the colour, as edges from a colour instance (``target``,
    local) to the instance at the row's other position (``neighbour``, an index into the
    plan's ``neighbours``). ``reads`` gives, per group, where each edge's cells
    ``[own state, neighbour state]`` lie in the group's flattened tables (rows with the
    colour instance at position 1 read transposed); ``unreachable`` marks the cells one of
    the two instances cannot be in (padding, read as 0), None when there are none."""

    reads: tuple[tuple[int, torch.Tensor], ...]  # (group, (E_g, K, K) positions)
    target: torch.Tensor  # (E,)
    neighbour: torch.Tensor  # (E,)
    unreachable: torch.Tensor | None  # (E, K, K) bool

    def cells(self, graph: FactorGraph) -> torch.Tensor | None:
        """Each edge's table as ``[own state, neighbour state]``, padding cells 0; None if
        a cell that can be read is not finite."""
        parts = [graph.groups[g].tables.reshape(-1)[at] for g, at in self.reads]
        cells = parts[0] if len(parts) == 1 else torch.cat(parts)
        if self.unreachable is not None:
            cells.masked_fill_(self.unreachable, 0.0)
        return cells if bool(torch.isfinite(cells).all()) else None


@dataclass(frozen=True)
class _Pattern:
    """A ``(rows, cols)`` matrix assembled from entries at fixed ``(row, col)`` positions
    whose values change (duplicates add), applied as ``x @ matrix.T``: dense (stored
    transposed) where that is small or not much sparser, else sparse CSR."""

    shape: tuple[int, int]
    flat: torch.Tensor  # dense: entry -> position in the transposed matrix; CSR: -> value
    crow: torch.Tensor | None = None
    col: torch.Tensor | None = None

    @staticmethod
    def of(row: torch.Tensor, col: torch.Tensor, shape: tuple[int, int]) -> _Pattern:
        """Dense up to 65,536 cells or 8 cells per distinct entry (an RBM layer, a small
        model: one matmul beats any sparse kernel there), CSR beyond (a colour of a grid).
        """
        rows, cols = shape
        key = row * cols + col
        unique, inverse = torch.unique(key, return_inverse=True)
        if rows * cols <= max(1 << 16, 8 * len(unique)):
            return _Pattern(shape, col * rows + row)
        counts = torch.bincount(unique // cols, minlength=rows)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return _Pattern(shape, inverse, crow, unique % cols)

    def assemble(self, values: torch.Tensor) -> torch.Tensor:
        rows, cols = self.shape
        if self.crow is None:
            return values.new_zeros(rows * cols).index_add_(0, self.flat, values).view(cols,
                                                                                      rows)
        summed = values.new_zeros(len(self.col)).index_add_(0, self.flat, values)  # type: ignore[arg-type]
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, summed, self.shape)

    def apply(self, matrix: torch.Tensor, x: torch.Tensor, bias: torch.Tensor
              ) -> torch.Tensor:
        """``bias + x @ matrix.T`` for ``x`` of shape ``(..., cols)``: ``(..., rows)``."""
        if self.crow is None:
            if x.dim() == 1:
                return torch.addmv(bias, matrix.T, x)
            if x.dim() == 2:
                return torch.addmm(bias, x, matrix)
            return bias + x @ matrix
        if x.dim() == 1:
            return bias + torch.mv(matrix, x)
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1]).T.contiguous()
        return bias + (matrix @ flat).T.reshape(*lead, -1)


@dataclass(frozen=True)
class _Plan:
    """What one colour's update reads, from the graph's structure alone: its instances,
    the one-variable rows (summed into a constant), the pairwise rows whose table cells are
    finite where they can be read (applied as a matrix to the neighbours' states) and the
    other rows (gathered: larger factors, -inf cells). ``binary``: the graph's instances
    have two states (or one), so a draw compares a uniform with ``sigmoid`` of the
    log-odds."""

    ids: torch.Tensor  # (C,)
    at: slice | torch.Tensor  # the ids, as a slice when they are a run
    states: int
    padding: torch.Tensor  # (C, K)
    unary: tuple[tuple[int, torch.Tensor, torch.Tensor], ...]  # (group, rows, target)
    edges: _Edges | None
    neighbours: torch.Tensor  # (N,) instance ids
    read: slice | torch.Tensor  # the neighbours, as a slice when they are a run
    logits_map: _Pattern | None  # (C * K, N * (K - 1))
    odds_map: _Pattern | None  # (C, N), binary only
    gathers: tuple[_Gather, ...]

    @property
    def binary(self) -> bool:
        return self.states == 2

    def values(self, graph: FactorGraph) -> ColourUpdate | None:
        """The update at ``graph``'s tables (None when the matrix rows no longer fit)."""
        base = self.padding.clone()
        for group, rows, target in self.unary:
            base.index_add_(0, target, graph.groups[group].tables[rows])
        cells = odds_matrix = None
        if self.edges is not None:
            cells = self.edges.cells(graph)
            if cells is None:
                return None
            base.index_add_(0, self.edges.target, cells[:, :, 0])
            if self.odds_map is not None:  # (c11 - c10) - (c01 - c00)
                odds = cells.reshape(len(cells), 4) @ _ODDS.to(cells)
                odds_matrix = self.odds_map.assemble(odds)
        tables = tuple(graph.groups[g.group].tables.reshape(
            len(graph.groups[g.group].tables), -1)[g.rows] for g in self.gathers)
        return ColourUpdate(self.ids, base, self, cells, odds_matrix, tables)


def _plan(graph: FactorGraph, ids: torch.Tensor) -> _Plan:
    """The plan of colour ``ids`` (see ``_Plan``)."""
    local = torch.full((graph.size,), -1, dtype=torch.long, device=ids.device)
    local[ids] = torch.arange(len(ids), device=ids.device)
    valid = torch.isfinite(graph.padding)  # (V, K)
    unary, pairs, gathers = _rows(graph, local, valid)
    edges, neighbours = _edges(graph, pairs, local, valid)
    logits_map = odds_map = None
    if edges is not None:
        logits_map, odds_map = _maps(edges, len(ids), len(neighbours), graph.states)
    return _Plan(ids, run_of(ids), graph.states, graph.padding[ids].clone(), unary, edges,
                 neighbours, run_of(neighbours), logits_map, odds_map, gathers)


def _rows(graph: FactorGraph, local: torch.Tensor, valid: torch.Tensor
          ) -> tuple[tuple[tuple[int, torch.Tensor, torch.Tensor], ...],
                     list[tuple[int, torch.Tensor, torch.Tensor]], tuple[_Gather, ...]]:
    """The factor rows with an instance of the colour (``local`` >= 0) at some position,
    by how they are read: one-variable rows ``(group, rows, target)``, pairwise rows for
    the matrix ``(group, rows, position)``, and the gathered rest."""
    k = graph.states
    unary, pairs, gathers = [], [], []
    for g, group in enumerate(graph.groups):
        arity = group.arity
        for p in range(arity):
            rows = (local[group.index[:, p]] >= 0).nonzero().squeeze(1)
            if not len(rows):
                continue
            if arity == 1:  # no other instance: the same at every step
                unary.append((g, rows, local[group.index[rows, 0]]))
                continue
            if arity == 2:
                fits = _finite_where_read(group, rows, valid)
                pairs.append((g, rows[fits], torch.full_like(rows[fits], p)))
                rows = rows[~fits]
                if not len(rows):
                    continue
            strides = [k ** (arity - 1 - j) for j in range(arity)]
            others = tuple((group.index[rows, j], strides[j]) for j in range(arity) if j != p)
            gathers.append(_Gather(g, rows, others, strides[p], local[group.index[rows, p]]))
    return tuple(unary), pairs, tuple(gathers)


def _maps(edges: _Edges, colour: int, neighbours: int, k: int
          ) -> tuple[_Pattern, _Pattern | None]:
    """Where each edge's cells go: in the logits matrix, cell ``[s, l]`` (l >= 1) at row
    ``(target, s)`` and column ``(neighbour, l)``; for two states, its log-odds at
    ``(target, neighbour)``."""
    own = torch.arange(k, device=edges.target.device)
    read = torch.arange(k - 1, device=edges.target.device)
    row = edges.target[:, None, None] * k + own[:, None]
    col = edges.neighbour[:, None, None] * (k - 1) + read[None, :]
    row, col = torch.broadcast_tensors(row, col)
    logits = _Pattern.of(row.reshape(-1), col.reshape(-1), (colour * k, neighbours * (k - 1)))
    odds = _Pattern.of(edges.target, edges.neighbour, (colour, neighbours)) if k == 2 else None
    return logits, odds


def _finite_where_read(group: FactorGroup, rows: torch.Tensor, valid: torch.Tensor
                       ) -> torch.Tensor:
    """Which pairwise ``rows`` have finite tables at every pair of states their two
    instances have (padding aside): those can be a matrix; -inf cells (hard constraints)
    cannot, as 0 x -inf is not 0."""
    index = group.index[rows]
    reachable = valid[index[:, 0]][:, :, None] & valid[index[:, 1]][:, None, :]
    return (torch.isfinite(group.tables[rows]) | ~reachable).flatten(1).all(1)


def _edges(graph: FactorGraph, pairs: list[tuple[int, torch.Tensor, torch.Tensor]],
           local: torch.Tensor, valid: torch.Tensor) -> tuple[_Edges | None, torch.Tensor]:
    """The pairwise rows as edges of the colour (see ``_Edges``) and the instances they
    read, in id order."""
    pairs = [(g, rows, p) for g, rows, p in pairs if len(rows)]
    if not pairs:
        return None, local.new_zeros(0)
    k = graph.states
    states = torch.arange(k, device=local.device)
    cell = states[:, None] * k + states[None, :]  # [own, other] in a row at position 0
    reads = []
    for g, rows, p in pairs:
        at = torch.where((p == 1)[:, None, None], cell.T, cell)
        reads.append((g, (rows[:, None, None] * k * k + at).contiguous()))
    index = torch.cat([graph.groups[g].index[rows] for g, rows, _ in pairs])
    swap = torch.cat([p for _, _, p in pairs]) == 1
    own = torch.where(swap, index[:, 1], index[:, 0])
    other = torch.where(swap, index[:, 0], index[:, 1])
    neighbours, neighbour = torch.unique(other, return_inverse=True)
    unreachable = ~(valid[own][:, :, None] & valid[other][:, None, :])
    return _Edges(tuple(reads), local[own], neighbour,
                  unreachable if bool(unreachable.any()) else None), neighbours


# --------------------------------------------------------------------------- updates
@dataclass(frozen=True)
class ColourUpdate:
    """One colour's full conditionals at given table values, reading only the factor rows
    that touch it: a constant part (padding, one-variable factors, and each pairwise row
    at its neighbour's state 0), a matrix applied to the indicators of the neighbours'
    other states (the pairwise rows), and gathers for the rest. States may carry leading
    batch axes (chains); the matrices are shared by all of them. ``FactorGraph.conditionals``
    is the reference it is tested against."""

    ids: torch.Tensor  # (C,)
    base: torch.Tensor  # (C, K)
    plan: _Plan
    cells: torch.Tensor | None  # (E, K, K): the pairwise rows, [own state, neighbour state]
    odds_matrix: torch.Tensor | None  # two states: the rows' log-odds per neighbour state
    gather_tables: tuple[torch.Tensor, ...]  # per gather: (F', K ** arity)

    @property
    def at(self) -> slice | torch.Tensor:
        """Where the colour's draws go in the state (``ids``, a slice when a run)."""
        return self.plan.at

    @functools.cached_property
    def logits_matrix(self) -> torch.Tensor | None:
        """The pairwise rows as a matrix from the indicators of the neighbours' states
        1..K-1 to the colour's logits (built on first use: two-state draws do without)."""
        if self.cells is None:
            return None
        steps = self.cells[:, :, 1:] - self.cells[:, :, :1]  # neighbour at l, not at 0
        return self.plan.logits_map.assemble(steps.reshape(-1))  # type: ignore[union-attr]

    @functools.cached_property
    def odds_bias(self) -> torch.Tensor:
        return self.base[:, 1] - self.base[:, 0]

    def logits(self, state: torch.Tensor) -> torch.Tensor:
        """``(..., C, K)`` log-potentials of each instance's states given ``state``
        ``(..., V)``: the full conditionals, up to a constant per instance."""
        plan = self.plan
        matrix = self.logits_matrix
        if matrix is not None:
            upper = torch.arange(1, plan.states, device=state.device)
            x = (state[..., plan.read, None] == upper).flatten(-2).to(self.base.dtype)
            out = plan.logits_map.apply(  # type: ignore[union-attr]
                matrix, x, self.base.reshape(-1)).unflatten(-1, self.base.shape)
        else:
            out = self.base.expand(*state.shape[:-1], *self.base.shape).clone()
        for gather, tables in zip(plan.gathers, self.gather_tables, strict=True):
            _gather(out, gather, tables, state)
        return out

    def log_odds(self, state: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` log-odds of state 1 against state 0 (two-state graphs): the
        pairwise rows as one matrix of differences applied to the neighbours' states."""
        plan = self.plan
        if plan.gathers or (self.odds_matrix is None and self.cells is not None):
            logits = self.logits(state)
            return logits[..., 1] - logits[..., 0]
        if self.odds_matrix is None:
            return self.odds_bias.expand(*state.shape[:-1], -1)
        x = state[..., plan.read].to(self.base.dtype)
        return plan.odds_map.apply(self.odds_matrix, x, self.odds_bias)  # type: ignore[union-attr]

    def sample(self, state: torch.Tensor) -> torch.Tensor:
        """A draw of every instance of the colour from its full conditional, ``(..., C)``:
        state 1 where a uniform falls below ``sigmoid(log-odds)`` for two states (exactly
        that probability; an impossible state, log-odds -inf or +inf, is never drawn),
        Gumbel-max over the logits otherwise."""
        if not self.plan.binary:
            return draw(self.logits(state))
        odds = self.log_odds(state)
        return (torch.rand_like(odds) < torch.sigmoid(odds)).long()


def _gather(out: torch.Tensor, gather: _Gather, tables: torch.Tensor, state: torch.Tensor
            ) -> None:
    """Add the gathered rows' log-potentials at the current states of their other
    instances to ``out`` ``(..., C, K)``, in place."""
    k = out.shape[-1]
    offset = sum(state[..., ids] * stride for ids, stride in gather.others)
    steps = torch.arange(k, device=state.device) * gather.stride
    rows = torch.arange(len(tables), device=state.device) * tables.shape[1]
    index = (offset + rows)[..., None] + steps  # type: ignore[operator]
    out.index_add_(out.dim() - 2, gather.target, tables.reshape(-1)[index])


@dataclass(frozen=True)
class _Copied:
    """A colour taken in every copy of a replicated graph, updated by ``inner`` (the same
    colour of the one-case graph) with the copies as a batch axis: ``ids`` are the copies'
    instance ids, copy by copy; ``chunks`` read the flat state of every copy as
    ``(copies, V)`` (see ``_chunks``)."""

    ids: torch.Tensor  # (copies * C,)
    inner: ColourUpdate
    layout: torch.Tensor  # (copies, one-case V)
    chunks: tuple[tuple[int, int], ...] | None

    @functools.cached_property
    def at(self) -> slice | torch.Tensor:
        return run_of(self.ids)

    def logits(self, state: torch.Tensor) -> torch.Tensor:
        return self.inner.logits(self._one_case(state)).flatten(-3, -2)

    def sample(self, state: torch.Tensor) -> torch.Tensor:
        return self.inner.sample(self._one_case(state)).flatten(-2)

    def _one_case(self, state: torch.Tensor) -> torch.Tensor:
        if self.chunks is None:
            return state[..., self.layout]
        copies = self.layout.shape[0]
        return torch.cat([state[..., start:start + copies * width].unflatten(-1, (copies, width))
                          for start, width in self.chunks], -1)


def _replicated(graph: FactorGraph, ids: torch.Tensor) -> Any:
    """The update of colour ``ids`` of a graph of copies: from the one-case graph when the
    colour is a set of one-case instances taken in every copy, else from the copied rows."""
    replica = graph.replica
    assert replica is not None
    source = torch.empty(graph.size, dtype=torch.long, device=ids.device)
    source[replica.layout] = torch.arange(replica.one.size, device=ids.device).expand_as(
        replica.layout)
    one_ids = source[ids].unique()
    if len(ids) != replica.copies * len(one_ids):
        return _value(graph, _plan(graph, ids))
    inner = _value(replica.one, _plan(replica.one, one_ids))
    return _Copied(replica.layout[:, one_ids].reshape(-1), inner, replica.layout,
                   _chunks(replica.layout, replica.one))


def _chunks(layout: torch.Tensor, one: FactorGraph) -> tuple[tuple[int, int], ...] | None:
    """``(flat start, width)`` per one-case block when each block of every copy is one run
    of flat ids laid out ``(copies, width)`` (as ``genppl.gibbs.copies.Copies`` lays them out): the
    copies' states are then read by slicing, not gathering. None otherwise."""
    copies, out, offset = layout.shape[0], [], 0
    for b in sorted(one.blocks.values(), key=lambda b: b.offset):
        part = layout[:, b.offset:b.offset + b.size]
        if b.offset != offset or not torch.equal(
                part, part[0, 0] + torch.arange(copies * b.size, device=layout.device
                                                ).view(copies, b.size)):
            return None
        out.append((int(part[0, 0]), b.size))
        offset += b.size
    return tuple(out) if offset == one.size else None


class GibbsKernel(MCMCKernel):
    """One Gibbs sweep per step (``step``: a state to the next, e.g. ``sweep`` over the
    colours, then any blocks drawn jointly); the state is the single parameter
    ``"state"``, a ``(V,)`` tensor of instance state indices."""

    #: For ``MCMC``: the state is unconstrained already, and there is no Pyro model.
    transforms: dict[str, Any] = {}  # noqa: RUF012 (Pyro reads it as a class attribute)
    model = None

    def __init__(self, step: Callable[[torch.Tensor], torch.Tensor], init: torch.Tensor
                 ) -> None:
        self.step = step
        self._initial = {"state": init}

    @property
    def initial_params(self) -> dict[str, torch.Tensor]:
        return self._initial

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        self._initial = params

    def sample(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"state": self.step(params["state"])}

    def state_dict(self) -> dict[str, Any]:
        """Nothing beyond the parameters: a checkpoint of the state resumes the chain."""
        return {}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Nothing to restore (see ``state_dict``)."""


def starting_state(graph: FactorGraph, step: Callable[[torch.Tensor], torch.Tensor],
                   tries: int = 10) -> torch.Tensor:
    """A joint state of positive probability: from all-zero states, one ``step`` drawing
    each colour from its conditional given what is set so far, retried until the joint is
    possible (evidence and zeros in tables can rule out most states)."""
    for _ in range(tries):
        state = step(torch.zeros(graph.size, dtype=torch.long, device=graph.padding.device))
        if bool(torch.isfinite(graph.log_joint(state))):
            return state
    raise ModelError("engine 'gibbs' found no starting state of positive probability in "
                     f"{tries} tries; pass init={{latent: value}} with a possible state.")

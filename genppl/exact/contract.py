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
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx
import torch

from genppl.errors import ModelError
from genppl.graph import analysis

DEFAULT_BUDGET_BYTES = 2 * 1024**3

#: ``"sum"``: log-sum-exp (marginals); ``"max"``: max-product (MAP); ``"sample"``: log-sum-exp
#: forward, sampling backward (exact posterior draws).
Semiring = Literal["sum", "max", "sample"]


@dataclass(frozen=True)
class Factor:
    """``log_table[..., i, j, ...]`` is the log-potential of ``vars = (a, b, ...)`` at states
    ``(i, j, ...)``; leading dimensions beyond ``len(vars)`` are batch (evidence cases)."""

    vars: tuple[str, ...]
    log_table: torch.Tensor

    def __post_init__(self) -> None:
        if len(set(self.vars)) != len(self.vars):
            raise ModelError(f"factor over {self.vars} names a variable twice.")
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
    cards: dict[str, int] = {}
    for f in factors:
        for v, k in f.cardinalities().items():
            if cards.setdefault(v, k) != k:
                raise ModelError(f"variable {v!r} has {cards[v]} states in one factor and {k} "
                                 "in another.")
    return cards


def plan(factors: Sequence[Factor], *, heuristic: str | None = None,
         budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Plan:
    """A greedy order (``min_fill``, ``min_weight``, ``min_degree``; by default the cheapest
    of them by largest table), refused with a clear error when its largest table, times the
    batch size, would not fit in ``budget_bytes``."""
    cards = cardinalities(factors)
    best = _best_order(tuple(f.vars for f in factors), tuple(cards.items()), heuristic)
    batch = math.prod(_batch_shape(factors)) if factors else 1
    itemsize = factors[0].log_table.element_size() if factors else 8
    need = best.max_table * batch * itemsize
    if need > budget_bytes:
        raise ModelError(
            f"exact inference needs a table of {best.max_table:,} entries x {batch:,} cases "
            f"({need / 1024**3:.1f} GiB) at induced width {best.width}, over the budget of "
            f"{budget_bytes / 1024**3:.1f} GiB. Use an approximate engine (gibbs, svi) or "
            "raise budget_bytes.")
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
                  budget_bytes: int = DEFAULT_BUDGET_BYTES) -> torch.Tensor:
    """log Σ_x Π_f exp(f(x)) with shape ``batch_shape``; differentiable in the tables."""
    if not factors:
        raise ModelError("log_partition needs at least one factor.")
    order = order if order is not None else plan(factors, budget_bytes=budget_bytes).order
    program = _compile(_scopes(factors), tuple(order))
    slots, _ = _forward(program, _inward(factors), _sum_reduce(factors))
    return _scalar(program, slots)


def marginals(factors: Sequence[Factor], *, order: Sequence[str] | None = None,
              budget_bytes: int = DEFAULT_BUDGET_BYTES
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
    """``(log Z, {var: probs (*batch, K)}, [family marginal per factor])`` in one pass.

    The family marginal of factor f is ∂ log Z / ∂ f's log table, so one backward pass
    through the sum-product gives every family marginal (EM's expected sufficient
    statistics) and every single-variable marginal. The backward pass is written out
    (``_calibrate``) rather than left to autograd: the same arithmetic without building a
    graph, and each case gets its own family marginal even where a table is shared by all
    cases. The answers are detached from the input tables.
    """
    if not factors:
        raise ModelError("marginals needs at least one factor.")
    order = order if order is not None else plan(factors, budget_bytes=budget_bytes).order
    program = _compile(_scopes(factors), tuple(order))
    with torch.no_grad():
        slots, saved = _forward(program, _inward(factors), torch.logsumexp, keep=True)
        log_z = _scalar(program, slots)
        family, single = _calibrate(program, saved, log_z)
    return log_z, single, family


def eliminate(factors: Sequence[Factor], variables: Iterable[str], *,
              semiring: Semiring = "sum", heuristic: str | None = None) -> list[Factor]:
    """Sum (or maximise) ``variables`` out of ``factors``, keeping every other variable.

    The building block of structured contraction: a plate eliminates its local variables
    while the variables of enclosing plates stay as free axes. Differentiable, so the
    gradients of the result with respect to the input tables are family marginals
    (``"sum"``), the indicator of the maximising assignment (``"max"``), or the indicator
    of an exact posterior draw (``"sample"``: a sum whose backward pass samples, i.e.
    backward sampling through the elimination). A result's batch shape is the broadcast of
    the batch shapes of the tables it was made from.
    """
    wanted = frozenset(variables)
    if not wanted:
        return list(factors)
    scopes = _scopes(factors)
    order = partial_plan(scopes, tuple(cardinalities(factors).items()), wanted,
                         heuristic).order
    program = _compile(scopes, order)
    reduce = _max_values if semiring == "max" else _SampleLogSumExp.apply \
        if semiring == "sample" else _sum_reduce(factors)
    slots, _ = _forward(program, _inward(factors), reduce)
    depth = [len(f.batch_shape) for f in factors] + [0] * len(program.steps)
    for step in program.steps:
        depth[step.out] = max(depth[i.slot] for i in step.inputs)
    return [Factor(program.scopes[i], _outward(slots[i], len(program.scopes[i]), depth[i]))
            for i in program.leftover]


# --------------------------------------------------------------------------- internals
class _LogSumExp(torch.autograd.Function):
    """``torch.logsumexp`` whose gradient is 0, not NaN, where every term is -inf.

    Evidence makes whole slices impossible; their share of every marginal is exactly zero,
    but the textbook gradient exp(x - logsumexp(x)) evaluates to exp(-inf + inf) there.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        out = torch.logsumexp(x, dim)
        ctx.save_for_backward(x, out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.unsqueeze(ctx.dim) * _term_weights(ctx), None


def _term_weights(ctx: Any) -> torch.Tensor:
    """exp(term - logsumexp): each term's share of its sum (0 where every term is -inf)."""
    x, out = ctx.saved_tensors
    out = out.unsqueeze(ctx.dim)
    return torch.where(torch.isfinite(out), (x - out).exp(), torch.zeros_like(x))


class _SampleLogSumExp(_LogSumExp):
    """``logsumexp`` forward; backward routes each output's gradient to *one* term, drawn
    with probability exp(term - output). Run backward from an indicator of a configuration
    and every elimination step draws its variable given the variables it was eliminated
    against: forward filtering, backward sampling, for any elimination order."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.unsqueeze(ctx.dim) * draw_one_hot(_term_weights(ctx), ctx.dim), None


def draw_one_hot(weights: torch.Tensor, dim: int) -> torch.Tensor:
    """One index along ``dim`` per position, drawn proportionally to non-negative
    ``weights`` (all-zero rows, which no draw can reach, pick index 0), as a one-hot."""
    moved = weights.movedim(dim, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    empty = flat.sum(-1, keepdim=True) <= 0
    flat = torch.where(empty, torch.ones_like(flat), flat)
    index = torch.multinomial(flat, 1)
    one_hot = torch.zeros_like(flat).scatter_(1, index, 1.0)
    return one_hot.reshape(moved.shape).movedim(-1, dim)


def _batch_shape(factors: Sequence[Factor]) -> torch.Size:
    try:
        return torch.broadcast_shapes(*(f.batch_shape for f in factors))
    except RuntimeError as e:
        raise ModelError(f"factors have incompatible batch shapes: {e}") from e


def _aligned(f: Factor, scope: Sequence[str], batch_dims: int) -> torch.Tensor:
    """The table viewed over ``scope`` (singleton axes for variables it does not have)."""
    t = f.log_table
    t = t.reshape((1,) * (batch_dims - len(f.batch_shape)) + tuple(t.shape))
    position = {v: batch_dims + i for i, v in enumerate(f.vars)}
    present = [v for v in scope if v in position]
    t = t.permute((*range(batch_dims), *(position[v] for v in present)))
    shape = list(t.shape[:batch_dims]) + [t.shape[batch_dims + present.index(v)] if v in
                                          position else 1 for v in scope]
    return t.reshape(shape)


@dataclass(frozen=True)
class _Input:
    """How one table enters an elimination step's clique: ``movedim(src, dst)`` puts its
    variables in clique order, ``index`` inserts singleton axes for the clique variables it
    lacks, and ``missing`` are those axes (summed out again on the way back), as runs of
    adjacent axes, last run first: torch's CPU sum over non-adjacent axes is some thirty
    times slower than summing each run in turn."""

    slot: int
    src: tuple[int, ...]
    dst: tuple[int, ...]
    index: tuple[Any, ...] | None
    missing: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class _Step:
    """Eliminate ``var`` (axis 0 of the clique over ``scope``) from the sum of the
    ``inputs``, writing the message over ``scope[1:]`` to slot ``out``."""

    var: str
    scope: tuple[str, ...]
    inputs: tuple[_Input, ...]
    out: int


@dataclass(frozen=True)
class _Program:
    """An elimination order compiled against factor scopes: slots ``0..n-1`` are the input
    tables, slot ``n + i`` the message of step ``i``; ``leftover`` are the slots no step
    consumed (variable-free after a full elimination)."""

    steps: tuple[_Step, ...]
    scopes: tuple[tuple[str, ...], ...]
    leftover: tuple[int, ...]


def _scopes(factors: Sequence[Factor]) -> tuple[tuple[str, ...], ...]:
    return tuple(f.vars for f in factors)


@functools.lru_cache(maxsize=256)
def _compile(scopes: tuple[tuple[str, ...], ...], order: tuple[str, ...]) -> _Program:
    """All the bookkeeping of an elimination (which tables meet, how their axes line up)
    done once per structure, so repeated queries -- new evidence, new parameters, EM
    iterations -- run only tensor operations."""
    all_scopes = list(scopes)
    live = list(range(len(scopes)))
    steps = []
    for var in order:
        touching = [i for i in live if var in all_scopes[i]]
        if not touching:
            continue
        live = [i for i in live if i not in touching]
        scope = tuple(dict.fromkeys((var, *(v for i in touching for v in all_scopes[i]))))
        inputs = tuple(_input(i, all_scopes[i], scope) for i in touching)
        steps.append(_Step(var, scope, inputs, len(all_scopes)))
        live.append(len(all_scopes))
        all_scopes.append(scope[1:])
    return _Program(tuple(steps), tuple(all_scopes), tuple(live))


def _input(slot: int, own: tuple[str, ...], scope: tuple[str, ...]) -> _Input:
    present = [v for v in scope if v in own]
    src = tuple(own.index(v) for v in present)
    dst = tuple(range(len(present)))
    index = None
    if len(present) < len(scope):
        index = (*(slice(None) if v in own else None for v in scope), Ellipsis)
    runs: list[list[int]] = []
    for a, v in enumerate(scope):
        if v not in own:
            if runs and runs[-1][-1] == a - 1:
                runs[-1].append(a)
            else:
                runs.append([a])
    missing = tuple(tuple(run) for run in reversed(runs))
    return _Input(slot, src if src != dst else (), dst if src != dst else (), index, missing)


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


def _inward(factors: Sequence[Factor]) -> list[torch.Tensor]:
    """Every table as ``(*its variables, *batch)`` with the full number of batch axes
    (singletons where it has fewer). Internally variables lead and cases trail: reducing a
    leading axis runs vectorised over the contiguous cases, where torch's CPU kernels for
    reducing a small trailing axis of many cases are about ten times slower. Batched tables
    are copied into that layout (results of elementwise ops keep their inputs' layout)."""
    nb = len(_batch_shape(factors))
    out = []
    for f in factors:
        t, own = f.log_table, len(f.batch_shape)
        if own:
            t = t.reshape((1,) * (nb - own) + t.shape).movedim(tuple(range(nb)), tuple(
                range(len(f.vars), len(f.vars) + nb))).contiguous()
        elif nb:
            t = t.reshape(*t.shape, *(1,) * nb)
        out.append(t)
    return out


def _outward(t: torch.Tensor, nvars: int, depth: int | None = None) -> torch.Tensor:
    """An internal ``(*vars, *batch)`` table as ``(*batch, *vars)``, keeping only the last
    ``depth`` batch axes when given (the others are the singletons ``_inward`` added)."""
    nb = t.dim() - nvars
    if nb and nvars:
        t = t.movedim(tuple(range(nvars)), tuple(range(nb, nb + nvars)))
    if depth is not None and depth < nb:
        t = t.reshape(t.shape[nb - depth:])
    return t


Reduce = Callable[[torch.Tensor, int], Any]


def _sum_reduce(factors: Sequence[Factor]) -> Reduce:
    """``torch.logsumexp`` unless a gradient is wanted, then its NaN-free ``_LogSumExp``."""
    if torch.is_grad_enabled() and any(f.log_table.requires_grad for f in factors):
        return _LogSumExp.apply
    return torch.logsumexp


def _max_values(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.amax(dim)


def _forward(program: _Program, tables: list[torch.Tensor], reduce: Reduce, *,
             keep: bool = False) -> tuple[list[torch.Tensor | None], list[Any]]:
    """Run the steps on internal-layout tables: ``slots`` holds every table still in play
    (consumed ones dropped, so memory is freed as it goes). With ``keep``, what the way back
    (``_calibrate``) needs from each step: ``(clique, message)``."""
    slots: list[torch.Tensor | None] = [*tables, *([None] * len(program.steps))]
    saved = []
    for step in program.steps:
        joint = None
        for inp in step.inputs:
            t = slots[inp.slot]
            slots[inp.slot] = None
            if inp.src:
                t = t.movedim(inp.src, inp.dst)  # type: ignore[union-attr]
            if inp.index is not None:
                t = t[inp.index]  # type: ignore[index]
            joint = t if joint is None else joint + t
        message = reduce(joint, 0)  # type: ignore[arg-type]
        slots[step.out] = message
        if keep:
            saved.append((joint, message))
    return slots, saved


def _calibrate(program: _Program, saved: list[tuple[torch.Tensor, torch.Tensor]],
               log_z: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The backward pass of the sum-product, by hand. Each step's clique marginal is
    exp(clique + log g - message), g being its message's marginal (where g is 0 the message
    may be -inf: that slice is impossible and its share exactly 0, not NaN); each input's
    marginal is the clique's summed onto its scope. Returns every input table's family
    marginal and every variable's marginal, batch axes first."""
    ones = torch.ones_like(log_z)
    grads: list[torch.Tensor | None] = [None] * len(program.scopes)
    for slot in program.leftover:
        grads[slot] = ones
    single: dict[str, torch.Tensor] = {}
    for step, (joint, out) in zip(reversed(program.steps), reversed(saved), strict=True):
        shift = (grads[step.out].log() - out).nan_to_num_(  # type: ignore[union-attr]
            nan=-math.inf, neginf=-math.inf)
        clique = (joint + shift.unsqueeze(0)).exp_()
        others = tuple(range(1, len(step.scope)))
        single[step.var] = _outward(clique.sum(others) if others else clique, 1)
        for inp in step.inputs:
            g = clique
            for run in inp.missing:
                g = g.sum(run)
            grads[inp.slot] = g.movedim(inp.dst, inp.src) if inp.src else g
    n = len(program.scopes) - len(program.steps)
    family = [ones if g is None else _outward(g, len(scope))
              for g, scope in zip(grads[:n], program.scopes[:n], strict=True)]
    return family, single


def _scalar(program: _Program, slots: list[torch.Tensor | None]) -> torch.Tensor:
    """Combine the variable-free tables left after elimination into log Z (batch-shaped)."""
    leftovers = [program.scopes[i] for i in program.leftover if program.scopes[i]]
    if leftovers:
        raise ModelError(f"variables {leftovers} were not eliminated; pass an order naming "
                         "every variable.")
    return sum(slots[i] for i in program.leftover)  # type: ignore[return-value,misc]


def evidence_factor(var: str, state: torch.Tensor | int, cardinality: int,
                    like: torch.Tensor) -> Factor:
    """A 0/-inf indicator fixing ``var`` to ``state`` (batch-shaped for many cases)."""
    state = torch.as_tensor(state, device=like.device)
    states = torch.arange(cardinality, device=like.device)
    table = torch.where(state.unsqueeze(-1) == states, 0.0, -math.inf).to(like.dtype)
    return Factor((var,), table)


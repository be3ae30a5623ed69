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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from genppl.errors import ModelError
from genppl.graph import analysis

DEFAULT_BUDGET_BYTES = 2 * 1024**3


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
    """log Σ_x Π_f exp(f(x)) with shape ``batch_shape``."""
    if not factors:
        raise ModelError("log_partition needs at least one factor.")
    order = order if order is not None else plan(factors, budget_bytes=budget_bytes).order
    remaining = _eliminate_all(list(factors), order, maximise=False)[0]
    return _scalar(remaining)


def marginals(factors: Sequence[Factor], *, order: Sequence[str] | None = None,
              budget_bytes: int = DEFAULT_BUDGET_BYTES
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
    """``(log Z, {var: probs (*batch, K)}, [family marginal per factor])`` in one pass.

    The family marginal of factor f is ∂ log Z / ∂ f's log table, so one backward pass
    through the sum-product gives every family marginal (EM's expected sufficient
    statistics) and, summing out the others, every single-variable marginal.
    """
    # Every leaf gets the full batch shape: a table shared by all cases would otherwise
    # receive the sum of their marginals rather than one per case.
    batch = _batch_shape(factors)
    leaves = [Factor(f.vars, f.log_table.detach().expand((*batch, *f.log_table.shape[
        f.log_table.dim() - len(f.vars):])).clone().requires_grad_(True)) for f in factors]
    with torch.enable_grad():
        log_z = log_partition(leaves, order=order, budget_bytes=budget_bytes)
        grads = torch.autograd.grad(log_z.sum(), [f.log_table for f in leaves],
                                    allow_unused=True)
    family = [torch.zeros_like(f.log_table) if g is None else g
              for f, g in zip(leaves, grads, strict=True)]
    single: dict[str, torch.Tensor] = {}
    for f, probs in zip(leaves, family, strict=True):
        k = len(f.vars)
        for axis, v in enumerate(f.vars):
            if v not in single:
                others = [probs.dim() - k + a for a in range(k) if a != axis]
                single[v] = probs.sum(others) if others else probs
    return log_z.detach(), single, family


def eliminate(factors: Sequence[Factor], variables: Iterable[str], *, maximise: bool = False,
              heuristic: str = "min_fill") -> list[Factor]:
    """Sum (or maximise) ``variables`` out of ``factors``, keeping every other variable.

    The building block of structured contraction: a plate eliminates its local variables
    while the variables of enclosing plates stay as free axes. Differentiable, so the
    gradients of the result with respect to the input tables are family marginals (sum) or
    the indicator of the maximising assignment (max).
    """
    wanted = set(variables)
    if not wanted:
        return list(factors)
    g = interaction_graph(factors)
    order = analysis.elimination_order(g, heuristic, cardinalities(factors), among=wanted)
    return _eliminate_all(list(factors), order, maximise=maximise)[0]


def map_assignment(factors: Sequence[Factor], *, order: Sequence[str] | None = None,
                   budget_bytes: int = DEFAULT_BUDGET_BYTES
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(max_x log Π f(x), {var: state index (*batch)})`` by max-product and backtracking."""
    order = order if order is not None else plan(factors, budget_bytes=budget_bytes).order
    remaining, traceback = _eliminate_all(list(factors), order, maximise=True)
    assignment: dict[str, torch.Tensor] = {}
    for var, scope, argmax in reversed(traceback):
        assignment[var] = _select(argmax, [assignment[u] for u in scope], len(scope))
    return _scalar(remaining), assignment


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
        x, out = ctx.saved_tensors
        out, grad = out.unsqueeze(ctx.dim), grad.unsqueeze(ctx.dim)
        weights = torch.where(torch.isfinite(out), (x - out).exp(), torch.zeros_like(x))
        return grad * weights, None



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


def _eliminate_all(factors: list[Factor], order: Sequence[str], *, maximise: bool
                   ) -> tuple[list[Factor], list[tuple[str, tuple[str, ...], torch.Tensor]]]:
    batch_dims = len(_batch_shape(factors))
    traceback = []
    for var in order:
        touching = [f for f in factors if var in f.vars]
        if not touching:
            continue
        factors = [f for f in factors if var not in f.vars]
        scope = tuple(dict.fromkeys(v for f in touching for v in f.vars))
        joint = sum(_aligned(f, scope, batch_dims) for f in touching)
        axis = batch_dims + scope.index(var)
        rest = tuple(v for v in scope if v != var)
        if maximise:
            value, argmax = joint.max(axis)
            traceback.append((var, rest, argmax))
        else:
            value = _LogSumExp.apply(joint, axis)
        factors.append(Factor(rest, value))
    return factors, traceback


def _scalar(remaining: Sequence[Factor]) -> torch.Tensor:
    """Combine the variable-free factors left after elimination into log Z (batch-shaped)."""
    leftovers = [f for f in remaining if f.vars]
    if leftovers:
        raise ModelError(f"variables {[f.vars for f in leftovers]} were not eliminated; pass "
                         "an order naming every variable.")
    return sum(f.log_table for f in remaining)  # type: ignore[return-value]


def _select(argmax: torch.Tensor, values: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """``argmax[b, values...]`` for every batch index b, where each value is batch-shaped."""
    if k == 0:
        return argmax
    own = argmax.shape[: argmax.dim() - k]
    batch = torch.broadcast_shapes(own, *(v.shape for v in values))
    flat = argmax.reshape((*own, -1)).expand((*batch, -1))
    index = torch.zeros(batch, dtype=torch.long, device=argmax.device)
    for value, size in zip(values, argmax.shape[argmax.dim() - k:], strict=True):
        index = index * size + value.expand(batch).long()
    return flat.gather(-1, index.unsqueeze(-1)).squeeze(-1)


def evidence_factor(var: str, state: torch.Tensor | int, cardinality: int,
                    like: torch.Tensor) -> Factor:
    """A 0/-inf indicator fixing ``var`` to ``state`` (batch-shaped for many cases)."""
    state = torch.as_tensor(state, device=like.device)
    states = torch.arange(cardinality, device=like.device)
    table = torch.where(state.unsqueeze(-1) == states, 0.0, -math.inf).to(like.dtype)
    return Factor((var,), table)


"""``genppl.fit(model, data, engine="cd")``: contrastive divergence (Hinton 2002) and
persistent contrastive divergence (Tieleman 2008).

For a model whose law is a product of potentials over finite variables -- a Boltzmann
machine, an RBM, an MRF with learnable potentials -- write ``E(x)`` for the sum of its
log-potentials at a joint state ``x = (v, h)``, ``v`` the variables the data name. The
gradient of the log-likelihood of one case is

    d/dθ log p(v) = E_{h ~ p(h | v)}[dE(v, h)/dθ] - E_{x ~ p(x)}[dE(x)/dθ],

and ``log Z``, which the second term differentiates, is intractable beyond toy sizes. Both
terms are estimated by Gibbs sampling on the model's grounding (``genppl.gibbs``): the
*positive phase* clamps the data's variables and draws the others given them, the *negative
phase* runs ``k`` sweeps of the whole graph from the positive states (CD-k) or from chains
kept between steps (PCD). The update is autograd of the minibatch mean of
``E(positive state) - E(negative state)`` in the params, so any differentiable potential
works: nothing here knows what an RBM is.

Cases: the model is declared for one case (an RBM over one image). Each data entry has a
leading axis of cases, then the node's own layout (time axis for a chain, then its plates).
A minibatch of B cases is a state of shape ``(B, V)`` on the one-case grounding: the B
chains share its factor rows, so nothing is copied per case. The grounding, its colouring
and the kernel's colour plans are built once; each step remakes the one-case model's
tables (``Tabulation``: its factories called again on the recorded grids, differentiable
in the params), reads only the new table values into the same structure
(``group_tables``, ``FactorGraph.with_tables``), and the kernel recomputes its matrices
from them. The sufficient statistics -- how many chains sit in each cell of each
factor row -- are a Gram matrix of state indicators for pairwise rows (one matmul, as an
RBM's ``v^T h``), a bincount over the batch for larger factors; the surrogate's gradient in
each table cell is its count, handed to autograd at the tables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch

from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError, suggest
from genppl.gibbs.cases import data_cases
from genppl.gibbs.grounding import FactorGraph, FactorGroup, ground, group_tables
from genppl.gibbs.kernel import colouring, run_of, updates
from genppl.results import FitResult
from genppl.runtime.options import Role, option
from genppl.runtime.params import param_values
from genppl.runtime.progress import progress_bar, seed_everything
from genppl.tabulation.tabulation import Tabulation

#: ``callback(step, params)`` after each update, with the current (constrained) params.
Callback = Callable[[int, dict[str, torch.Tensor]], None]


class Statistics:
    """How many of a batch of states ``(B, V)`` sit in each cell of each factor row of a
    one-case graph: ``(F, K ** arity)`` per group, the sufficient statistics of CD's
    gradient (the log joint summed over the batch is ``sum(counts * tables)``).

    One-variable rows read a histogram of each instance's states (the weights times the
    states' indicators, one matrix-vector product). Pairwise rows whose
    instances at the two positions are few enough (an RBM's visible x hidden layers) read
    one Gram matrix of state indicators, ``X_a^T X_b`` -- an RBM's ``v^T h`` -- for the
    cells where both instances are in states 1..K-1; the cells with a state 0 follow from
    the histogram by subtraction. Other rows are a bincount over the batch of their
    cells."""

    def __init__(self, graph: FactorGraph) -> None:
        self.size, self.states = graph.size, graph.states
        self.plans = [self._plan(g) for g in graph.groups]

    def _plan(self, group: FactorGroup) -> tuple[str, tuple[torch.Tensor, ...]]:
        index = group.index
        if group.arity == 1:
            return "histogram", (index[:, 0],)
        if group.arity == 2:
            (a, la), (b, lb) = (torch.unique(index[:, j], return_inverse=True) for j in range(2))
            if len(a) * len(b) <= 8 * len(index):
                k = self.states - 1
                cell = torch.arange(k, device=index.device)
                at = ((la[:, None, None] * k + cell[:, None]) * (len(b) * k)
                      + lb[:, None, None] * k + cell)
                return "gram", (index, run_of(a), run_of(b), at)
        return "bincount", (index,)

    def counts(self, state: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
        """The counts of ``state`` ``(B, V)``, each state counted ``weights`` ``(B,)``
        times (floating, the tables' dtype): with weights +1 and -1, the difference of two
        batches' counts in one pass."""
        x = self._indicators(state, weights.dtype)  # (B, V, K - 1)
        upper = (weights @ x.flatten(1)).view(self.size, -1)
        histogram = torch.cat([weights.sum() - upper.sum(1, keepdim=True), upper], 1)
        out = []
        for kind, plan in self.plans:
            if kind == "histogram":
                out.append(histogram[plan[0]])
            elif kind == "gram":
                out.append(self._gram(x, weights, histogram, *plan))
            else:
                out.append(self._bincount(state, weights, plan[0]))
        return out

    def _indicators(self, state: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(B, V, K - 1)``: whether each instance is in state 1, 2, ..., K - 1."""
        if self.states == 2:
            return state.to(dtype)[..., None]
        return (state[..., None] == torch.arange(1, self.states, device=state.device)).to(dtype)

    def _gram(self, x: torch.Tensor, weights: torch.Tensor, histogram: torch.Tensor,
              index: torch.Tensor, a: slice | torch.Tensor, b: slice | torch.Tensor,
              at: torch.Tensor) -> torch.Tensor:
        """Pairwise counts ``(F, K * K)``: states 1..K-1 of both from the Gram matrix of
        the indicators ``x``, the rest from the histogram (each row's counts add up to its
        instances' histograms)."""
        k = self.states
        gram = (x[:, a].flatten(1) * weights[:, None]).T @ x[:, b].flatten(1)
        out = histogram.new_empty(len(index), k, k)
        out[:, 1:, 1:] = gram.reshape(-1)[at]
        out[:, 1:, 0] = histogram[index[:, 0], 1:] - out[:, 1:, 1:].sum(2)
        out[:, 0, :] = histogram[index[:, 1]] - out[:, 1:, :].sum(1)
        return out.flatten(1)

    def _bincount(self, state: torch.Tensor, weights: torch.Tensor, index: torch.Tensor
                  ) -> torch.Tensor:
        k, rows, arity = self.states, len(index), index.shape[1]
        cell = sum(state[:, index[:, j]] * k ** (arity - 1 - j) for j in range(arity))
        flat = torch.arange(rows, device=state.device) * k ** arity + cell  # type: ignore[operator]
        return torch.bincount(flat.reshape(-1), weights.repeat_interleave(rows),
                              minlength=rows * k ** arity).to(weights.dtype).reshape(rows, -1)


@dataclass(frozen=True, kw_only=True)
class CDOptions:
    """Options of engine ``cd``."""

    k: int = option(1, "negative-phase sweeps per update (CD-k)")
    persistent: bool = option(False, "keep batch_size negative chains across updates (PCD)")
    steps: int = option(1000, "SGD updates", role=Role.STEPS)
    lr: float = option(0.05, "SGD learning rate")
    momentum: float = option(0.0, "SGD momentum, in [0, 1)")
    batch_size: int = option(100, "cases per minibatch")
    positive_sweeps: int = option(1, "positive-phase sweeps over the unclamped instances")
    learn: Sequence[str] | None = option(None, "the params to fit (None: all)")
    init: dict[str, Any] | None = option(None, "starting values of params by name")
    seed: int | None = option(None, "seed (None: torch's global stream)", role=Role.SEED)
    progress: bool = option(True, "a progress bar", role=Role.PROGRESS)
    callback: Callback | None = option(None, "callback(step, params) after each update")


def fit(model: Model, data: dict[str, Any] | None, options: CDOptions) -> FitResult:
    """``steps`` updates of SGD (``lr``, ``momentum``) on minibatches of ``batch_size``
    cases, drawn without replacement epoch by epoch.

    The positive phase makes ``positive_sweeps`` sweeps over the unclamped instances; one
    is an exact draw when they are conditionally independent given the data (an RBM's
    hidden layer). The negative phase makes ``k`` sweeps, updating the colours holding data
    first, so that CD-1 on an RBM is the textbook v -> h -> v' -> h'. ``persistent=True``
    keeps ``batch_size`` negative chains across steps (PCD). ``learn`` names the params to
    fit (default: all); ``init`` gives starting values of params (default: their declared
    ones). Params live in a param store of their own for the run; the fitted values come
    back in ``FitResult.params``, the last negative states (the "fantasy particles") in
    ``info["negative"]``. ``losses`` are the surrogate ``-(E(positive) - E(negative))``
    per case, whose gradient is the CD estimate; it is not the log-likelihood."""
    k, persistent, steps, lr, momentum = (options.k, options.persistent, options.steps,
                                          options.lr, options.momentum)
    batch_size, positive_sweeps = options.batch_size, options.positive_sweeps
    for name, value in (("k", k), ("steps", steps), ("batch_size", batch_size),
                        ("positive_sweeps", positive_sweeps)):
        if not isinstance(value, int) or value < 1:
            raise ModelError(f"engine 'cd': {name} must be an int >= 1, got {value!r}.")
    if not lr > 0 or not 0 <= momentum < 1:
        raise ModelError(f"engine 'cd': lr must be > 0 and momentum in [0, 1), got lr={lr}, "
                         f"momentum={momentum}.")
    start = time.perf_counter()
    _check_undirected(model)
    seed_everything(options.seed)
    with param_values(model, options.init):
        tabulate = Tabulation(model, {})  # per update: only the tables' new values
        one = ground(tabulate(grad=True))
        cases = data_cases(model, one, data, "cd")
        names = _learned(model, options.learn)
        count = next(iter(cases.values())).shape[0]
        batch = min(batch_size, count)
        colours, positive = _phases(one, cases)
        statistics = Statistics(one)
        leaves = [pyro.param(n).unconstrained() for n in names]
        optimiser = torch.optim.SGD(leaves, lr=lr, momentum=momentum)
        device, dtype = one.padding.device, one.padding.dtype
        state = torch.zeros(batch, one.size, dtype=torch.long, device=device)
        signs = torch.cat([torch.ones(batch, dtype=dtype, device=device),
                           -torch.ones(batch, dtype=dtype, device=device)])
        chains: torch.Tensor | None = None
        tables = [g.tables for g in one.groups]  # step 0 reuses the grounding's
        losses: list[float] = []
        batches = _minibatches(count, batch, device)
        bar = progress_bar(range(steps), total=steps, desc=f"cd {model.name}",
                           enabled=options.progress)
        for step in bar:
            if step:  # new param values: new tables in the same structure
                tables = list(group_tables(tabulate(grad=True), one))
            graph = one.with_tables([t.detach() for t in tables])
            chosen = next(batches)
            with torch.no_grad():
                for name, values in cases.items():
                    b = one.blocks[name]
                    state[:, b.offset:b.offset + b.size] = values[chosen]
                state, negative = _phase_draws(updates(graph, colours), positive, state,
                                               chains, k, positive_sweeps)
                if persistent:
                    chains = negative
                visits = statistics.counts(torch.cat([state, negative]), signs)
                # Cells no chain visits may hold -inf (padding, impossible states): left out.
                gap = sum(torch.where(c != 0, c * t.reshape(len(c), -1), 0).sum()
                          for c, t in zip(visits, tables, strict=True)) / batch
            optimiser.zero_grad()
            _backward(tables, [-c / batch for c in visits])
            optimiser.step()
            losses.append(-float(gap))
            if not math.isfinite(losses[-1]):
                raise ModelError(f"engine 'cd': the surrogate became {losses[-1]} at step "
                                 f"{step}; a potential is -inf at a sampled state or lr={lr} "
                                 "is too large.")
            if options.callback is not None:
                options.callback(step, {n: pyro.param(n).detach() for n in names})
        params = {n: pyro.param(n).detach().clone() for n in model.names("param")}
    negatives = {b.name: b.states[negative[:, b.offset:b.offset + b.size]].reshape(
        batch, *b.shape) for b in one.blocks.values()}
    return FitResult(model.name, "cd", params, losses, time.perf_counter() - start,
                     info={"k": k, "persistent": persistent, "batch_size": batch,
                           "colours": len(colours), "cases": count, "negative": negatives})


def _phases(graph: FactorGraph, cases: dict[str, torch.Tensor]
            ) -> tuple[list[torch.Tensor], list[bool]]:
    """The colours of both phases, and which are free (drawn in the positive phase).

    Each colour is split into its clamped and free instances (subsets of a colour are
    colours), the clamped ones first: a negative sweep then starts where the data are and
    ends with every free instance drawn given the new values (CD-1 on an RBM is the
    textbook v -> h -> v' -> h'). One colour list serves both phases, so the kernel plans
    its updates once."""
    clamped = torch.zeros(graph.size, dtype=torch.bool, device=graph.padding.device)
    for name in cases:
        b = graph.blocks[name]
        clamped[b.offset:b.offset + b.size] = True
    parts = [(ids[clamped[ids]], ids[~clamped[ids]]) for ids in colouring(graph)]
    colours = [ids for part in zip(*parts, strict=True) for ids in part if len(ids)]
    return colours, [not bool(clamped[ids[0]]) for ids in colours]


def _phase_draws(steps: list[Any], positive: list[bool], state: torch.Tensor,
                 chains: torch.Tensor | None, k: int, positive_sweeps: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive states (``positive_sweeps`` sweeps of the free colours of ``state``,
    whose clamped instances hold the data) and the negative ones (``k`` sweeps of every
    colour from the positive states, or from the persistent ``chains``)."""
    free = [u for u, p in zip(steps, positive, strict=True) if p]
    for _ in range(positive_sweeps):
        state = _sweep(free, state)
    negative = state if chains is None else chains
    for _ in range(k):
        negative = _sweep(steps, negative)
    return state, negative


def _backward(tables: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    """Gradients of the surrogate into the params: its gradient in each table entry is the
    entry's visit count (positive minus negative, per case), handed to autograd at the
    tables, which are all that depends on the params."""
    pairs = [(t, g.view_as(t)) for t, g in zip(tables, grads, strict=True) if t.requires_grad]
    if pairs:
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])


def _sweep(steps: list[Any], state: torch.Tensor) -> torch.Tensor:
    """``kernel.sweep`` over prebuilt colour updates (a subset of them for the positive
    phase), on a batch of states ``(B, V)``."""
    state = state.clone()
    for update in steps:
        state[:, update.at] = update.sample(state)
    return state


def _check_undirected(model: Model) -> None:
    for node in model.nodes.values():
        if node.kind in ("observed", "input"):
            raise ModelError(
                f"engine 'cd': {node.kind} node {node.name!r} ({node.declared_at}) -- CD fits "
                "models whose law is a product of potentials over finite variables, with the "
                f"data as values of some of them. Declare {node.name!r} with m.variable(...) "
                "and factors on it, and pass its values as data.")


def _learned(model: Model, learn: Sequence[str] | None) -> list[str]:
    params = model.names("param")
    if not params:
        raise ModelError(f"engine 'cd': model {model.name!r} has no params to fit; declare "
                         "the potentials' weights with m.param(...).")
    for name in learn or ():
        if name not in params:
            raise ModelError(f"engine 'cd': learn= names {name!r}, which is not a param of "
                             f"{model.name!r}." + suggest(name, params))
    return list(learn) if learn is not None else params


def _minibatches(count: int, size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Case indices, ``size`` at a time, epoch after epoch (a fresh permutation each;
    a last partial batch is left out)."""
    while True:
        order = torch.randperm(count, device=device)
        for first in range(0, count - size + 1, size):
            yield order[first:first + size]


CD = register(Engine(
    "cd", "contrastive divergence (CD-k) and persistent CD for models built from potentials "
    "over finite variables (RBMs, Boltzmann machines, MRFs): Gibbs positive and negative "
    "phases on the grounded model, gradients by autograd", returns=Returns.FIT,
    accepts=Feature.FINITE | Feature.FACTORS, needs=Feature.FACTORS, options=CDOptions,
    fit=fit))

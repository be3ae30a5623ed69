"""log Z of an undirected model of finite variables by annealed importance sampling
(Salakhutdinov & Murray 2008), on the model's grounded factor graph (``genppl.gibbs``).

The path. The *base* makes every instance independent with log-potentials ``u0_i``: by
default its own (the graph's padding and one-variable rows: biases, fields, a root's prior
table), or, from cases of some variables (``start_from_cases``), those variables'
marginals in the cases. log Z_0 = sum_i logsumexp_k u0_i(k) is exact, and exact draws are
one categorical per instance. With E(x) the model's log-potential (its one-variable rows
``U(x)`` plus its rows of two or more variables, the *interaction* ``I(x)``: couplings,
RBM weights), the targets are f_b(x) = exp((1 - b) U0(x) + b E(x)), from the base (b = 0)
to the model (b = 1); with the default base that is exp(U(x) + b I(x)). Keeping each
unit's own potential in the base, rather than uniform states, starts the chains where the
biases put them; starting the visible units from the data's marginals, as Salakhutdinov &
Murray do, starts them nearer still to where a trained model's mass is.

The weights. A chain starts from an exact base draw; at temperature t its log weight gains
log f_t(x_{t-1}) - log f_{t-1}(x_{t-1}), then it makes one Gibbs sweep leaving f_t invariant.
E[w] = Z / Z_0, so log Z_0 + log mean w is a stochastic lower bound on log Z. Where one
colour holds exactly one instance of every interaction row (either layer of an RBM, either
colour of a checkerboard), its instances are independent given the rest, and the weights
use the targets with that colour *summed out* exactly (``UndirectedPath.log_marginal``),
as Salakhutdinov & Murray sum out an RBM's hidden units: each sweep draws that colour first,
so the chain on the other instances moves by a kernel leaving their marginal invariant, and
the weights no longer carry the summed instances' sampling noise (Rao-Blackwellisation; on a
784 x 500 RBM it is what makes the estimate usable). Otherwise the gain is (b_t - b_{t-1})
(E(x) - U0(x)), row by row. Every part of a colour's Gibbs update
(``genppl.gibbs.kernel.ColourUpdate``) is linear in the tables, so the updates of f_b are
the model's scaled (``UndirectedPath.tempered``), never rebuilt. A hard zero in an
interaction row (-inf) stays -inf at every b > 0: a base draw that breaks one gets weight
zero.

Given data on some variables (an RBM's visible units, one case per entry of a leading axis),
the unnormalised log marginal of a case, log sum_h exp E(v, h) (minus an RBM's free
energy), is exact when the other variables are conditionally independent given the data
(no row reads two of them): the rows reading only data, plus, per free instance, the
logsumexp of its full conditional. Its log-likelihood is that minus log Z.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from genppl.errors import ModelError
from genppl.gibbs.grounding import FactorGraph, FactorGroup
from genppl.gibbs.kernel import ColourUpdate, colouring, draw, updates


@dataclass(frozen=True)
class UndirectedPath:
    """The tempered path of ``graph`` (see the module doc): ``colours`` its Gibbs colours in
    update order, ``start`` the base's log-potentials ``(V, K)``, ``own`` the units' own
    (padding and one-variable rows), ``ends`` the colours' updates at b = 1 and ``summed``
    the colour summed out of the weights (the first, holding exactly one instance of every
    row of two or more variables), None when no colour does."""

    graph: FactorGraph
    colours: list[torch.Tensor]
    start: torch.Tensor
    own: torch.Tensor
    ends: list[ColourUpdate]
    summed: int | None

    @staticmethod
    def of(graph: FactorGraph, start: torch.Tensor | None = None,
           prefer: torch.Tensor | None = None) -> UndirectedPath:
        """The path from ``start`` (default: the units' own potentials) to the model,
        summing out the colour of instances ``prefer`` (sorted ids) where it is one that
        can be, else the first such colour."""
        colours = colouring(graph)
        covering = _covering(graph, colours, prefer)
        if covering is not None:  # drawn first in a sweep: the others then move given it
            colours = [colours[covering], *colours[:covering], *colours[covering + 1:]]
        own = own_logits(graph)
        return UndirectedPath(graph, colours, own if start is None else start, own,
                              updates(graph, colours), None if covering is None else 0)

    def base_log_partition(self) -> torch.Tensor:
        """log Z_0, exactly: the instances are independent under the base."""
        return torch.logsumexp(self.start, -1).sum()

    def draw_base(self, chains: int) -> torch.Tensor:
        """``(chains, V)`` exact draws from the base."""
        return draw(self.start.expand(chains, *self.start.shape))

    def gain(self, before: float, after: float, state: torch.Tensor) -> torch.Tensor:
        """``(chains,)``: log f_after - log f_before at ``state`` ``(chains, V)``, what a
        weight gains between two temperatures: with a summed colour, of the targets with
        that colour summed out (``log_marginal``, its matrix product made once for both),
        else ``(after - before) excess``."""
        if self.summed is None:
            return (after - before) * self.excess(state)
        parts = self._summed_parts(state)
        return self._log_marginal(after, *parts) - self._log_marginal(before, *parts)

    def log_marginal(self, beta: float, state: torch.Tensor) -> torch.Tensor:
        """``(chains,)``: log of f_beta summed over the states of the summed colour's
        instances, the others at ``state``, less the base's log-potential of the others
        (which does not depend on beta): beta (U - U0) of the others plus, per summed
        instance, the logsumexp of its tempered conditional."""
        return self._log_marginal(beta, *self._summed_parts(state))

    def _summed_parts(self, state: torch.Tensor
                      ) -> tuple[ColourUpdate, torch.Tensor, torch.Tensor]:
        """What ``log_marginal`` needs at any beta: the summed colour's update at b = 1,
        the others' ``U - U0`` ``(chains,)``, and the summed instances' conditionals less
        their constant part at b = 1, the rows they share with the others ``(chains, C,
        K)`` (0 at padding)."""
        if self.summed is None:
            raise ModelError("no colour of the graph holds one instance of every row of two "
                             "or more variables: there is nothing to sum out.")
        end = self.ends[self.summed]
        others = self._lift(state)
        others[..., end.at] = 0.0
        shared = torch.where(torch.isneginf(end.base), 0.0, end.logits(state) - end.base)
        return end, others.sum(-1), shared

    def _log_marginal(self, beta: float, end: ColourUpdate, others: torch.Tensor,
                      shared: torch.Tensor) -> torch.Tensor:
        constant = _tempered_base(end.base, self.start[end.ids], beta)
        rows = beta * shared if beta > 0 else torch.zeros_like(shared)  # -inf rows: b > 0
        return beta * others + torch.logsumexp(constant + rows, -1).sum(-1)

    def excess(self, state: torch.Tensor) -> torch.Tensor:
        """``(chains,)``: log f_1 - log f_0 at ``state`` ``(chains, V)``, the model's
        log-potential less the base's, unit by unit (a model equal to its base gains
        exactly 0) and row by row."""
        return self._lift(state).sum(-1) + self.interaction(state)

    def interaction(self, state: torch.Tensor) -> torch.Tensor:
        """``(chains,)``: the rows of two or more variables at ``state`` ``(chains, V)``,
        each read at its cell."""
        total = self.graph.padding.new_zeros(state.shape[:-1])
        for group in self.graph.groups:
            if group.arity > 1:
                total = total + rows_at(group.tables, group.index, state).sum(-1)
        return total

    def tempered(self, beta: float) -> list[ColourUpdate]:
        """The colours' updates of f_beta: the base's potentials times ``1 - beta`` plus
        the model's times ``beta`` (its -inf kept), from the model's updates without
        rebuilding them (every part of an update is linear in the tables)."""
        return [_scaled(update, self.start[update.ids], beta) for update in self.ends]

    def sweep(self, beta: float, state: torch.Tensor) -> torch.Tensor:
        """One Gibbs sweep of f_beta over ``state`` ``(chains, V)``, the summed colour
        first."""
        state = state.clone()
        for update in self.tempered(beta):
            state[..., update.at] = update.sample(state)
        return state

    def _lift(self, state: torch.Tensor) -> torch.Tensor:
        """``(chains, V)``: each instance's own log-potential less the base's, at
        ``state``."""
        lift = torch.where(torch.isneginf(self.own), 0.0, self.own - self.start)
        return lift.expand(*state.shape, -1).gather(-1, state[..., None]).squeeze(-1)


def own_logits(graph: FactorGraph) -> torch.Tensor:
    """``(V, K)``: each instance's own log-potentials (padding and one-variable rows)."""
    logits = graph.padding.clone()
    for group in graph.groups:
        if group.arity == 1:
            logits.index_add_(0, group.index[:, 0], group.tables)
    return logits


def start_from_cases(graph: FactorGraph, cases: Mapping[str, torch.Tensor],
                     pseudo_count: float = 1.0) -> torch.Tensor:
    """``(V, K)``: a base whose instances of the variables ``cases`` name (state indices
    ``(cases, instances)``) are their marginals in the cases, ``pseudo_count`` added to
    each state (no state impossible), the others their own potentials. Salakhutdinov &
    Murray (2008) start an RBM's AIS from such visible biases: the base then puts the
    chains near the data, where the trained model's mass is."""
    logits = own_logits(graph)
    valid = torch.isfinite(graph.padding)
    for name, values in cases.items():
        b = graph.blocks[name]
        at = slice(b.offset, b.offset + b.size)
        counts = torch.nn.functional.one_hot(values, graph.states).sum(0).to(logits)
        counts = torch.where(valid[at], counts + pseudo_count, 0.0)
        logits[at] = (counts / counts.sum(-1, keepdim=True)).log()
    return logits


def _covering(graph: FactorGraph, colours: list[torch.Tensor],
              prefer: torch.Tensor | None = None) -> int | None:
    """A colour holding exactly one instance of every row of two or more variables
    (either layer of an RBM, either colour of a checkerboard): the one equal to ``prefer``
    if it is such a colour, else the first, else None."""
    found = []
    for c, ids in enumerate(colours):
        inside = torch.zeros(graph.size, dtype=torch.long, device=ids.device)
        inside[ids] = 1
        if all(bool((inside[g.index].sum(1) == 1).all()) for g in graph.groups
               if g.arity > 1):
            found.append(c)
    preferred = [c for c in found if prefer is not None and torch.equal(colours[c], prefer)]
    return (preferred or found or [None])[0]


def _scaled(update: ColourUpdate, start: torch.Tensor, beta: float) -> ColourUpdate:
    """``update`` (of the model) on the path at ``beta``: its constant part ``start + beta
    (base - start)`` where finite (exactly ``start`` where the two agree), its pairwise
    cells, log-odds matrix and gathered tables times ``beta``, -inf kept."""
    return replace(
        update, base=_tempered_base(update.base, start, beta),
        cells=None if update.cells is None else beta * update.cells,
        odds_matrix=None if update.odds_matrix is None else beta * update.odds_matrix,
        gather_tables=tuple(torch.where(torch.isneginf(t), t, beta * t)
                            for t in update.gather_tables))


def _tempered_base(base: torch.Tensor, start: torch.Tensor, beta: float) -> torch.Tensor:
    """A colour's constant part at ``beta``: ``start + beta (base - start)`` where finite
    (exactly ``start`` where the two agree), -inf (padding) kept."""
    return torch.where(torch.isneginf(base), base, start + beta * (base - start))


def rows_at(tables: torch.Tensor, index: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """``(..., F)``: factor rows ``tables`` ``(F, K, ..., K)`` reading instances ``index``
    ``(F, arity)``, each at the states ``state`` ``(..., V)`` give them."""
    k, arity = tables.shape[1], index.shape[1]
    cell = sum(state[..., index[:, j]] * k ** (arity - 1 - j) for j in range(arity))
    flat = tables.flatten(1)
    rows = torch.arange(len(tables), device=state.device)
    return flat[rows, cell]  # type: ignore[index]


def anneal_partition(path: UndirectedPath, betas: Sequence[float], chains: int,
                     steps: Sequence[int] | None = None) -> torch.Tensor:
    """The ``(chains,)`` log weights of AIS along ``betas`` (0 to 1) with one Gibbs sweep
    per intermediate temperature, all chains as one ``(chains, V)`` state; ``steps``
    iterates over the temperature indices 1..T (a progress bar), default plain."""
    state = path.draw_base(chains)
    log_weight = path.graph.padding.new_zeros(chains)
    last = len(betas) - 1
    for t in range(1, last + 1) if steps is None else steps:
        log_weight = log_weight + path.gain(betas[t - 1], betas[t], state)
        if t < last:
            state = path.sweep(betas[t], state)
    return log_weight


def reverse_anneal(path: UndirectedPath, betas: Sequence[float],
                   cases: Mapping[str, torch.Tensor], chains: int,
                   steps: Sequence[int] | None = None) -> torch.Tensor:
    """RAISE (Burda, Grosse & Salakhutdinov 2015): ``(chains, cases)`` log weights of
    annealing each case (state indices ``(cases, instances)`` per variable, as
    ``free_log_marginal`` takes them) back from the model to the base, less the case's
    log f_1 (an RBM's -F). The data must leave free exactly the summed colour.

    The forward annealing, v_0 from the base then one sweep at each of b_1 .. b_T = 1, is a
    generative model of its own, the *RAISE model*. Run backwards from a case v_T = v --
    v_{k-1} drawn by the sweep at b_k, which, the summed colour drawn first, is reversible
    for f_{b_k} marginally -- the weight p_0(v_0) prod_k f_k(v_k) / f_k(v_{k-1}) is an
    unbiased estimate of the RAISE model's p(v); in logs it telescopes to log f_1(v) - log
    Z_0 - sum_k (log f_k - log f_{k-1})(v_{k-1}), and this returns the part after log f_1(v).
    log mean w is a stochastic lower bound on the RAISE model's log-likelihood, which tends
    to the model's as temperatures are added and, with too few, falls below it (the RAISE
    model misses modes the chains do not reach): a conservative estimate. ``steps``
    iterates over the temperature indices T..1 (a progress bar), default plain."""
    if path.summed is None:
        raise ModelError("reverse annealing from the data needs a colour of the graph to "
                         "sum out (one instance of every row of two or more variables: an "
                         "RBM's hidden layer); this graph has none.")
    state, clamped = case_states(path.graph, cases)
    free = torch.nonzero(~clamped).squeeze(-1)
    summed = path.colours[path.summed]
    if not torch.equal(free, summed):
        layer = torch.zeros_like(clamped)
        layer[summed] = True
        raise ModelError("reverse annealing from the data needs data on every variable but "
                         f"those summed out ({sorted(_names(path.graph, layer))}: an RBM's "
                         "hidden units); the data leave free "
                         f"{sorted(_names(path.graph, ~clamped))}.")
    count = len(state)
    state = state.expand(chains, *state.shape).reshape(chains * count, -1)
    log_weight = path.graph.padding.new_zeros(chains * count)
    for t in range(len(betas) - 1, 0, -1) if steps is None else steps:
        state = path.sweep(betas[t], state)
        log_weight = log_weight - path.gain(betas[t - 1], betas[t], state)
    return log_weight.view(chains, count) - path.base_log_partition()


def free_log_marginal(graph: FactorGraph, cases: Mapping[str, torch.Tensor]
                      ) -> torch.Tensor:
    """``(cases,)``: per case, log sum over the instances the data leave free of
    exp(log-potentials), the data's instances clamped at ``cases`` (state indices ``(cases,
    instances)`` per variable: ``genppl.gibbs.cases.data_cases``); exact when no row reads
    two free instances, refused otherwise."""
    state, clamped = case_states(graph, cases)
    free = torch.nonzero(~clamped).squeeze(-1)
    total = graph.padding.new_zeros(len(state))
    for group in graph.groups:
        reads_free = (~clamped[group.index]).sum(1)
        if bool((reads_free > 1).any()):
            raise ModelError(_coupled_message(graph, group, reads_free, list(cases)))
        fixed = reads_free == 0
        total = total + rows_at(group.tables[fixed], group.index[fixed], state).sum(-1)
    if len(free):
        conditionals = updates(graph, [free])[0].logits(state)  # (cases, free, K)
        total = total + torch.logsumexp(conditionals, -1).sum(-1)
    return total


def case_states(graph: FactorGraph, cases: Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cases, V)`` states with the data's instances at ``cases`` and the others at 0,
    and which instances the data set ``(V,)``."""
    count = len(next(iter(cases.values())))
    state = torch.zeros(count, graph.size, dtype=torch.long, device=graph.padding.device)
    clamped = torch.zeros(graph.size, dtype=torch.bool, device=state.device)
    for name, values in cases.items():
        b = graph.blocks[name]
        state[:, b.offset:b.offset + b.size] = values
        clamped[b.offset:b.offset + b.size] = True
    return state, clamped


def _names(graph: FactorGraph, instances: torch.Tensor) -> set[str]:
    """The variables with an instance where ``instances`` ``(V,)`` is True."""
    return {b.name for b in graph.blocks.values()
            if bool(instances[b.offset:b.offset + b.size].any())}


def _coupled_message(graph: FactorGraph, group: FactorGroup, reads_free: torch.Tensor,
                     names: Sequence[str]) -> str:
    row = group.index[int(torch.nonzero(reads_free > 1)[0])]
    coupled = sorted({b.name for b in graph.blocks.values() for i in row.tolist()
                      if b.offset <= i < b.offset + b.size})
    return (f"engine 'ais': given data on {sorted(names)}, a factor still couples "
            f"{coupled}; the log-likelihood of a case sums the variables the data leave free "
            "exactly only when they are independent given the data (an RBM's hidden units). "
            "Give data on more variables, or compare log Z alone (no data).")

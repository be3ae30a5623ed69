"""log Z of an undirected model of finite variables by annealed importance sampling
(Salakhutdinov & Murray 2008), on the model's grounded factor graph (``genppl.gibbs``).

The path. The graph's one-variable rows (biases, fields, a root's prior table) and its
padding make the *base*: every instance independent, its own log-potentials ``u_i``, so
log Z_0 = sum_i logsumexp_k u_i(k) is exact and exact draws are one categorical per
instance. The rows of two or more variables (couplings, RBM weights) are the interaction
``I(x)``, scaled by the inverse temperature: f_b(x) = exp(sum_i u_i(x_i) + b I(x)), from the
base (b = 0) to the model (b = 1). Keeping each unit's own potential in the base, rather
than starting from uniform states, starts the chains where the biases put them, which is
what Salakhutdinov & Murray recommend (they use the data's marginals for an RBM's visible
biases); a model with no one-variable rows starts from uniform states.

The weights. A chain starts from an exact base draw; at temperature t its log weight gains
(b_t - b_{t-1}) I(x_{t-1}), then it makes one Gibbs sweep leaving f_t invariant (the
grounded graph with its interaction tables scaled by b_t: ``FactorGraph.with_tables``, so the
kernel's colour plans are reused). E[w] = Z / Z_0, so log Z_0 + log mean w is a stochastic
lower bound on log Z. A hard zero in an interaction row (-inf) stays -inf at every b > 0: a
base draw that breaks one gets weight zero.

Given data on some variables (an RBM's visible units, one case per entry of a leading axis),
the unnormalised log marginal of a case, log sum_h exp E(v, h) (minus an RBM's free
energy), is exact when the other variables are conditionally independent given the data
(no row reads two of them): the rows reading only data, plus, per free instance, the
logsumexp of its full conditional. Its log-likelihood is that minus log Z.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from genppl.errors import ModelError
from genppl.gibbs.grounding import FactorGraph, FactorGroup
from genppl.gibbs.kernel import colouring, draw, sweep, updates


@dataclass(frozen=True)
class UndirectedPath:
    """The tempered path of ``graph`` (see the module doc); ``colours`` its Gibbs colours."""

    graph: FactorGraph
    colours: list[torch.Tensor]

    @staticmethod
    def of(graph: FactorGraph) -> UndirectedPath:
        return UndirectedPath(graph, colouring(graph))

    def base_logits(self) -> torch.Tensor:
        """``(V, K)``: each instance's own log-potentials (padding and one-variable rows)."""
        logits = self.graph.padding.clone()
        for group in self.graph.groups:
            if group.arity == 1:
                logits.index_add_(0, group.index[:, 0], group.tables)
        return logits

    def base_log_partition(self) -> torch.Tensor:
        """log Z_0, exactly: the instances are independent under the base."""
        return torch.logsumexp(self.base_logits(), -1).sum()

    def draw_base(self, chains: int) -> torch.Tensor:
        """``(chains, V)`` exact draws from the base."""
        logits = self.base_logits()
        return draw(logits.expand(chains, *logits.shape))

    def interaction(self, state: torch.Tensor) -> torch.Tensor:
        """``(chains,)``: the rows of two or more variables at ``state`` ``(chains, V)``."""
        total = self.graph.padding.new_zeros(state.shape[:-1])
        for group in self.graph.groups:
            if group.arity > 1:
                total = total + rows_at(group.tables, group.index, state).sum(-1)
        return total

    def at(self, beta: float) -> FactorGraph:
        """The graph of f_beta: interaction tables times ``beta`` (their -inf kept)."""
        return self.graph.with_tables([
            g.tables if g.arity == 1 else torch.where(torch.isneginf(g.tables), g.tables,
                                                      beta * g.tables)
            for g in self.graph.groups])


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
        log_weight = log_weight + (betas[t] - betas[t - 1]) * path.interaction(state)
        if t < last:
            state = sweep(path.at(betas[t]), path.colours, state)
    return log_weight


def free_log_marginal(graph: FactorGraph, cases: Mapping[str, torch.Tensor]
                      ) -> torch.Tensor:
    """``(cases,)``: per case, log sum over the instances the data leave free of
    exp(log-potentials), the data's instances clamped at ``cases`` (state indices ``(cases,
    instances)`` per variable: ``genppl.gibbs.cases.data_cases``); exact when no row reads
    two free instances, refused otherwise."""
    count = len(next(iter(cases.values())))
    state = torch.zeros(count, graph.size, dtype=torch.long, device=graph.padding.device)
    clamped = torch.zeros(graph.size, dtype=torch.bool, device=state.device)
    for name, values in cases.items():
        b = graph.blocks[name]
        state[:, b.offset:b.offset + b.size] = values
        clamped[b.offset:b.offset + b.size] = True
    free = torch.nonzero(~clamped).squeeze(-1)
    total = graph.padding.new_zeros(count)
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


def _coupled_message(graph: FactorGraph, group: FactorGroup, reads_free: torch.Tensor,
                     names: Sequence[str]) -> str:
    row = group.index[int(torch.nonzero(reads_free > 1)[0])]
    coupled = sorted({b.name for b in graph.blocks.values() for i in row.tolist()
                      if b.offset <= i < b.offset + b.size})
    return (f"engine 'ais': given data on {sorted(names)}, a factor still couples "
            f"{coupled}; the log-likelihood of a case sums the variables the data leave free "
            "exactly only when they are independent given the data (an RBM's hidden units). "
            "Give data on more variables, or compare log Z alone (no data).")

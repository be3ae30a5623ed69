"""Collapsed Gibbs sampling: Dirichlet and Beta latents integrated out of the chain.

A Dirichlet latent whose rows are only read as the ``probs`` of Categorical nodes (a Beta's
elements as Bernoulli ``probs``) has, given the finite latents, a Dirichlet posterior, and
integrated out it leaves the Dirichlet-multinomial (Polya urn): the readers' draws are
exchangeable, and the probability that one more draw from row ``r`` falls in category
``c``, given the counts ``n`` of all the others, is ``(n[r, c] + alpha[r, c]) /
(n[r, .] + sum(alpha[r, .]))``. Griffiths & Steyvers's (2004) collapsed Gibbs sampler for
LDA draws each topic indicator from the product of two such ratios; this module derives
that sampler -- and the same for mixtures' weights, a Bayesian HMM's transition rows, a
Bayesian network's CPTs -- from the DSL declaration:

1. **Tabulation.** The model is tabulated as for the exact engine with a ``retable`` hook:
   every table that reads a collapsed latent is found and taken out, and CAVI's probing
   (``genppl.conjugacy.likelihoods.row_map``) says which row each of its cells reads.
   The row and the child's category give each cell of such a table a *count cell*
   ``row * categories + category``: a table of cell codes in the table's layout.
2. **Grounding.** The remaining tables are grounded into the Gibbs factor graph
   (``genppl.gibbs.grounding``); the code tables are grounded the same way into *count
   groups*: per factor instance, the count cell its draw falls in at each joint state of
   the instances it reads.
3. **Sampling.** Collapsing couples every instance that reads a collapsed latent (the
   counts are shared), so these are drawn one at a time, in order, each from its exact
   conditional given all the others: the count ratios of its count instances (after
   removing its own draws; when two of them read the same latent, the second ratio counts
   the first's draw, as the Polya urn does), times the remaining tables. This loop runs in
   plain Python over lists -- no tensor library is fast per scalar, and this is the
   textbook sequential algorithm, exact; ``Collapsed.conditional`` is its naive reference
   (the collapsed joint, evaluated at every state), and the tests hold the two equal draw
   for draw. Instances outside the count groups keep the colour updates.
4. **Uncollapsing.** Each kept state's counts give the collapsed latents' exact conditional
   posterior, from which one draw per state is returned beside the finite latents.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import accumulate
from operator import mul
from typing import Any

import pyro.distributions as dist
import torch

from genppl.conjugacy.families import (
    BetaFactor,
    ConjugateFactor,
    DirichletFactor,
    conjugate_roots,
)
from genppl.conjugacy.likelihoods import Reading, find_readings
from genppl.dsl.model import Model
from genppl.errors import ModelError
from genppl.exact.contract import Factor
from genppl.exact.factors import FactorModel, plain
from genppl.gibbs.grounding import FactorGraph, copies_of, ground, ground_table
from genppl.tabulation.tabulation import model_factors
from genppl.tabulation.uses import Use

#: The prior families Gibbs integrates out, and the child each is conjugate to.
COLLAPSIBLE = {DirichletFactor: dist.Categorical, BetaFactor: dist.Bernoulli}


def collapsible_latents(model: Model) -> dict[str, ConjugateFactor]:
    """The continuous latents Gibbs integrates out: global roots with Dirichlet or Beta
    priors read directly by random nodes. Any other continuous latent is refused, naming it
    and the engines that take it."""
    return conjugate_roots(model, "gibbs", tuple(COLLAPSIBLE),
                           "Gibbs integrates out Dirichlet latents read as Categorical probs "
                           "and Beta latents read as Bernoulli probs; use engine 'hmc_gibbs' "
                           "(NUTS on the continuous latents, Gibbs on the finite ones), "
                           "'cavi' or 'svi'.")


@dataclass(frozen=True)
class CountLatent:
    """A collapsed latent: its count cells are ``rows x categories`` (a Beta's categories
    are failure, success), ``alpha`` its prior concentrations per cell."""

    name: str
    factor: ConjugateFactor
    alpha: torch.Tensor  # (rows, categories)

    @property
    def categories(self) -> int:
        return self.alpha.shape[1]

    def posterior(self, counts: torch.Tensor) -> Any:
        """Its conditional posterior given ``counts`` ``(..., rows, categories)``, in the
        latent's shape with the counts' leading axes first."""
        conc = self.alpha + counts
        lead = counts.shape[:-2]
        shape = (*lead, *self.factor.shape)
        if isinstance(self.factor, DirichletFactor):
            return dist.Dirichlet(conc.reshape(shape))
        return dist.Beta(conc[..., 1].reshape(shape), conc[..., 0].reshape(shape))


def _alpha(factor: ConjugateFactor) -> torch.Tensor:
    if isinstance(factor, DirichletFactor):
        return factor.prior["concentration"]
    return torch.stack([factor.prior["concentration0"], factor.prior["concentration1"]], -1)


@dataclass(frozen=True)
class CountGroup:
    """The factor instances of one table that reads collapsed latent ``latent`` (an index
    into ``Collapsed.latents``): ``index[f]`` the instances instance f reads, ``cells[f, j]``
    the count cell its draw falls in at their joint state ``j`` (row-major over ``K`` states
    each), -1 at states an instance does not have."""

    latent: int
    index: torch.Tensor  # (F, arity) long
    cells: torch.Tensor  # (F, K ** arity) long

    @property
    def arity(self) -> int:
        return self.index.shape[1]

    def current(self, state: torch.Tensor, k: int) -> torch.Tensor:
        """Each instance's count cell at ``state`` (V,)."""
        flat = torch.zeros(len(self.index), dtype=torch.long, device=state.device)
        for p in range(self.arity):
            flat = flat * k + state[self.index[:, p]]
        return self.cells.gather(1, flat[:, None])[:, 0]


@dataclass(frozen=True)
class Collapsed:
    """A model with its Dirichlet and Beta latents integrated out: the Gibbs factor graph of
    the remaining tables (``graph``), the collapsed latents and the count groups of the
    tables that read them."""

    graph: FactorGraph
    latents: tuple[CountLatent, ...]
    groups: tuple[CountGroup, ...]

    @property
    def coupled(self) -> torch.Tensor:
        """The instances that read a collapsed latent, in id order: drawn one at a time."""
        ids = torch.cat([g.index.reshape(-1) for g in self.groups])
        return torch.unique(ids)

    def counts(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Each collapsed latent's counts ``(rows, categories)`` at ``state`` (V,)."""
        out = [q.alpha.new_zeros(q.alpha.shape) for q in self.latents]
        for g in self.groups:
            cells = g.current(state, self.graph.states)
            cells = cells[cells >= 0]
            out[g.latent].view(-1).index_add_(0, cells, torch.ones_like(
                cells, dtype=out[g.latent].dtype))
        return out

    def log_joint(self, state: torch.Tensor) -> torch.Tensor:
        """``log p(finite latents, data)`` with the collapsed latents integrated out: the
        remaining tables, plus each row's Dirichlet-multinomial
        ``log G(A) - log G(A + N) + sum_c [log G(alpha_c + n_c) - log G(alpha_c)]``."""
        total = self.graph.log_joint(state)
        for q, n in zip(self.latents, self.counts(state), strict=True):
            a = q.alpha
            total = total + (torch.lgamma(a.sum(-1)) - torch.lgamma((a + n).sum(-1))).sum() \
                + (torch.lgamma(a + n) - torch.lgamma(a)).sum()
        return total

    def conditional(self, state: torch.Tensor, v: int) -> torch.Tensor:
        """Instance ``v``'s full conditional log-probabilities (up to a constant) from the
        collapsed joint at each of its states: the naive reference of ``SequentialSweep``."""
        logits = self.graph.padding[v].clone()
        for s in range(self.graph.states):
            if math.isfinite(float(logits[s])):
                other = state.clone()
                other[v] = s
                logits[s] = self.log_joint(other)
        return logits

    def uncollapse(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """One draw of each collapsed latent from its conditional posterior at each state
        of ``states`` ``(..., V)``: ``{name: (..., *shape)}``."""
        per_state = [self.counts(s) for s in states.reshape(-1, states.shape[-1])]
        out = {}
        for i, q in enumerate(self.latents):
            draws = q.posterior(torch.stack([counts[i] for counts in per_state])).sample()
            out[q.name] = draws.reshape(*states.shape[:-1], *q.factor.shape)
        return out


def collapse(model: Model, data: Mapping[str, Any], latents: dict[str, ConjugateFactor]
             ) -> Collapsed:
    """Tabulate ``model`` with ``latents`` integrated out (see the module doc)."""
    order = {name: i for i, name in enumerate(latents)}
    found: list[tuple[Use, int]] = []

    def take_out(use: Use) -> torch.Tensor | None:
        readings = find_readings(use, latents, "gibbs")
        if not readings:
            return None
        reading = next(iter(readings.values()))
        q = latents[reading.target]
        child = COLLAPSIBLE[type(q)]
        if reading.attr != "probs" or not isinstance(use.base, child):
            node = use.node
            raise ModelError(
                f"engine 'gibbs': node {node.name!r} ({node.declared_at}) is a "
                f"{type(use.base).__name__} reading latent {q.name!r}; Gibbs integrates a "
                f"{q.family} out only where {child.__name__} nodes read it as probs. Use "
                "engine 'hmc_gibbs' or 'cavi'.")
        found.append((use, order[q.name]))
        return _cell_codes(use, reading, _alpha(q).shape[1]) + 1

    point = {name: q.mean() for name, q in latents.items()}
    fm = model_factors(model, data, track=True, point=point, retable=take_out)
    if not fm.variables:
        raise ModelError(f"engine 'gibbs': model {model.name!r} has no finite latents to "
                         "sample once its Dirichlet/Beta latents are integrated out; their "
                         "posterior is conjugate: use engine 'cavi' (exact here).")
    coded = {id(f): j for use, j in found for f, _ in use.placed}

    def kept(factors: list[Factor]) -> list[Factor]:
        return [replace(f, log_table=f.log_table.detach()) for f in factors
                if id(f) not in coded]

    regular = FactorModel(
        [(plates, g) for plates, f in fm.factors for g in kept([f])],
        [replace(b, first=kept(b.first), rest=kept(b.rest)) for b in fm.chains],
        fm.variables, fm.plates, fm.sizes, fm.latents, fm.nested)
    graph = ground(regular, like=found[0][0].table.detach().to(model.dtype) if found else None)
    groups = []
    for use, j in found:
        for f, steps in use.placed:
            codes = Factor(f.vars, plain(f).log_table.detach() - 1)  # masked: 0 - 1
            index, cells = ground_table(codes, steps, graph.blocks, graph.states,
                                        copies_of(regular, use.node.plates))
            cells = torch.where(torch.isfinite(cells), cells, -1.0).long()
            cells = cells.reshape(len(index), -1)
            counted = (cells >= 0).any(-1)  # a masked draw counts nowhere
            groups.append(CountGroup(j, index[counted], cells[counted]))
    count_latents = tuple(CountLatent(name, q, _alpha(q).detach()) for name, q in latents.items())
    return Collapsed(graph, count_latents, tuple(groups))


def _cell_codes(use: Use, reading: Reading, categories: int) -> torch.Tensor:
    """Each cell of ``use``'s table as the count cell its draw falls in, ``row * categories
    + category``, in float64 (exact): handed to the tabulation in place of the table, so
    the codes are broadcast, masked (to 0, hence the + 1 of the caller) and cut into chain
    steps exactly as the table would be."""
    rows = reading.rows
    if use.value is None:  # a latent child: its own states are the categories
        own = torch.arange(use.table.shape[-1], device=rows.device)
        codes = rows.unsqueeze(-1) * categories + own
    else:
        codes = rows * categories + torch.nan_to_num(use.value.to(torch.float64)).long()
    return torch.broadcast_to(codes, use.table.shape).to(torch.float64)


class SequentialSweep:
    """One sweep over the coupled instances of ``collapsed``, each drawn in id order from its
    exact conditional (see the module doc), in plain Python over lists of counts."""

    def __init__(self, collapsed: Collapsed) -> None:
        self.collapsed = collapsed
        graph = collapsed.graph
        self.k = k = graph.states
        self.categories = [q.categories for q in collapsed.latents]
        self.alpha = [q.alpha.reshape(-1).tolist() for q in collapsed.latents]
        self.alpha_rows = [q.alpha.sum(-1).tolist() for q in collapsed.latents]
        coupled = collapsed.coupled.tolist()
        at = {v: i for i, v in enumerate(coupled)}
        unary = graph.padding.clone()
        regular: list[list[tuple[list[float], tuple[int, ...], int, tuple[int, ...]]]] = \
            [[] for _ in coupled]
        for group in graph.groups:
            if group.arity == 1:
                unary.index_add_(0, group.index[:, 0], group.tables)
                continue
            strides = tuple(k ** (group.arity - 1 - p) for p in range(group.arity))
            touching = torch.isin(group.index, collapsed.coupled).any(1)
            for ids, table in zip(group.index[touching].tolist(),
                                  group.tables[touching].reshape(int(touching.sum()), -1)
                                  .tolist(), strict=True):
                for p, v in enumerate(ids):
                    if v in at:
                        regular[at[v]].append((table, tuple(ids), p, strides))
        fast: list[list[tuple[int, list[int], list[int]]]] = [[] for _ in coupled]
        general: list[list[tuple[int, list[int], tuple[int, ...], int, tuple[int, ...]]]] = \
            [[] for _ in coupled]
        for g in collapsed.groups:
            c = self.categories[g.latent]
            if g.arity == 1:
                cells = g.cells.clamp(min=0)  # -1 only at padded states, which weigh 0
                for v, row, rows in zip(g.index[:, 0].tolist(), cells.tolist(),
                                        (cells // c).tolist(), strict=True):
                    fast[at[v]].append((g.latent, row, rows))
                continue
            strides = tuple(k ** (g.arity - 1 - p) for p in range(g.arity))
            for ids, row in zip(g.index.tolist(), g.cells.clamp(min=0).tolist(), strict=True):
                for p, v in enumerate(ids):
                    general[at[v]].append((g.latent, row, tuple(ids), p, strides))
        base = unary[torch.tensor(coupled, device=unary.device)].tolist()
        self.plans = []
        for i, v in enumerate(coupled):
            read = [t[0] for t in fast[i]] + [t[0] for t in general[i]]
            log_base = base[i] if regular[i] or any(x != 0.0 for x in base[i]) else None
            self.plans.append((v, log_base, regular[i], fast[i], general[i],
                               len(set(read)) < len(read)))

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        """``state`` (V,) after one sweep; uniforms from torch's generator (seeded runs
        repeat, checkpoints resume)."""
        dtype = self.collapsed.graph.padding.dtype
        uniforms = torch.rand(len(self.plans), dtype=dtype, device=state.device).tolist()
        return self.run(state, uniforms)

    def run(self, state: torch.Tensor, uniforms: list[float]) -> torch.Tensor:
        """The sweep with given uniforms, one per coupled instance (inverse-CDF draws)."""
        s = state.tolist()
        n, m = self._counts(state)
        for plan, u in zip(self.plans, uniforms, strict=True):
            v = plan[0]
            terms = self._terms(plan, s)
            _move(terms, s[v], n, m, -1.0)
            s[v] = _inverse_cdf(self._weights(plan, terms, s, n, m), u)
            _move(terms, s[v], n, m, 1.0)
        return torch.tensor(s, dtype=state.dtype, device=state.device)

    def conditional(self, state: torch.Tensor, v: int) -> list[float]:
        """Instance ``v``'s full conditional probabilities at ``state``, as the sweep
        computes them (for tests against ``Collapsed.conditional``)."""
        s = state.tolist()
        n, m = self._counts(state)
        plan = next(p for p in self.plans if p[0] == v)
        terms = self._terms(plan, s)
        _move(terms, s[v], n, m, -1.0)
        w = self._weights(plan, terms, s, n, m)
        return [x / sum(w) for x in w]

    def _counts(self, state: torch.Tensor) -> tuple[list[list[float]], list[list[float]]]:
        """Each collapsed latent's counts per cell and per row, as lists."""
        counts = self.collapsed.counts(state)
        return [c.reshape(-1).tolist() for c in counts], [c.sum(-1).tolist() for c in counts]

    def _terms(self, plan: tuple[Any, ...], s: list[int]) -> list[tuple[int, list[int],
                                                                         list[int]]]:
        """The instance's count instances as (latent, cell per state, row per state), the
        others at ``s``."""
        terms = list(plan[3])
        k, cats = self.k, self.categories
        for j, flat, ids, pos, strides in plan[4]:
            start, step = _slice(s, ids, pos, strides)
            cells = flat[start:start + k * step:step]
            terms.append((j, cells, [c // cats[j] for c in cells]))
        return terms

    def _weights(self, plan: tuple[Any, ...], terms: list[tuple[int, list[int], list[int]]],
                 s: list[int], n: list[list[float]], m: list[list[float]]) -> list[float]:
        """Unnormalised conditional weights per state, the instance's own draws removed
        from ``n`` and ``m``."""
        _, log_base, regular, _, _, shared = plan
        w = _regular_weights(log_base, regular, s)
        a, big_a = self.alpha, self.alpha_rows
        if shared:
            return _urn_weights(w, terms, n, m, a, big_a, self.k)
        for j, cells, rows in terms:
            nj, aj, mj, bj = n[j], a[j], m[j], big_a[j]
            f = [(nj[c] + aj[c]) / (mj[r] + bj[r]) for c, r in zip(cells, rows, strict=True)]
            w = f if w is None else list(map(mul, w, f))
        assert w is not None  # a coupled instance has a count instance
        return w


def _move(terms: list[tuple[int, list[int], list[int]]], state: int, n: list[list[float]],
          m: list[list[float]], by: float) -> None:
    """Add ``by`` to the counts of the instance's draws at ``state``."""
    for j, cells, rows in terms:
        n[j][cells[state]] += by
        m[j][rows[state]] += by


def _regular_weights(log_base: list[float] | None,
                     regular: list[tuple[list[float], tuple[int, ...], int, tuple[int, ...]]],
                     s: list[int]) -> list[float] | None:
    """exp of the remaining tables' log-potentials at each state (max 1), None when they
    are all 0."""
    if log_base is None:
        return None
    logits = list(log_base)
    for table, ids, pos, strides in regular:
        start, step = _slice(s, ids, pos, strides)
        logits = [x + y for x, y in zip(logits, table[start:start + len(logits) * step:step],
                                        strict=True)]
    top = max(logits)
    if top == -math.inf:
        raise ModelError("engine 'gibbs': an instance has no state of positive probability "
                         "given the others; check the data against the model's supports.")
    return [math.exp(x - top) for x in logits]


def _slice(s: list[int], ids: tuple[int, ...], pos: int, strides: tuple[int, ...]
           ) -> tuple[int, int]:
    """Where a factor instance's entries for the states of its instance at ``pos`` start in
    its flattened table, and their stride, the other instances being at ``s``."""
    start = sum(s[i] * st for p, (i, st) in enumerate(zip(ids, strides, strict=True))
                if p != pos)
    return start, strides[pos]


def _urn_weights(w: list[float] | None, terms: list[tuple[int, list[int], list[int]]],
                 n: list[list[float]], m: list[list[float]], a: list[list[float]],
                 big_a: list[list[float]], k: int) -> list[float]:
    """The count ratios when two of an instance's draws read one latent: each draw's ratio
    counts the ones before it (the Polya urn's joint predictive)."""
    out = []
    for state in range(k):
        p = 1.0 if w is None else w[state]
        if p == 0.0:
            out.append(0.0)
            continue
        for j, cells, rows in terms:
            c, r = cells[state], rows[state]
            p *= (n[j][c] + a[j][c]) / (m[j][r] + big_a[j][r])
            n[j][c] += 1.0
            m[j][r] += 1.0
        for j, cells, rows in terms:
            n[j][cells[state]] -= 1.0
            m[j][rows[state]] -= 1.0
        out.append(p)
    return out


def _inverse_cdf(w: list[float], u: float) -> int:
    """The state whose cumulative weight first exceeds ``u`` times the total."""
    cum = list(accumulate(w))
    i = bisect_right(cum, cum[-1] * u)
    if i < len(w):
        return i
    return max(j for j, x in enumerate(w) if x > 0)

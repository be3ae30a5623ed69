"""The Gibbs kernel's fast path against its naive reference.

``ColourUpdate`` reads pairwise rows as one matrix per colour applied to the neighbours'
states (dense or sparse CSR), draws two-state colours by comparing uniforms with
``sigmoid(log-odds)``, and keeps a gather path for larger factors and -inf cells; chains
are a batch axis of the state. ``FactorGraph.conditionals`` evaluates every factor row at
the current state and is the reference: the logits must agree to rounding on an Ising grid
with evidence, an RBM, a Bayesian network with a three-way table, a model with hard
constraints and padded states, a plated model, a chain and a three-state grid, in float32
and float64, batched or not. The draws are checked twice: a sweep built from the fast
path's own probabilities leaves the exact posterior invariant (transition matrix
enumerated), and draws from one state land within 5 standard errors of the exact
conditional probabilities (a chance failure below 6e-7 per check).
"""

from __future__ import annotations

import itertools
import math

import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

import genppl
from genppl.gibbs.grounding import FactorGraph, FactorGroup, Replica, ground, group_tables
from genppl.gibbs.kernel import colouring, sweep, updates
from genppl.runtime.params import param_values
from genppl.tabulation.tabulation import model_factors
from models_gallery.ising_3x3 import ising_grid, spin, spin_name
from models_gallery.rbm_digits import rbm

pytestmark = pytest.mark.unit
F32, F64 = torch.float32, torch.float64
#: A model, its data and its param values.
Case = tuple[genppl.Model, dict[str, torch.Tensor], dict[str, torch.Tensor]]


def _ising(rows: int = 4, cols: int = 4, evidence: bool = True) -> Case:
    """A grid of spins with a field, two corners observed (indicator evidence)."""
    m = genppl.Model(f"ising_{rows}x{cols}")
    ising_grid(m, rows, cols, 0.6)
    for i, j in itertools.product(range(rows), range(cols)):
        field = 0.3 * math.sin(i + 2 * j)
        m.factor(f"field_{i}_{j}", lambda a, h=field: h * spin(a), scope=[spin_name(i, j)])
    data = {spin_name(0, 0): torch.tensor(1), spin_name(rows - 1, cols - 1): torch.tensor(0)}
    return m, data if evidence else {}, {}


def _rbm() -> Case:
    gen = torch.Generator().manual_seed(1)
    params = {name: torch.randn(*shape, generator=gen, dtype=F64)
              for name, shape in (("W", (5, 3)), ("b", (5,)), ("c", (3,)))}
    return rbm(5, 3), {}, params


def _network() -> Case:
    """A Bayesian network whose CPT of ``d`` is a three-way table (the gather path)."""
    m = genppl.Model("net")
    m.cpt("a", [], [0.3, 0.7])
    m.cpt("b", ["a"], [[0.8, 0.2], [0.25, 0.75]])
    m.cpt("c", ["a"], [[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    m.cpt("d", ["b", "c"], [[[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]],
                            [[0.4, 0.6], [0.2, 0.8], [0.05, 0.95]]])
    m.cpt("e", ["d"], [[0.7, 0.3], [0.1, 0.9]])
    return m, {"e": torch.tensor(1)}, {}


def _constrained() -> Case:
    """Three-state ``x``, ``y`` that must differ (-inf on the diagonal, a hard constraint),
    a two-state ``a`` (padded to three states) coupled to both, and ``z`` with a CPT that
    rules out one state per parent state (zeros in a table)."""
    m = genppl.Model("constrained")
    m.variable("x", 3)
    m.variable("y", 3)
    m.variable("a", 2)
    m.factor("differ", lambda x, y: torch.where(x == y, -math.inf, 0.1 * (x - y)))
    m.factor("ax", lambda a, x: 0.8 * (a == (x > 0)))
    m.factor("ay", lambda a, y: -0.5 * a * y)
    m.latent("z", lambda a: dist.Categorical(
        torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.3, 0.7]])[a]))
    return m, {}, {}


def _plated() -> Case:
    m = genppl.Model("plated")
    m.cpt("g", [], [0.4, 0.6])
    with m.plate("items", 3):
        m.latent("z", lambda g: dist.Categorical(
            torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])[g]))
        m.observed("y", lambda z: dist.Poisson(1.0 + 2.0 * z))
    return m, {"y": torch.tensor([0.0, 3.0, 5.0])}, {}


def _chain() -> Case:
    m = genppl.hmm.categorical_hmm(3, 3, seed=3, learnable=False, batched=False)
    return m, {"x": torch.tensor([0, 2, 2, 1, 0])}, {}


def _potts(size: int = 20) -> Case:
    """A three-state grid (Potts model), large enough for its matrices to be sparse."""
    m = genppl.Model(f"potts_{size}")
    for i, j in itertools.product(range(size), repeat=2):
        m.variable(spin_name(i, j), 3)
    for i, j in itertools.product(range(size), repeat=2):
        for k, l in ((i, j + 1), (i + 1, j)):
            if k < size and l < size:
                m.factor(f"bond_{i}_{j}_{k}_{l}", lambda a, b: 0.7 * (a == b) + 0.1 * a * b,
                         scope=[spin_name(i, j), spin_name(k, l)])
    return m, {}, {}


MODELS = {"ising": _ising, "rbm": _rbm, "network": _network, "constrained": _constrained,
          "plated": _plated, "chain": _chain, "potts": _potts,
          "ising_sparse": lambda: _ising(24, 24)}


def _ground(case: Case, dtype: torch.dtype = F64) -> FactorGraph:
    model, data, params = case
    model = model.to(dtype=dtype)
    with param_values(model, params):
        return ground(model_factors(model, data))


def _graph(name: str, dtype: torch.dtype = F64) -> FactorGraph:
    return _ground(MODELS[name](), dtype)


def _states(graph: FactorGraph, count: int, seed: int = 0) -> torch.Tensor:
    """``(count, V)`` random states, each instance among its own states."""
    gen = torch.Generator().manual_seed(seed)
    limits = torch.isfinite(graph.padding).sum(1)
    return (torch.rand(count, graph.size, generator=gen, dtype=F64) * limits).long()


def _reference(graph: FactorGraph, states: torch.Tensor) -> torch.Tensor:
    return torch.stack([graph.conditionals(s) for s in states])


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fast_logits_equal_the_reference_conditionals(name: str, dtype: torch.dtype) -> None:
    """Every colour's logits (and log-odds, for two states) at random states, one at a
    time and as a batch of chains, equal the reference's; colours of one instance each
    (the sequential scan) too, on the smaller graphs."""
    graph = _graph(name, dtype)
    states = _states(graph, 4)
    reference = _reference(graph, states)
    tol = {"rtol": 0, "atol": 1e-12} if dtype == F64 else {"rtol": 1e-5, "atol": 1e-5}
    schedules = ["chromatic"] + (["sequential"] if graph.size <= 40 else [])
    for schedule in schedules:
        for update in updates(graph, colouring(graph, schedule)):
            expected = reference[:, update.ids]
            torch.testing.assert_close(update.logits(states), expected, **tol)
            torch.testing.assert_close(update.logits(states[1]), expected[1], **tol)
            if graph.states == 2:
                odds = torch.sigmoid(update.log_odds(states))
                torch.testing.assert_close(odds, torch.softmax(expected, -1)[..., 1], **tol)


@pytest.mark.parametrize(("name", "matrix", "gathered", "sparse"), [
    ("ising", True, False, False), ("rbm", True, False, False),
    ("network", True, True, False), ("constrained", True, True, False),
    ("chain", True, False, False), ("potts", True, False, True),
    ("ising_sparse", True, False, True)])
def test_which_rows_take_which_path(name: str, matrix: bool, gathered: bool,
                                    sparse: bool) -> None:
    """Pairwise rows with finite cells are a matrix (CSR on large grids); three-way tables
    and rows with -inf cells are gathered."""
    graph = _graph(name)
    plans = [u.plan for u in updates(graph, colouring(graph))]
    assert any(p.edges is not None for p in plans) == matrix
    assert any(p.gathers for p in plans) == gathered
    assert any(p.logits_map is not None and p.logits_map.crow is not None
               for p in plans) == sparse
    if name == "constrained":  # only the rows of the hard constraint are gathered
        for plan in plans:
            for gather in plan.gathers:
                assert graph.groups[gather.group].arity == 2
                assert bool(torch.isinf(graph.groups[gather.group].tables[gather.rows])
                            .flatten(1).any(1).all())


def test_new_table_values_reuse_the_plans() -> None:
    """A graph from ``with_tables`` (another tabulation of the model: new param values)
    shares the plans and gives the reference conditionals at the new values; a pairwise
    row that turns -inf where it can be read is planned again, onto the gather path."""
    theta = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=F64)
    m = genppl.Model("pair")
    m.param("theta", theta)
    m.variable("a", 2)
    with m.plate("items", 4):
        m.variable("z", 3)
        m.factor("coupling", lambda a, z, theta: Vindex(theta)[a, z])
    model = m.to(dtype=F64)
    graph = ground(model_factors(model, {}))
    colours = colouring(graph)
    first = updates(graph, colours)
    states = _states(graph, 3)
    for values, planned_again in ((theta * -2.0 + 0.3, False),
                                  (theta.index_put((torch.tensor(1), torch.tensor(2)),
                                                   torch.tensor(-math.inf, dtype=F64)), True)):
        with param_values(model, {"theta": values}):
            fm = model_factors(model, {})
        moved = graph.with_tables(group_tables(fm, graph))
        assert moved.cache is graph.cache
        now = updates(moved, colours)
        reference = _reference(ground(fm), states)
        for before, update in zip(first, now, strict=True):
            if planned_again:  # every coupling row can now read -inf: all gathered
                assert update.plan is not before.plan and update.plan.edges is None
                assert update.plan.gathers
            else:
                assert update.plan is before.plan
            torch.testing.assert_close(update.logits(states), reference[:, update.ids],
                                       rtol=0, atol=1e-12)


@pytest.mark.parametrize("shuffled", [False, True])
def test_copies_read_the_one_case_rows(shuffled: bool) -> None:
    """A graph of copies (``Copies.graph``, one flat state for every copy): its colours'
    updates read the one-case tables with the copies as a batch axis, and give the
    conditionals of the copied rows -- the copies' states read by slices in ``Copies``'
    layout, by a gather when the ids are shuffled."""
    from genppl.gibbs.copies import Copies

    one = _graph("rbm")
    copies = Copies(one, colouring(one), 4)
    graph = copies.graph(one)
    colours = copies.colours
    if shuffled:
        new = torch.randperm(graph.size, generator=torch.Generator().manual_seed(0))
        padding = torch.empty_like(graph.padding)
        padding[new] = graph.padding
        graph = FactorGraph(graph.blocks, tuple(FactorGroup(g.tables, new[g.index])
                                                for g in graph.groups), padding,
                            Replica(graph.replica.one, new[graph.replica.layout]))
        colours = [new[c] for c in colours]
    states = _states(graph, 2)
    reference = _reference(graph, states)
    for update in updates(graph, colours):
        assert len(update.ids) == 4 * len(update.inner.ids)  # a one-case colour, 4 times
        assert (update.chunks is None) == shuffled
        torch.testing.assert_close(update.logits(states), reference[:, update.ids],
                                   rtol=0, atol=1e-12)
    state = sweep(graph, colours, states[0])
    assert state.shape == (graph.size,) and bool(torch.isfinite(graph.log_joint(state)))


def _all_states(graph: FactorGraph) -> torch.Tensor:
    ranges = [range(int(torch.isfinite(row).sum())) for row in graph.padding]
    return torch.tensor(list(itertools.product(*ranges)))


def _probabilities(update: object, states: torch.Tensor) -> torch.Tensor:
    """What the fast path draws from: ``sigmoid`` of the log-odds for two states, the
    softmax of the logits otherwise."""
    if update.plan.binary:  # type: ignore[attr-defined]
        up = torch.sigmoid(update.log_odds(states))  # type: ignore[attr-defined]
        return torch.stack([1 - up, up], -1)
    return torch.softmax(update.logits(states), -1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["ising_small", "constrained", "network"])
def test_a_fast_sweep_leaves_the_posterior_invariant(name: str) -> None:
    """The transition matrix of one sweep, from the fast path's own probabilities at every
    joint state (all states as one batch of chains), has the exact posterior as its
    stationary distribution."""
    graph = _ground(_ising(2, 3) if name == "ising_small" else MODELS[name]())
    states = _all_states(graph)
    index = {tuple(s.tolist()): i for i, s in enumerate(states)}
    pi = torch.softmax(torch.stack([graph.log_joint(s) for s in states]), 0)
    transition = torch.eye(len(states), dtype=F64)
    for update in updates(graph, colouring(graph)):
        probs = _probabilities(update, states)  # (S, C, K)
        step = torch.zeros(len(states), len(states), dtype=F64)
        for choice in itertools.product(range(graph.states), repeat=len(update.ids)):
            p = probs[:, torch.arange(len(choice)), torch.tensor(choice)].prod(-1)
            for a in p.nonzero().squeeze(1).tolist():
                moved = states[a].clone()
                moved[update.ids] = torch.tensor(choice)
                step[a, index[tuple(moved.tolist())]] += p[a]
        transition = transition @ step
    torch.testing.assert_close(pi @ transition, pi, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", ["ising", "constrained", "rbm"])
def test_draws_follow_the_exact_conditionals(name: str, dtype: torch.dtype) -> None:
    """20,000 chains at one state, each colour drawn once: every instance's state
    frequencies within 5 standard errors of its exact conditional probabilities (the
    reference's softmax); impossible states never drawn."""
    graph = _graph(name, dtype)
    torch.manual_seed(0)
    count = 20_000
    state = _states(graph, 1)[0]
    for update in updates(graph, colouring(graph)):
        drawn = update.sample(state.expand(count, -1))
        probs = torch.softmax(graph.conditionals(state)[update.ids].to(F64), -1)
        freq = torch.nn.functional.one_hot(drawn, graph.states).to(F64).mean(0)
        se = (probs * (1 - probs) / count).sqrt()
        assert bool(((freq - probs).abs() <= 5 * se + 1e-12).all()), (freq, probs)


def test_batched_chains_reach_the_exact_marginals() -> None:
    """4,000 chains of a 3 x 3 Ising grid with evidence moved together as one ``(4000, V)``
    state, 40 sweeps from all-down: each spin's share up within 5 standard errors of the
    exact marginal (brute force over the grid)."""
    graph = _ground(_ising(3, 3))
    states = _all_states(graph)
    pi = torch.softmax(torch.stack([graph.log_joint(s) for s in states]), 0)
    exact = pi @ states.to(F64)
    torch.manual_seed(1)
    colours = colouring(graph)
    chains = torch.zeros(4000, graph.size, dtype=torch.long)
    for _ in range(40):
        chains = sweep(graph, colours, chains)
    share = chains.to(F64).mean(0)
    se = (exact * (1 - exact) / len(chains)).sqrt()
    assert bool(((share - exact).abs() <= 5 * se + 1e-12).all()), (share, exact)

"""Tests for genppl.graph.analysis on hand-built template graphs (docs/graph.md)."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genppl.graph.analysis import (
    d_separated,
    elimination_order,
    induced_width,
    markov_blanket,
    max_clique_size,
    moral_graph,
    random_variables,
    separated_in_moral_graph,
    topological_order,
    unroll,
)

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=150, deadline=None, database=None)
IS_D_SEPARATOR = getattr(nx, "is_d_separator", None) or nx.d_separated


# --------------------------------------------------------------------------- builders


def add(
    g: nx.DiGraph,
    name: str,
    kind: str = "latent",
    parents: tuple[str, ...] = (),
    *,
    lag_parents: tuple[str, ...] = (),
    chain: str | None = None,
    **attrs,
) -> None:
    """Add a node with the default attributes of docs/graph.md and edges from its parents."""
    g.add_node(
        name,
        kind=kind,
        observed=kind == "observed",
        plates=(),
        chain=chain,
        family=None,
        support=None,
        cardinality=None,
        states=None,
        modules=(),
        constraint=None,
        declared_at="test.py:1",
    )
    g.nodes[name].update(attrs)
    for p in parents:
        g.add_edge(p, name, lag=0)
    for p in lag_parents:
        g.add_edge(p, name, lag=1)


def new_graph(chains: dict | None = None) -> nx.DiGraph:
    return nx.DiGraph(name="test", plates={}, chains=chains or {})


def sprinkler() -> nx.DiGraph:
    g = new_graph()
    add(g, "cloudy")
    add(g, "sprinkler", parents=("cloudy",))
    add(g, "rain", parents=("cloudy",))
    add(g, "wet", "observed", parents=("sprinkler", "rain"))
    return g


def hmm(length: int | None = 5, reverse: bool = False) -> nx.DiGraph:
    g = new_graph({"t": {"length": length, "reverse": reverse, "plates": ()}})
    add(g, "z", lag_parents=("z",), chain="t")
    add(g, "x", "observed", parents=("z",), chain="t")
    return g


def latent_dag(n: int, edges: list[tuple[int, int]]) -> nx.DiGraph:
    g = new_graph()
    for i in range(n):
        add(g, f"v{i}", parents=tuple(f"v{a}" for a, b in edges if b == i))
    return g


@st.composite
def dags(draw, max_nodes: int = 8) -> tuple[int, list[tuple[int, int]]]:
    n = draw(st.integers(2, max_nodes))
    pairs = list(itertools.combinations(range(n), 2))
    present = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    return n, [p for p, keep in zip(pairs, present, strict=True) if keep]


@st.composite
def dag_query(draw, role_pool: str = "xyz."):
    """A random DAG and disjoint non-empty xs, ys plus a possibly empty conditioning set.

    Each node's role is drawn from ``role_pool`` ("." = not in the query).
    """
    n, edges = draw(dags())
    roles = draw(st.lists(st.sampled_from(role_pool), min_size=n, max_size=n))
    i, j = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
    roles[i], roles[j] = "x", "y"
    groups = {r: {f"v{i}" for i, role in enumerate(roles) if role == r} for r in "xyz"}
    return n, edges, groups["x"], groups["y"], groups["z"]


# --------------------------------------------------------------------------- ordering, unrolling


def test_topological_order_ignores_lag_edges_and_follows_insertion() -> None:
    g = new_graph({"t": {"length": 3, "reverse": False, "plates": ()}})
    add(g, "b", chain="t")
    add(g, "a", chain="t")
    add(g, "x", parents=("a",), lag_parents=("x",), chain="t")
    g.add_edge("x", "a", lag=1)  # a[t] reads x[t-1]: no constraint within a step
    assert topological_order(g) == ["b", "a", "x"]


def test_topological_order_rejects_lag0_cycle() -> None:
    g = new_graph()
    add(g, "a")
    add(g, "b", parents=("a",))
    g.add_edge("b", "a", lag=0)
    with pytest.raises(ValueError, match="cycle"):
        topological_order(g)


def test_unroll_hmm_edges() -> None:
    u = unroll(hmm(5))
    assert u.number_of_nodes() == 10
    assert u.number_of_edges() == 4 + 5
    assert all(u.has_edge(f"z[{t - 1}]", f"z[{t}]") for t in range(1, 5))
    assert all(u.has_edge(f"z[{t}]", f"x[{t}]") for t in range(5))
    assert nx.is_directed_acyclic_graph(u)
    assert u.nodes["x[3]"]["step"] == 3
    assert u.nodes["x[3]"]["template"] == "x"
    assert u.nodes["x[3]"]["kind"] == "observed"
    assert all(d["lag"] == 0 for *_, d in u.edges(data=True))


def test_unroll_reversed_chain_and_chain_to_global() -> None:
    for reverse, last in [(False, 4), (True, 0)]:
        g = hmm(5, reverse=reverse)
        add(g, "mu")  # global prior read at every step
        g.add_edge("mu", "z", lag=0)
        add(g, "summary", "observed", parents=("z",))  # reads the chain's final state
        u = unroll(g)
        expected_lag = [
            (f"z[{t + 1}]", f"z[{t}]") if reverse else (f"z[{t}]", f"z[{t + 1}]") for t in range(4)
        ]
        assert all(u.has_edge(*e) for e in expected_lag)
        assert list(u.predecessors("summary")) == [f"z[{last}]"]
        assert set(u.successors("mu")) == {f"z[{t}]" for t in range(5)}
        assert u.number_of_edges() == 4 + 5 + 5 + 1


def test_unroll_lengths() -> None:
    assert unroll(hmm(None), {"t": 3}).number_of_nodes() == 6
    assert unroll(hmm(5), {"t": 2}).number_of_nodes() == 4
    with pytest.raises(ValueError, match="'t'"):
        unroll(hmm(None))


# --------------------------------------------------------------------------- blankets, moral graph


def mixed_model() -> nx.DiGraph:
    """theta(param) -> a; d = f(a); c ~ p(. | d); e ~ p(. | d, b); factor f over (b, c)."""
    g = new_graph()
    add(g, "theta", "param", constraint="positive")
    add(g, "inp", "input")
    add(g, "a", parents=("theta",))
    add(g, "b", parents=("inp",))
    add(g, "d", "deterministic", parents=("a", "theta"))
    add(g, "c", parents=("d",))
    add(g, "e", "observed", parents=("d", "b"))
    add(g, "f", "factor", parents=("b", "c"))
    add(g, "lone")
    return g


def test_random_variables() -> None:
    assert random_variables(mixed_model()) == ["a", "b", "c", "e", "lone"]


def test_markov_blanket_sprinkler() -> None:
    g = sprinkler()
    assert markov_blanket(g, "cloudy") == {"sprinkler", "rain"}
    assert markov_blanket(g, "sprinkler") == {"cloudy", "rain", "wet"}
    assert markov_blanket(g, "wet") == {"sprinkler", "rain"}


def test_markov_blanket_factor_and_deterministic() -> None:
    g = mixed_model()
    assert markov_blanket(g, "a") == {"c", "e", "b"}  # children via d; b co-parents e
    assert markov_blanket(g, "b") == {"e", "a", "c"}  # child e, co-parent a, factor c
    assert markov_blanket(g, "c") == {"a", "b"}  # parent through d, factor partner b
    assert markov_blanket(g, "lone") == set()
    with pytest.raises(ValueError, match="deterministic"):
        markov_blanket(g, "d")
    with pytest.raises(ValueError, match="did you mean 'lone'"):
        markov_blanket(g, "lonely")


def test_markov_blanket_hmm() -> None:
    g = hmm(4)
    assert markov_blanket(g, "z[1]") == {"z[0]", "z[2]", "x[1]"}
    assert markov_blanket(g, "z[0]") == {"z[1]", "x[0]"}
    assert markov_blanket(g, "x[3]") == {"z[3]"}
    assert markov_blanket(hmm(None), "z[1]", lengths={"t": 4}) == {"z[0]", "z[2]", "x[1]"}
    assert markov_blanket(g, "z") == {"x"}  # template: the self-loop is not a neighbour
    with pytest.raises(ValueError, match=r"z\[9\]"):
        markov_blanket(g, "z[9]")


def test_moral_graph() -> None:
    m = moral_graph(sprinkler())
    assert m.has_edge("sprinkler", "rain")  # married parents of wet
    assert set(m.edges) == {
        ("cloudy", "sprinkler"), ("cloudy", "rain"), ("sprinkler", "wet"),
        ("rain", "wet"), ("sprinkler", "rain"),
    }  # fmt: skip
    g = new_graph()
    for v in "abcd":
        add(g, v)
    add(g, "f", "factor", parents=("a", "b", "c"))
    m = moral_graph(g)
    assert list(m.nodes) == ["a", "b", "c", "d"]
    assert {frozenset(e) for e in m.edges} == {
        frozenset(p) for p in itertools.combinations("abc", 2)
    }
    m = moral_graph(mixed_model())
    assert set(m.nodes) == {"a", "b", "c", "e", "lone"}
    assert {frozenset(e) for e in m.edges} == {
        frozenset(p) for p in [("a", "c"), ("a", "e"), ("b", "e"), ("a", "b"), ("b", "c")]
    }


# --------------------------------------------------------------------------- separation


def test_d_separation_classics() -> None:
    chain_, fork, collider = new_graph(), new_graph(), new_graph()
    add(chain_, "a")
    add(chain_, "b", parents=("a",))
    add(chain_, "c", parents=("b",))
    add(fork, "b")
    add(fork, "a", parents=("b",))
    add(fork, "c", parents=("b",))
    add(collider, "a")
    add(collider, "c")
    add(collider, "b", parents=("a", "c"))
    add(collider, "d", parents=("b",))
    for g in (chain_, fork):
        assert not d_separated(g, "a", "c", ())
        assert d_separated(g, "a", "c", "b")
    assert d_separated(collider, "a", "c", ())
    assert not d_separated(collider, "a", "c", "b")
    assert not d_separated(collider, "a", "c", "d")  # observed descendant of the collider

    g = sprinkler()
    assert d_separated(g, "sprinkler", "rain", "cloudy")
    assert not d_separated(g, "sprinkler", "rain", ["cloudy", "wet"])
    assert not d_separated(g, "sprinkler", "rain", [])
    assert d_separated(g, "cloudy", "wet", {"sprinkler", "rain"})


def test_d_separation_through_deterministic() -> None:
    g = new_graph()
    add(g, "x")
    add(g, "w")
    add(g, "d", "deterministic", parents=("x", "w"))
    add(g, "y", parents=("d",))
    assert not d_separated(g, "x", "y", ())
    assert d_separated(g, "x", "w", ())
    assert not d_separated(g, "x", "w", "y")
    with pytest.raises(ValueError, match="deterministic"):
        d_separated(g, "x", "y", "d")


def test_d_separation_hmm_steps() -> None:
    g = hmm(6)
    assert d_separated(g, "x[0]", "x[5]", "z[2]")
    assert not d_separated(g, "x[0]", "x[5]", "x[2]")
    assert d_separated(hmm(6, reverse=True), "x[5]", "z[0]", "z[3]")
    with pytest.raises(ValueError, match=r"name one, e\.g\. 'z\[0\]'"):
        d_separated(g, "z", "x[1]", ())
    with pytest.raises(ValueError, match="disjoint"):
        d_separated(g, "z[1]", "z[1]", ())


def test_d_separation_rejects_factors_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="separated_in_moral_graph"):
        d_separated(mixed_model(), "a", "b", ())
    with pytest.raises(ValueError, match="did you mean 'rain'"):
        d_separated(sprinkler(), "rian", "cloudy", ())


def test_separated_in_moral_graph() -> None:
    g = new_graph()
    for v in "abc":
        add(g, v)
    add(g, "f1", "factor", parents=("a", "b"))
    add(g, "f2", "factor", parents=("b", "c"))
    assert separated_in_moral_graph(g, "a", "c", "b")
    assert not separated_in_moral_graph(g, "a", "c", ())
    # Sound but conservative on a collider: a and c are independent, yet married.
    assert not separated_in_moral_graph(sprinkler(), "sprinkler", "rain", "cloudy")
    assert separated_in_moral_graph(hmm(5), "x[0]", "x[4]", "z[2]")


@SETTINGS
@given(dag_query())
def test_d_separated_matches_networkx(case) -> None:
    n, edges, xs, ys, zs = case
    g = latent_dag(n, edges)
    assert d_separated(g, xs, ys, zs) == IS_D_SEPARATOR(nx.DiGraph(g), xs, ys, zs)


@SETTINGS
@given(dag_query("xyz..."), st.data())
def test_d_separated_with_deterministic_matches_collapsed(case, data) -> None:
    """Turning unqueried nodes deterministic equals d-separation with them looked through."""
    n, edges, xs, ys, zs = case
    g = latent_dag(n, edges)
    flags = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    det = {v for v, flag in zip(g, flags, strict=True) if flag and v not in xs | ys | zs}
    for v in det:
        g.nodes[v]["kind"] = "deterministic"
    collapsed = nx.DiGraph()
    collapsed.add_nodes_from(v for v in g if v not in det)
    for a, b in itertools.permutations(collapsed, 2):
        through = g.subgraph(det | {a, b})
        if nx.has_path(through, a, b):
            collapsed.add_edge(a, b)
    assert d_separated(g, xs, ys, zs) == IS_D_SEPARATOR(collapsed, xs, ys, zs)


@SETTINGS
@given(dag_query())
def test_d_separation_implies_moral_separation_is_sound(case) -> None:
    n, edges, xs, ys, zs = case
    g = latent_dag(n, edges)
    if separated_in_moral_graph(g, xs, ys, zs):
        assert d_separated(g, xs, ys, zs)


# --------------------------------------------------------------------------- elimination


def fill_in_width(g: nx.Graph, order: list[str]) -> int:
    """Width from the explicit fill-in graph: connect each node's later neighbours."""
    h = nx.Graph(g)
    position = {v: i for i, v in enumerate(order)}
    width = 0
    for v in order:
        later = [u for u in h.neighbors(v) if position[u] > position[v]]
        h.add_edges_from(itertools.combinations(later, 2))
        width = max(width, len(later))
    return width


@st.composite
def undirected_graphs(draw, max_nodes: int = 6) -> nx.Graph:
    n = draw(st.integers(1, max_nodes))
    pairs = list(itertools.combinations(range(n), 2))
    present = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    g = nx.Graph()
    g.add_nodes_from(f"n{i}" for i in range(n))
    g.add_edges_from((f"n{a}", f"n{b}") for (a, b), k in zip(pairs, present, strict=True) if k)
    return g


@SETTINGS
@given(undirected_graphs(), st.data())
def test_induced_width_against_brute_force(g, data) -> None:
    orders = [list(p) for p in itertools.permutations(g.nodes)]
    treewidth = min(fill_in_width(g, o) for o in orders)
    some_order = data.draw(st.sampled_from(orders))
    assert induced_width(g, some_order) == fill_in_width(g, some_order)
    cards = {v: data.draw(st.integers(1, 4)) for v in g}
    for heuristic in ("min_fill", "min_degree", "min_weight"):
        order = elimination_order(g, heuristic, cardinality=cards)
        assert sorted(order) == sorted(g.nodes)
        assert treewidth <= induced_width(g, order) == fill_in_width(g, order)
    position = {v: i for i, v in enumerate(some_order)}
    h, biggest = nx.Graph(g), 1
    for v in some_order:
        later = [u for u in h.neighbors(v) if position[u] > position[v]]
        h.add_edges_from(itertools.combinations(later, 2))
        size = cards[v]
        for u in later:
            size *= cards[u]
        biggest = max(biggest, size)
    assert max_clique_size(g, some_order, cards) == biggest


def test_elimination_grid_and_tree() -> None:
    grid = nx.relabel_nodes(nx.grid_2d_graph(3, 3), lambda rc: f"g{rc[0]}{rc[1]}")
    order = elimination_order(grid, "min_fill")
    assert induced_width(grid, order) == 3
    assert elimination_order(grid, "min_fill") == order  # deterministic
    tree = nx.relabel_nodes(nx.balanced_tree(2, 3), lambda i: f"t{i}")
    for heuristic in ("min_fill", "min_degree", "min_weight"):
        order = elimination_order(tree, heuristic, cardinality=dict.fromkeys(tree, 2))
        assert induced_width(tree, order) == 1
        assert max_clique_size(tree, order, dict.fromkeys(tree, 2)) == 4


def test_elimination_inputs() -> None:
    m = moral_graph(sprinkler())
    order = elimination_order(m, "min_degree")
    assert induced_width(m, order) == 2
    assert max_clique_size(m, order, {"cloudy": 2, "sprinkler": 2, "rain": 3, "wet": 5}) == 30
    with pytest.raises(ValueError, match="cardinality"):
        elimination_order(m, "min_weight")
    with pytest.raises(ValueError, match="min_fill"):
        elimination_order(m, "greedy")
    with pytest.raises(ValueError, match="moral_graph"):
        elimination_order(sprinkler())
    with pytest.raises(ValueError, match="exactly once"):
        induced_width(m, ["cloudy", "rain"])
    for v in m:
        m.nodes[v]["cardinality"] = 2
    assert max_clique_size(m, elimination_order(m, "min_weight")) == 8

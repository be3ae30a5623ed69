"""Structural analysis of a model's template graph (see docs/graph.md).

Everything here is a pure function of the ``networkx`` graph a model exposes, so it can be
used, tested and reasoned about without the DSL: ordering, unrolling chains, Markov blankets,
moralisation, separation queries and variable-elimination orders.

Two conventions run through the module:

* **Deterministic nodes are transparent.** A deterministic value is a function of its parents,
  so a child that reads it really depends on the random variables it was computed from. Every
  query therefore looks *through* deterministic nodes, and params, modules and inputs (which
  are not random) never appear in an answer.
* **Chains are unrolled on demand.** A step is named ``"z[3]"``; a template chain node ``"z"``
  stands for all steps at once. Queries about specific steps run on :func:`unroll`'s graph.
"""

from __future__ import annotations

import copy
import difflib
import heapq
import itertools
import math
import re
from collections.abc import Callable, Iterable

import networkx as nx

__all__ = [
    "RANDOM_KINDS",
    "d_separated",
    "elimination_order",
    "induced_width",
    "markov_blanket",
    "max_clique_size",
    "moral_graph",
    "random_variables",
    "separated_in_moral_graph",
    "topological_order",
    "unroll",
]

RANDOM_KINDS = frozenset({"latent", "observed"})
HEURISTICS = ("min_fill", "min_degree", "min_weight")

_STEP_NAME = re.compile(r"^(?P<template>.+)\[(?P<step>\d+)\]$")
_MAX_LISTED = 30

Names = str | Iterable[str]


# --------------------------------------------------------------------------- ordering, unrolling


def topological_order(g: nx.DiGraph) -> list[str]:
    """Order nodes so every parent precedes its children, ignoring ``lag=1`` edges.

    Lag edges point back in time (step ``t-1`` feeds step ``t``), so within one step they impose
    no order; without them the template is a DAG. Among nodes that are ready at the same time
    the one inserted first wins, so the order is deterministic and follows the declaration.
    """
    index = {v: i for i, v in enumerate(g)}
    indegree = dict.fromkeys(g, 0)
    for _, v, data in g.edges(data=True):
        if data.get("lag", 0) == 0:
            indegree[v] += 1
    ready = [(index[v], v) for v, k in indegree.items() if k == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, v = heapq.heappop(ready)
        order.append(v)
        for w, data in g.adj[v].items():
            if data.get("lag", 0) == 0:
                indegree[w] -= 1
                if indegree[w] == 0:
                    heapq.heappush(ready, (index[w], w))
    if len(order) < len(g):
        stuck = [v for v in g if indegree[v] > 0]
        raise ValueError(f"lag-0 edges form a cycle among {stuck}; only lag=1 edges may loop")
    return order


def _is_template_chain_node(data: dict) -> bool:
    """A node repeated along a chain that has not been unrolled yet (no ``step``)."""
    return data.get("chain") is not None and "step" not in data


def _has_template_chains(g: nx.DiGraph) -> bool:
    return any(_is_template_chain_node(d) for _, d in g.nodes(data=True))


def _chain_length(g: nx.DiGraph, chain: str, lengths: dict[str, int] | None) -> int:
    """Length of ``chain``: an explicit override first, then the graph's declaration."""
    length = (lengths or {}).get(chain)
    if length is None:
        length = g.graph.get("chains", {}).get(chain, {}).get("length")
    if length is None:
        raise ValueError(
            f"length of chain {chain!r} is unknown; pass it as unroll(g, lengths={{{chain!r}: T}})"
        )
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length of chain {chain!r} must be a positive int, got {length!r}")
    return length


def _step_name(template: str, step: int) -> str:
    return f"{template}[{step}]"


def unroll(g: nx.DiGraph, lengths: dict[str, int] | None = None) -> nx.DiGraph:
    """Expand every chain node ``z`` into ``z[0] .. z[T-1]`` so the result is a plain DAG.

    Per-step questions (is ``z[1]`` independent of ``z[3]`` given ``z[2]``?) cannot be asked of
    the template, where one node stands for all steps. Edge rules:

    * lag 0 between nodes of the same chain joins the same step;
    * lag 1 joins the previous step to the current one; steps keep their index in a reversed
      chain, but there the previous step of ``t`` is ``t+1``;
    * chain node -> non-chain node comes from the last *executed* step (``T-1``, or ``0`` when
      reversed), since that is the value the rest of the model sees after the loop;
    * non-chain node -> chain node goes to every step;
    * between nodes of two different chains, lag 0 is treated as the two rules above (last step
      of the source to every step of the target); lag 1 is an error.

    Unrolled nodes keep their attributes plus ``step`` and ``template``; every edge gets
    ``lag=0``. Nodes that already carry ``step`` are copied as they are, so unrolling twice is
    harmless. ``lengths`` overrides ``g.graph["chains"][chain]["length"]``.
    """
    chains = g.graph.get("chains", {})
    steps: dict[str, int] = {}
    for v, data in g.nodes(data=True):
        if _is_template_chain_node(data):
            steps[v] = _chain_length(g, data["chain"], lengths)

    h = nx.DiGraph()
    h.graph.update(copy.deepcopy(g.graph))
    used = {g.nodes[v]["chain"]: t for v, t in steps.items()}
    for chain, length in used.items():
        entry = h.graph.setdefault("chains", {}).setdefault(
            chain, {"length": None, "reverse": False, "plates": ()}
        )
        entry["length"] = length

    for v, data in g.nodes(data=True):
        if v in steps:
            for t in range(steps[v]):
                h.add_node(_step_name(v, t), **{**data, "step": t, "template": v})
        else:
            h.add_node(v, **data)

    def reverse(v: str) -> bool:
        return bool(chains.get(g.nodes[v]["chain"], {}).get("reverse", False))

    def last_step(v: str) -> str:
        return _step_name(v, 0 if reverse(v) else steps[v] - 1)

    for u, v, data in g.edges(data=True):
        # ``lags`` lists every lag at which the child reads the parent (``x`` may read both
        # ``z`` and ``z_prev``); ``lag`` alone is the smallest of them.
        for lag in data.get("lags", (data.get("lag", 0),)):
            _unroll_edge(h, g, u, v, lag, {**data, "lag": 0}, steps, reverse, last_step)
    return h


def _unroll_edge(h: nx.DiGraph, g: nx.DiGraph, u: str, v: str, lag: int, attrs: dict,
                 steps: dict[str, int], reverse: Callable[[str], bool],
                 last_step: Callable[[str], str]) -> None:
    same_chain = u in steps and v in steps and g.nodes[u]["chain"] == g.nodes[v]["chain"]
    if lag not in (0, 1):
        raise ValueError(f"edge {u!r} -> {v!r} has lag={lag!r}; only 0 and 1 are supported")
    if same_chain:
        length = steps[v]
        shift = (1 if reverse(v) else -1) * lag
        for t in range(length):
            if 0 <= t + shift < length:
                h.add_edge(_step_name(u, t + shift), _step_name(v, t), **attrs)
    elif lag == 1:
        raise ValueError(
            f"edge {u!r} -> {v!r} has lag=1 but its ends are not on one chain of the template"
        )
    else:
        sources = [last_step(u)] if u in steps else [u]
        targets = [_step_name(v, t) for t in range(steps[v])] if v in steps else [v]
        for s, t in itertools.product(sources, targets):
            h.add_edge(s, t, **attrs)


# --------------------------------------------------------------------------- random variables


def random_variables(g: nx.DiGraph) -> list[str]:
    """Names of the latent and observed nodes, in insertion order.

    These are the only nodes independence statements and blankets are about: everything else
    is either a function of them (deterministic, factor) or not random at all.
    """
    return [v for v, d in g.nodes(data=True) if d.get("kind") in RANDOM_KINDS]


def _random_parents(g: nx.DiGraph, v: str) -> list[str]:
    """Random variables ``v`` reads, looking through chains of deterministic nodes."""
    found: dict[str, None] = {}
    seen: set[str] = set()
    stack = list(reversed(list(g.predecessors(v))))
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        kind = g.nodes[p].get("kind")
        if kind in RANDOM_KINDS:
            found[p] = None
        elif kind == "deterministic":
            stack.extend(reversed(list(g.predecessors(p))))
    return list(found)


def _collapse(g: nx.DiGraph) -> nx.DiGraph:
    """Graph over random variables and factors with deterministic nodes made transparent.

    An edge ``x -> y`` means ``y`` reads ``x`` directly or through deterministic nodes; params,
    modules and inputs are dropped. Lag attributes are dropped too: callers decide whether the
    graph has been unrolled.
    """
    h = nx.DiGraph()
    keep = [v for v, d in g.nodes(data=True) if d.get("kind") in RANDOM_KINDS | {"factor"}]
    for v in keep:
        h.add_node(v, **g.nodes[v])
    for v in keep:
        h.add_edges_from((p, v) for p in _random_parents(g, v))
    return h


def moral_graph(g: nx.DiGraph) -> nx.Graph:
    """Undirected graph over random variables whose separation implies independence.

    Parents of a common child are married, directions dropped, each factor's scope becomes a
    clique, deterministic nodes are looked through, and params, modules, inputs and factor
    nodes themselves are dropped. Self-loops (a lag-1 ``z -> z``) are dropped. Lag edges count
    as ordinary edges: moralise ``unroll(g)`` for the per-step graph. Node attributes are
    copied from ``g``.
    """
    h = _collapse(g)
    m = nx.Graph()
    for v in random_variables(h):
        m.add_node(v, **h.nodes[v])
    for v, data in h.nodes(data=True):
        parents = list(h.predecessors(v))
        if data.get("kind") in RANDOM_KINDS:
            m.add_edges_from((p, v) for p in parents if p != v)
        m.add_edges_from(itertools.combinations(parents, 2))
    return m


# --------------------------------------------------------------------------- name validation


def _as_set(names: Names) -> set[str]:
    return {names} if isinstance(names, str) else set(names)


def _check_random(g: nx.DiGraph, names: Iterable[str]) -> None:
    """Fail with a helpful message unless every name is a random variable of ``g``."""
    valid = random_variables(g)
    for name in names:
        if name in g and g.nodes[name].get("kind") in RANDOM_KINDS:
            continue
        if name in g:
            kind = g.nodes[name].get("kind")
            raise ValueError(
                f"{name!r} is a {kind} node; only random variables (latent/observed) can be "
                "queried, and deterministic nodes are looked through"
            )
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        listed = ", ".join(valid[:_MAX_LISTED]) + (" ..." if len(valid) > _MAX_LISTED else "")
        raise ValueError(f"unknown node {name!r}{hint}; valid names: {listed}")


def _query_graph(g: nx.DiGraph, names: set[str], lengths: dict[str, int] | None) -> nx.DiGraph:
    """The graph a separation query runs on: ``g``, or its unrolling when it has chains."""
    if not _has_template_chains(g):
        _check_random(g, names)
        return g
    for name in sorted(names):
        if name in g and _is_template_chain_node(g.nodes[name]):
            raise ValueError(
                f"{name!r} is repeated along chain {g.nodes[name]['chain']!r}; separation is "
                f"asked of single steps, so name one, e.g. {_step_name(name, 0)!r}"
            )
    h = unroll(g, lengths)
    _check_random(h, names)
    return h


# --------------------------------------------------------------------------- blankets, separation


def markov_blanket(g: nx.DiGraph, node: str, *, lengths: dict[str, int] | None = None) -> set[str]:
    """Random variables that shield ``node`` from the rest of the model.

    Parents, children and the children's other parents, plus every variable sharing a factor
    with ``node``; deterministic nodes are looked through, so this is what a Gibbs or
    single-site MH update of ``node`` needs to read. A step name (``"z[3]"``) is answered on
    the unrolled graph; any name present in ``g`` (including a template chain node ``"z"``) is
    answered on ``g`` with lag edges as ordinary edges, i.e. in template names.
    """
    if node in g:
        h = g
    elif _STEP_NAME.match(node) and _has_template_chains(g):
        h = unroll(g, lengths)
    else:
        h = g
    _check_random(h, [node])
    return set(moral_graph(h).neighbors(node))


def d_separated(
    g: nx.DiGraph,
    xs: Names,
    ys: Names,
    given: Names = (),
    *,
    lengths: dict[str, int] | None = None,
) -> bool:
    """True when ``xs`` and ``ys`` are d-separated by ``given`` (so independent in every model).

    Implemented as Bayes-ball reachability (Koller & Friedman, Alg. 3.1) on the graph with
    deterministic nodes made transparent. Graphs with chains are unrolled first, so names must
    be steps (``"z[2]"``). Only directed models are supported: factors are undirected, use
    :func:`separated_in_moral_graph` for them. Empty ``xs`` or ``ys`` are trivially separated.
    """
    factors = [v for v, d in g.nodes(data=True) if d.get("kind") == "factor"]
    if factors:
        raise ValueError(
            f"d-separation needs a directed model, but {factors} are undirected factor nodes; "
            "use separated_in_moral_graph(g, xs, ys, given) instead"
        )
    x, y, z = _as_set(xs), _as_set(ys), _as_set(given)
    _check_disjoint(x, y, z)
    h = _collapse(_query_graph(g, x | y | z, lengths))
    return not (_reachable(h, x, z) & y)


def _check_disjoint(x: set[str], y: set[str], z: set[str]) -> None:
    overlap = (x & y) | (x & z) | (y & z)
    if overlap:
        raise ValueError(f"xs, ys and given must be disjoint; {sorted(overlap)} appear twice")


def _reachable(h: nx.DiGraph, sources: set[str], given: set[str]) -> set[str]:
    """Nodes reachable from ``sources`` by an active trail given ``given`` (K&F Alg. 3.1).

    A trail may pass a collider only when the collider or one of its descendants is observed,
    i.e. when the collider is an ancestor-or-self of ``given``; it may pass any other node only
    when that node is unobserved. The search runs over (node, direction) pairs, "up" meaning we
    arrived from a child and "down" from a parent.
    """
    observed_or_ancestor = set(given)
    for v in given:
        observed_or_ancestor |= nx.ancestors(h, v)
    stack = [(s, "up") for s in sources]
    visited: set[tuple[str, str]] = set()
    reached: set[str] = set()
    while stack:
        v, direction = stack.pop()
        if (v, direction) in visited:
            continue
        visited.add((v, direction))
        if v not in given:
            reached.add(v)
        if direction == "up" and v not in given:
            stack.extend((p, "up") for p in h.predecessors(v))
            stack.extend((c, "down") for c in h.successors(v))
        elif direction == "down":
            if v not in given:
                stack.extend((c, "down") for c in h.successors(v))
            if v in observed_or_ancestor:
                stack.extend((p, "up") for p in h.predecessors(v))
    return reached


def separated_in_moral_graph(
    g: nx.DiGraph,
    xs: Names,
    ys: Names,
    given: Names = (),
    *,
    lengths: dict[str, int] | None = None,
) -> bool:
    """True when every path from ``xs`` to ``ys`` in the moral graph passes through ``given``.

    This is the separation criterion of undirected models (MRFs, factor graphs), and it works
    for models mixing factors and conditionals. For directed parts it is sound but
    conservative: it cannot see that an unobserved collider blocks a path, which
    :func:`d_separated` can. Chains are handled as in :func:`d_separated`.
    """
    x, y, z = _as_set(xs), _as_set(ys), _as_set(given)
    _check_disjoint(x, y, z)
    m = moral_graph(_query_graph(g, x | y | z, lengths))
    m.remove_nodes_from(z)
    reached: set[str] = set()
    for s in x:
        if s not in reached:
            reached |= nx.node_connected_component(m, s)
    return not (reached & y)


# --------------------------------------------------------------------------- elimination


def _adjacency(g: nx.Graph) -> dict[str, set[str]]:
    if g.is_directed():
        raise ValueError("elimination works on an undirected graph; pass moral_graph(g)")
    return {v: set(g.adj[v]) - {v} for v in g}


def _cardinality(g: nx.Graph, cardinality: dict[str, int] | None, v: str) -> int:
    """Cardinality of ``v``: the explicit mapping first, then the node's attribute."""
    card = (cardinality or {}).get(v)
    if card is None:
        card = g.nodes[v].get("cardinality")
    if card is None:
        raise ValueError(
            f"no cardinality known for {v!r}; pass cardinality={{{v!r}: k}} or give the node "
            "a finite support with a known number of states"
        )
    return card


def _eliminate(adj: dict[str, set[str]], v: str) -> set[str]:
    """Remove ``v``, connect its neighbours pairwise, and return them."""
    neighbours = adj.pop(v)
    for a in neighbours:
        adj[a].discard(v)
        adj[a] |= neighbours - {a}
    return neighbours


def _fill_in(adj: dict[str, set[str]], v: str) -> int:
    """Edges eliminating ``v`` would add between its neighbours."""
    nbrs = adj[v]
    return sum(1 for a, b in itertools.combinations(nbrs, 2) if b not in adj[a])


def elimination_order(
    g_undirected: nx.Graph,
    heuristic: str = "min_fill",
    cardinality: dict[str, int] | None = None,
    among: set[str] | None = None,
) -> list[str]:
    """Greedy variable-elimination order for ``g_undirected`` (e.g. a :func:`moral_graph`).

    ``among`` restricts elimination to those nodes (the rest stay, e.g. variables of an
    enclosing plate that a plate-local contraction must keep); by default all are eliminated.

    Finding the optimal order is NP-hard, so we greedily eliminate the node that is cheapest
    now: ``"min_fill"`` adds the fewest fill-in edges, ``"min_degree"`` has the fewest
    neighbours, ``"min_weight"`` has the smallest table (product of the cardinalities of the
    node and its neighbours; from ``cardinality`` or the ``cardinality`` node attribute). Ties
    go to the node inserted first, so the order is reproducible.
    """
    if heuristic not in HEURISTICS:
        raise ValueError(f"unknown heuristic {heuristic!r}; choose one of {list(HEURISTICS)}")
    adj = _adjacency(g_undirected)
    index = {v: i for i, v in enumerate(g_undirected)}

    def score(v: str) -> int:
        if heuristic == "min_fill":
            return _fill_in(adj, v)
        if heuristic == "min_degree":
            return len(adj[v])
        return math.prod(_cardinality(g_undirected, cardinality, u) for u in adj[v] | {v})

    order: list[str] = []
    left = set(adj) if among is None else set(among) & set(adj)
    while left:
        v = min(left, key=lambda u: (score(u), index[u]))
        left.discard(v)
        _eliminate(adj, v)
        order.append(v)
    return order


def _cliques(g_undirected: nx.Graph, order: list[str]) -> list[set[str]]:
    """The clique (node plus remaining neighbours) formed at each elimination step."""
    adj = _adjacency(g_undirected)
    if len(order) != len(adj) or set(order) != set(adj):
        missing = sorted(set(adj) - set(order), key=str)
        extra = sorted(set(order) - set(adj), key=str)
        raise ValueError(
            "order must list every node exactly once "
            f"(missing {missing}, unknown {extra}, {len(order)} entries for {len(adj)} nodes)"
        )
    return [_eliminate(adj, v) | {v} for v in order]


def induced_width(g_undirected: nx.Graph, order: list[str], *, partial: bool = False) -> int:
    """Largest clique created by eliminating in ``order``, minus one (0 for an empty graph).

    Variable elimination costs time and memory exponential in this number, and its minimum
    over all orders is the treewidth. ``partial=True`` allows an order of only some nodes.
    """
    cliques = _partial_cliques(g_undirected, order) if partial else \
        _cliques(g_undirected, order)
    return max((len(c) - 1 for c in cliques), default=0)


def max_clique_size(
    g_undirected: nx.Graph, order: list[str], cardinality: dict[str, int] | None = None,
    *, partial: bool = False,
) -> int:
    """Entries of the largest table eliminating in ``order`` creates (1 for an empty graph).

    Unlike :func:`induced_width` this weighs each variable by its number of states, which is
    what a memory guard needs before running exact inference. ``partial=True`` allows an
    order that eliminates only some nodes (a plate's local variables).
    """
    cliques = _partial_cliques(g_undirected, order) if partial else \
        _cliques(g_undirected, order)
    return max(
        (math.prod(_cardinality(g_undirected, cardinality, v) for v in clique)
         for clique in cliques),
        default=1,
    )


def _partial_cliques(g_undirected: nx.Graph, order: list[str]) -> list[set[str]]:
    adj = _adjacency(g_undirected)
    return [_eliminate(adj, v) | {v} for v in order]

"""Build ``model.graph`` (see ``docs/graph.md``) from the declaration.

Structure comes from the declaration alone; plate dims and the distribution families of
factory nodes come from the compiler, reached through ``genppl.dsl.compiler`` (the compiler
reads them off one prior draw of the program, ``genppl.pyro.families``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import networkx as nx

from genppl.dsl.compiler import compiler

if TYPE_CHECKING:
    from genppl.dsl.declaration import Declaration


def build_graph(model: Declaration) -> nx.DiGraph:
    dims = compiler().plate_dims(model)
    g = nx.DiGraph(
        name=model.name,
        plates={p: {"size": s.size, "subsample_size": s.subsample_size, "dim": dims[p],
                    "parent": s.parent, "sizes": s.sizes, "symbol": s.symbol}
                for p, s in model.plates.items()},
        chains={c: {"length": s.length, "reverse": s.reverse, "plates": s.plates}
                for c, s in model.chains.items()},
    )
    families = compiler().families(model)
    for node in model.nodes.values():
        family, support, card = families.get(node.name, (None, None, None))
        modules = tuple(p for p in node.parent_nodes if model.nodes[p].kind == "module")
        g.add_node(
            node.name,
            kind=node.kind,
            observed=node.kind == "observed",
            plates=node.plates,
            chain=node.chain,
            family=family,
            support=support,
            cardinality=node.cardinality if node.cardinality is not None else card,
            states=node.states,
            modules=modules,
            constraint=_constraint_name(node.constraint) if node.kind == "param" else None,
            declared_at=node.declared_at,
        )
    for node in model.nodes.values():
        lags: dict[str, set[int]] = {}
        for p in (*node.parents, *node.init_parents):
            if p.node is not None:
                lags.setdefault(p.node, set()).add(p.lag)
        for parent, seen in lags.items():
            g.add_edge(parent, node.name, lag=min(seen), lags=tuple(sorted(seen)))
    return g


def _constraint_name(constraint: Any) -> str:
    """The public name of a constraint object (``"positive"``, not its class ``_GreaterThan``)."""
    from pyro.distributions import constraints

    for name in constraints.__all__:
        if getattr(constraints, name, None) is constraint:
            return name
    return type(constraint).__name__.lstrip("_").lower()

"""Build ``model.graph`` (see ``docs/graph.md``) from the declaration.

Structure comes from the declaration alone. Distribution families and supports of factory
nodes are read from one prior draw of the compiled program (with placeholder sizes where no
size is declared, params at their initial values, and nothing left in Pyro's param store):
drawing from the prior is not inference, and it is the only way to know what a factory
returns without asking the user to say it twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import networkx as nx
import pyro
import torch
from pyro import poutine

from genppl.errors import ModelError
from genppl.pyro.layout import plate_dims

if TYPE_CHECKING:
    from genppl.dsl.model import Model

_PLACEHOLDER_SIZE = 2


def build_graph(model: Model) -> nx.DiGraph:
    dims = plate_dims(getattr(model, "model", model))
    g = nx.DiGraph(
        name=model.name,
        plates={p: {"size": s.size, "subsample_size": s.subsample_size, "dim": dims[p]}
                for p, s in model.plates.items()},
        chains={c: {"length": s.length, "reverse": s.reverse, "plates": s.plates}
                for c, s in model.chains.items()},
    )
    families = _families(model)
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


def describe_distribution(fn: Any) -> tuple[str, str, int | None]:
    """(family, support kind, cardinality) of a distribution, looking through wrappers."""
    base = fn
    while True:
        inner = getattr(base, "base_dist", None)
        if inner is None or type(base).__name__ not in (
                "Independent", "ExpandedDistribution", "MaskedDistribution"):
            break
        base = inner
    family = type(base).__name__
    if fn.has_enumerate_support:
        card = int(fn.enumerate_support(expand=False).shape[0])
        return family, "finite", card
    support = "discrete" if fn.support.is_discrete else "continuous"
    return family, support, None


def _families(model: Model) -> dict[str, tuple[str, str, int | None]]:
    """Families of random nodes, from one prior draw. A draw that stops early (an input
    without data) still tells the families of the nodes it reached."""
    from genppl.pyro.layout import resolve_sizes
    from genppl.pyro.program import PyroProgram

    owner = getattr(model, "model", model)
    program = PyroProgram(model, model.name, generative=True, lenient=True)
    sizes, lengths = resolve_sizes(owner, {}, default=_PLACEHOLDER_SIZE)
    tracer = poutine.trace(program.execute)
    try:
        # (a draw of its own: looking at a model must not move the caller's random stream)
        with pyro.get_param_store().scope(), torch.no_grad(), poutine.block(), \
                torch.random.fork_rng(devices=[owner.device] if owner.device.type == "cuda"
                                      else []):
            tracer({}, sizes, lengths)
    except ModelError:
        pass  # e.g. a factory that needs real data: nodes not reached keep family None
    trace = tracer.msngr.trace
    out: dict[str, tuple[str, str, int | None]] = {}
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["infer"].get("_deterministic"):
            continue
        name = site["name"].split("[", 1)[0]
        if name in model.nodes and model.nodes[name].is_random and name not in out:
            out[name] = describe_distribution(site["fn"])
    return out

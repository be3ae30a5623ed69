"""Turn a model's template graph into a backend-neutral drawing specification.

Rendering happens in stages, as in NumPyro's ``infer.inspect`` and PyMC's ``model_graph``::

    model.graph (networkx.DiGraph)  ->  render_spec(...) (plain dict)  ->  to_graphviz(...)

The middle stage is a plain, JSON-serialisable dict. Every visual decision (which shape a
latent gets, how a plate is labelled, where a node sits in the nesting of plates and chains)
is taken here, once, so that every backend draws the same picture and so that the decisions
can be golden-tested without Graphviz installed. Backends only translate the dict.

Spec format (all lists in a deterministic order: nodes and edges in the graph's insertion
order, i.e. declaration order; plates and chains in the order of ``graph.graph``, then in
order of first use)::

    {
      "name": str,
      "nodes": [{"name", "kind", "label", "xlabel", "shape", "style", "fillcolor", "size",
                 "plates", "chain", "cluster", "cluster_kind"}, ...],
      "edges": [{"src", "dst", "lag", "label", "style", "directed"}, ...],
      "plates": [{"name", "label", "size", "subsample_size", "style", "parent",
                  "parent_kind"}, ...],
      "chains": [{"name", "label", "length", "reverse", "style", "parent",
                  "parent_kind"}, ...],
    }

``cluster``/``cluster_kind`` name the innermost plate (``"plate"``) or chain (``"chain"``) box
the node is drawn in (``None`` for globals); ``parent``/``parent_kind`` do the same for the box
enclosing a plate or chain. Plates and chains are separate name spaces, hence the ``*_kind``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import networkx as nx

from genppl.errors import suggest

__all__ = [
    "CHAIN_STYLE",
    "NODE_STYLES",
    "PLATE_STYLE",
    "chain_label",
    "node_label",
    "plate_label",
    "render_spec",
]

#: The one formatter table: node kind -> visual attributes. Every renderer reads it, so a
#: latent looks the same in Graphviz, in a notebook and in any future backend. The vocabulary
#: is Graphviz's because it is the de-facto common one; ``size`` is a fixed width/height in
#: inches (``None``: fit the label).
NODE_STYLES: dict[str, dict[str, Any]] = {
    # Random variables are ellipses; observing one shades it (textbook plate notation).
    "latent": {"shape": "ellipse", "style": "solid", "fillcolor": None, "size": None},
    "observed": {"shape": "ellipse", "style": "filled", "fillcolor": "grey", "size": None},
    # Deterministic functions of other nodes: dashed, so they do not read as random.
    "deterministic": {"shape": "ellipse", "style": "dashed", "fillcolor": None, "size": None},
    # Learnable point parameters: light, unfilled boxes that recede behind the variables.
    "param": {"shape": "box", "style": "rounded", "fillcolor": None, "size": None},
    # Neural networks: a solid, coloured 3-D box, unmistakable for a random variable.
    "module": {"shape": "box3d", "style": "filled", "fillcolor": "lightblue", "size": None},
    # Data the model conditions on without a likelihood (covariates): bare text.
    "input": {"shape": "plaintext", "style": "solid", "fillcolor": None, "size": None},
    # Undirected log-potentials: the small black square of factor-graph notation, named
    # outside the square (``xlabel``) so that the square stays small.
    "factor": {"shape": "square", "style": "filled", "fillcolor": "black", "size": 0.15},
}

#: Plates are solid boxes, chains dashed ones, so a repeated time step reads differently from
#: an exchangeable replicate.
PLATE_STYLE = "solid"
CHAIN_STYLE = "dashed"

# Internal key of a box (plate or chain); the two live in separate name spaces.
_Cluster = tuple[str, str]


def plate_label(name: str, size: int | None, subsample_size: int | None = None,
                symbol: str | None = None, within: str | None = None) -> str:
    """Label a plate ``"name (size)"``, or ``"name (batch of size)"`` when subsampled.

    The size belongs in the label because the picture is otherwise silent about how many
    copies a plate stands for; the subsample size shows what one gradient step sees. A size
    unknown until data arrive is drawn with the plate's ``symbol`` (default: its name's first
    letter, upper case): ``"data (N)"``, as in textbook plate notation. A ragged plate, whose
    size varies with the entry of the plate it sits ``within``, carries that plate's index:
    ``"words (N_d)"`` inside ``documents``.
    """
    if size is None:
        size_text = symbol or name[0].upper()
        if within is not None:
            size_text += "_" + within[0].lower()
        return f"{name} ({size_text})" if subsample_size is None else \
            f"{name} ({subsample_size} of {size_text})"
    if subsample_size is None or subsample_size == size:
        return f"{name} ({size})"
    return f"{name} ({subsample_size} of {size})"


def chain_label(name: str, length: int | None, reverse: bool = False) -> str:
    """Label a chain's box with its index range, e.g. ``"t = 1..T"`` or ``"t = 100..1"``.

    The range (and its direction) is what distinguishes a chain's box from a plate's.
    """
    end = str(length) if length is not None else name.upper()
    return f"{name} = {end}..1" if reverse else f"{name} = 1..{end}"


def node_label(name: str, attrs: Mapping[str, Any]) -> str:
    """Label a node with its name (indexed by its chain) and, when known, its family.

    ``"z_t\\n~ Categorical"`` for a chain variable; params show their constraint instead,
    because for a param that is the only thing beyond the name the reader needs.
    """
    chain = attrs.get("chain")
    head = f"{name}_{chain}" if chain else name
    family = attrs.get("family")
    kind = attrs.get("kind")
    if kind in ("latent", "observed") and family:
        return f"{head}\n~ {family}"
    if kind == "param" and attrs.get("constraint"):
        return f"{head}\n({attrs['constraint']})"
    return head


def _scope(attrs: Mapping[str, Any], chains: Mapping[str, Mapping[str, Any]]) -> list[_Cluster]:
    """The boxes a node sits in, outermost first: its plates, with its chain slotted in.

    A chain sits inside the plates listed in ``graph.graph["chains"][c]["plates"]`` and
    outside any other plate of its nodes (a plate per time step); without that record the
    chain is taken to be innermost.
    """
    plates = list(attrs.get("plates") or ())
    scope: list[_Cluster] = [("plate", p) for p in plates]
    chain = attrs.get("chain")
    if chain:
        outer = set(chains.get(chain, {}).get("plates") or plates)
        at = max((i + 1 for i, p in enumerate(plates) if p in outer), default=0)
        scope.insert(at, ("chain", chain))
    return scope


def _cluster_parents(scopes: Mapping[Hashable, list[_Cluster]]) -> dict[_Cluster, _Cluster | None]:
    """Nest the boxes into a tree, the way Graphviz clusters must be nested.

    A box's parent is the innermost box that every one of its members also sits in, outside
    it. Plates that cross (a node in ``a`` and ``b``, another in ``b`` only) cannot be drawn
    nested; ``b`` then gets no parent and the crossing is shown in node labels instead.
    """
    members: dict[_Cluster, list[list[_Cluster]]] = {}
    for scope in scopes.values():
        for c in scope:
            members.setdefault(c, []).append(scope)
    parents: dict[_Cluster, _Cluster | None] = {}
    for c, cscopes in members.items():
        common = set(cscopes[0][: cscopes[0].index(c)])
        for s in cscopes[1:]:
            common &= set(s[: s.index(c)])
        first = cscopes[0]
        parents[c] = max(common, key=first.index) if common else None
    return parents


def _depth(c: _Cluster | None, parents: Mapping[_Cluster, _Cluster | None]) -> int:
    depth = 0
    while c is not None:
        depth += 1
        c = parents.get(c)
    return depth


def _ancestors(c: _Cluster | None, parents: Mapping[_Cluster, _Cluster | None]) -> set[_Cluster]:
    out: set[_Cluster] = set()
    while c is not None:
        out.add(c)
        c = parents.get(c)
    return out


def _opt_int(x: Any) -> int | None:
    """Sizes may arrive as numpy or torch scalars; the spec must stay JSON-serialisable."""
    return None if x is None else int(x)


def _ordered_unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def render_spec(g: nx.DiGraph) -> dict[str, Any]:
    """Describe how to draw template graph ``g`` (see ``docs/graph.md``) as a plain dict.

    The result is JSON-serialisable and deterministic, so it can be golden-tested, cached or
    shipped to a non-Graphviz front end. See the module docstring for the format.
    """
    meta_plates: Mapping[str, Mapping[str, Any]] = g.graph.get("plates") or {}
    meta_chains: Mapping[str, Mapping[str, Any]] = g.graph.get("chains") or {}

    for name, attrs in g.nodes(data=True):
        kind = attrs.get("kind")
        if kind not in NODE_STYLES:
            raise ValueError(
                f"node {name!r} has kind {kind!r}, which the renderer cannot draw."
                + suggest(str(kind), NODE_STYLES)
            )

    scopes = {n: _scope(a, meta_chains) for n, a in g.nodes(data=True)}
    parents = _cluster_parents(scopes)

    nodes: list[dict[str, Any]] = []
    for name, attrs in g.nodes(data=True):
        scope = scopes[name]
        # Draw the node in its deepest box; all of that box's ancestors are among the node's
        # own boxes (by construction of the tree), so nothing false is drawn.
        home = max(scope, key=lambda c: (_depth(c, parents), scope.index(c)), default=None)
        missed = [c for c in scope if c not in _ancestors(home, parents)]
        label = node_label(str(name), attrs)
        if missed:
            label += "\n[also in " + ", ".join(n for _, n in missed) + "]"
        kind = attrs["kind"]
        style = NODE_STYLES[kind]
        xlabel = None
        if kind == "factor":
            label, xlabel = "", label
        nodes.append(
            {
                "name": str(name),
                "kind": kind,
                "label": label,
                "xlabel": xlabel,
                "shape": style["shape"],
                "style": style["style"],
                "fillcolor": style["fillcolor"],
                "size": style["size"],
                "plates": list(attrs.get("plates") or ()),
                "chain": attrs.get("chain"),
                "cluster": home[1] if home else None,
                "cluster_kind": home[0] if home else None,
            }
        )

    edges: list[dict[str, Any]] = []
    for src, dst, eattrs in g.edges(data=True):
        lag = int(eattrs.get("lag", 0) or 0)
        label = None
        if lag:
            chain = g.nodes[dst].get("chain") or g.nodes[src].get("chain") or "t"
            sign = "+" if meta_chains.get(chain, {}).get("reverse") else "-"
            label = f"{chain}{sign}{lag}"
        # Edges into a factor are its scope: undirected in meaning, so drawn without arrows.
        directed = g.nodes[dst]["kind"] != "factor" and g.nodes[src]["kind"] != "factor"
        edges.append(
            {
                "src": str(src),
                "dst": str(dst),
                "lag": lag,
                "label": label,
                "style": "dashed" if lag else "solid",
                "directed": directed,
            }
        )

    used = [c for s in scopes.values() for c in s]
    plate_names = _ordered_unique([*meta_plates, *(n for k, n in used if k == "plate")])
    chain_names = _ordered_unique([*meta_chains, *(n for k, n in used if k == "chain")])

    def parent_fields(c: _Cluster, fallback: _Cluster | None) -> dict[str, str | None]:
        p = parents.get(c, fallback)
        return {"parent": p[1] if p else None, "parent_kind": p[0] if p else None}

    plates: list[dict[str, Any]] = []
    for p in plate_names:
        meta = meta_plates.get(p, {})
        size, sub = _opt_int(meta.get("size")), _opt_int(meta.get("subsample_size"))
        within = meta.get("parent") if meta.get("sizes") else None
        plates.append(
            {
                "name": p,
                "label": plate_label(p, size, sub, meta.get("symbol"), within),
                "size": size,
                "subsample_size": sub,
                "style": PLATE_STYLE,
                **parent_fields(("plate", p), None),
            }
        )

    chains: list[dict[str, Any]] = []
    for c in chain_names:
        meta = meta_chains.get(c, {})
        outer = [q for q in meta.get("plates") or () if q in plate_names]
        length, reverse = _opt_int(meta.get("length")), bool(meta.get("reverse", False))
        chains.append(
            {
                "name": c,
                "label": chain_label(c, length, reverse),
                "length": length,
                "reverse": reverse,
                "style": CHAIN_STYLE,
                **parent_fields(("chain", c), ("plate", outer[-1]) if outer else None),
            }
        )

    return {
        "name": str(g.graph.get("name") or "model"),
        "nodes": nodes,
        "edges": edges,
        "plates": plates,
        "chains": chains,
    }

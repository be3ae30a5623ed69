"""Draw a model's graph with Graphviz, in textbook plate notation.

This is the last stage of ``graph -> render_spec(graph) -> to_graphviz(spec)``: it only
translates the backend-neutral spec (see :mod:`genppl.graph.spec`) into Graphviz, so every
visual decision stays in one place and is tested without Graphviz installed.

Plates become nested ``cluster_`` subgraphs labelled in their bottom-right corner, chains
dashed clusters, and a ``lag=1`` edge a dashed arrow labelled ``t-1`` (a self-loop for an HMM's
``z -> z``), so that the dependence on the previous step is visible in a template picture.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import graphviz
import networkx as nx

from genppl.graph.spec import render_spec

__all__ = ["SUPPORTED_FORMATS", "GraphvizNotFound", "render", "to_graphviz"]

#: Output formats :func:`render` writes; ``dot``/``gv`` are the DOT source, no Graphviz needed.
SUPPORTED_FORMATS: tuple[str, ...] = ("svg", "png", "pdf", "dot", "gv")

_INSTALL_HINT = (
    "Install Graphviz to get images: `apt-get install graphviz` (Debian/Ubuntu), "
    "`brew install graphviz` (macOS) or `conda install graphviz`; then render again, or "
    "convert the DOT file yourself with `dot -Tsvg FILE -o OUT.svg`."
)


class GraphvizNotFound(RuntimeError):
    """Graphviz's ``dot`` program is missing, so only the DOT source could be written.

    Raised rather than warned because the caller asked for an image and did not get one;
    the DOT source is still written (``dot_path``) so that no work is lost.
    """

    def __init__(self, dot_path: Path, requested: Path) -> None:
        self.dot_path = dot_path
        self.requested = requested
        super().__init__(
            f"Graphviz's `dot` executable was not found on PATH, so {requested} could not be "
            f"drawn; the DOT source was written to {dot_path} instead. {_INSTALL_HINT}"
        )


def _dot_text(text: str) -> str:
    # Spec labels use real newlines; DOT wants the escape sequence for a centred line break.
    return text.replace("\n", "\\n")


def _as_spec(obj: Any) -> Mapping[str, Any]:
    """Accept a spec, a template graph or anything with a ``.graph`` DiGraph (a Model)."""
    if isinstance(obj, nx.DiGraph):
        return render_spec(obj)
    if isinstance(obj, Mapping):
        return obj
    graph = getattr(obj, "graph", None)
    if isinstance(graph, nx.DiGraph):
        return render_spec(graph)
    raise TypeError(
        f"cannot draw a {type(obj).__name__}: pass a model, its networkx.DiGraph (model.graph) "
        "or a spec from genppl.graph.spec.render_spec"
    )


def _cluster_id(kind: str, name: str) -> str:
    # Graphviz draws a box only for subgraphs whose id starts with "cluster"; the kind keeps
    # a plate and a chain of the same name apart.
    return f"cluster_{kind}_{name}"


def to_graphviz(spec: Mapping[str, Any] | nx.DiGraph) -> graphviz.Digraph:
    """Translate a render spec (or a template graph) into a :class:`graphviz.Digraph`.

    The returned object displays itself in Jupyter and exposes ``.source``; use
    :func:`render` to write a file.
    """
    spec = _as_spec(spec)
    dot = graphviz.Digraph(
        name=spec["name"],
        graph_attr={"forcelabels": "true", "nodesep": "0.3", "ranksep": "0.4"},
        node_attr={"fontsize": "12"},
        edge_attr={"fontsize": "10", "arrowsize": "0.7"},
    )

    # The box tree: (kind, name) -> attributes and children, to nest clusters recursively.
    boxes: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, key in (("plate", "plates"), ("chain", "chains")):
        for entry in spec[key]:
            boxes[(kind, entry["name"])] = entry
    children: dict[tuple[str, str] | None, list[tuple[str, str]]] = {}
    for (kind, name), entry in boxes.items():
        parent = (entry["parent_kind"], entry["parent"]) if entry["parent"] else None
        children.setdefault(parent, []).append((kind, name))
    members: dict[tuple[str, str] | None, list[Mapping[str, Any]]] = {}
    for node in spec["nodes"]:
        home = (node["cluster_kind"], node["cluster"]) if node["cluster"] else None
        members.setdefault(home, []).append(node)

    def add_node(sub: graphviz.Digraph, node: Mapping[str, Any]) -> None:
        attrs = {
            "label": _dot_text(node["label"]),
            "shape": node["shape"],
            "style": node["style"],
        }
        if node["fillcolor"]:
            attrs["fillcolor"] = node["fillcolor"]
        if node["xlabel"]:
            attrs["xlabel"] = _dot_text(node["xlabel"])
        if node["size"] is not None:
            attrs.update(width=str(node["size"]), height=str(node["size"]), fixedsize="true")
        sub.node(node["name"], **attrs)

    def fill(sub: graphviz.Digraph, box: tuple[str, str] | None) -> None:
        for node in members.get(box, []):
            add_node(sub, node)
        for child in children.get(box, []):
            entry = boxes[child]
            with sub.subgraph(name=_cluster_id(*child)) as cluster:
                # Textbook plates carry their label in the bottom-right corner.
                cluster.attr(
                    label=_dot_text(entry["label"]),
                    labeljust="r",
                    labelloc="b",
                    style=entry["style"],
                    fontsize="11",
                    margin="8",
                )
                fill(cluster, child)

    fill(dot, None)

    for edge in spec["edges"]:
        attrs = {"style": edge["style"]}
        if edge["label"]:
            # dot draws a self-loop's label flush against the loop; pad it to keep "t-1"
            # legible (the padding is Graphviz-specific, so it lives here, not in the spec).
            pad = "  " if edge["src"] == edge["dst"] else ""
            attrs["label"] = pad + _dot_text(edge["label"])
        if not edge["directed"]:
            attrs["dir"] = "none"
        dot.edge(edge["src"], edge["dst"], **attrs)
    return dot


def render(
    g_or_spec: Any,
    path: str | Path,
    *,
    fmt: str | None = None,
) -> Path:
    """Draw a model, its template graph or a render spec to ``path`` and return the path.

    The format comes from ``fmt`` or else the file extension (one of
    :data:`SUPPORTED_FORMATS`); parent directories are created. ``.dot``/``.gv`` write the
    DOT source and need no Graphviz. For images, if Graphviz's ``dot`` is missing the DOT
    source is written next to ``path`` (same stem, ``.dot``) and :class:`GraphvizNotFound`
    is raised, so a missing system package fails loudly but loses nothing.
    """
    path = Path(path)
    chosen = (fmt or path.suffix.lstrip(".")).lower()
    if chosen not in SUPPORTED_FORMATS:
        raise ValueError(
            f"cannot render to {str(path)!r}: format {chosen or '(none)'!r} is not supported; "
            f"use one of {', '.join('.' + f for f in SUPPORTED_FORMATS)} "
            "(as the file extension or fmt=...)"
        )
    if not path.suffix:
        path = path.with_suffix("." + chosen)
    dot = to_graphviz(_as_spec(g_or_spec))
    path.parent.mkdir(parents=True, exist_ok=True)
    if chosen in ("dot", "gv"):
        path.write_text(dot.source, encoding="utf-8")
        return path

    try:
        if shutil.which("dot") is None:
            raise graphviz.ExecutableNotFound(("dot",))
        if chosen == "png":
            dot.graph_attr["dpi"] = "150"  # dot's default 96 dpi blurs labels in a PNG
        data = dot.pipe(format=chosen)
    except graphviz.ExecutableNotFound:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(dot.source, encoding="utf-8")
        raise GraphvizNotFound(dot_path, path) from None
    path.write_bytes(data)
    return path

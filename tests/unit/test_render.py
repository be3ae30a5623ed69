"""Rendering of template graphs: the backend-neutral spec (golden) and the Graphviz stage.

The spec is golden-tested whole, on hand-built graphs that cover every node kind, plates
(nested and subsampled), a chain with a lag-1 self-loop and undirected factors, because the
spec is where every visual decision is made. Images are smoke-tested for real when Graphviz is
installed; CI must install it, so its absence fails there instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from genppl.graph.render import (
    SUPPORTED_FORMATS,
    GraphvizNotFound,
    render,
    to_graphviz,
)
from genppl.graph.spec import NODE_STYLES, chain_label, plate_label, render_spec

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "render"
# Set GENPPL_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change; review
# the diff before committing.
UPDATE = bool(os.environ.get("GENPPL_UPDATE_GOLDEN"))


# --- hand-built template graphs (attributes as in docs/graph.md) -----------------------------


def _graph(name: str, plates: dict[str, Any] | None = None, chains: dict[str, Any] | None = None):
    g = nx.DiGraph()
    g.graph.update(name=name, plates=plates or {}, chains=chains or {})
    return g


def _node(
    g: nx.DiGraph,
    name: str,
    kind: str,
    *,
    plates: Iterable[str] = (),
    chain: str | None = None,
    family: str | None = None,
    support: str | None = None,
    cardinality: int | None = None,
    states: tuple[str, ...] | None = None,
    modules: Iterable[str] = (),
    constraint: str | None = None,
) -> None:
    g.add_node(
        name,
        kind=kind,
        observed=kind == "observed",
        plates=tuple(plates),
        chain=chain,
        family=family,
        support=support,
        cardinality=cardinality,
        states=states,
        modules=tuple(modules),
        constraint=constraint,
        declared_at="test_render.py:0",
    )


def _plate(size: int | None, dim: int, subsample_size: int | None = None) -> dict[str, Any]:
    return {"size": size, "subsample_size": subsample_size, "dim": dim}


def sprinkler() -> nx.DiGraph:
    g = _graph("sprinkler")
    yes_no = ("no", "yes")
    for n, kind in [("cloudy", "latent"), ("sprinkler", "latent"), ("rain", "latent")]:
        _node(g, n, kind, family="Categorical", support="finite", cardinality=2, states=yes_no)
    _node(g, "wet", "observed", family="Categorical", support="finite", cardinality=2)
    g.add_edges_from(
        [("cloudy", "sprinkler"), ("cloudy", "rain"), ("sprinkler", "wet"), ("rain", "wet")],
        lag=0,
    )
    return g


def mixture() -> nx.DiGraph:
    g = _graph("gmm", plates={"components": _plate(3, -1), "data": _plate(1000, -1)})
    _node(g, "weights", "latent", family="Dirichlet", support="continuous")
    _node(g, "locs", "latent", plates=["components"], family="Normal", support="continuous")
    _node(g, "scale", "param", constraint="positive")
    _node(g, "z", "latent", plates=["data"], family="Categorical", support="finite",
          cardinality=3)  # fmt: skip
    _node(g, "x", "observed", plates=["data"], family="Normal", support="continuous")
    g.add_edges_from([("weights", "z"), ("z", "x"), ("locs", "x"), ("scale", "x")], lag=0)
    return g


def hmm() -> nx.DiGraph:
    g = _graph(
        "hmm",
        plates={"seqs": _plate(50, -1)},
        chains={"t": {"length": 100, "reverse": False, "plates": ("seqs",)}},
    )
    _node(g, "trans", "latent", family="Dirichlet", support="continuous")
    _node(g, "emit_loc", "param")
    _node(g, "z", "latent", plates=["seqs"], chain="t", family="Categorical",
          support="finite", cardinality=4)  # fmt: skip
    _node(g, "x", "observed", plates=["seqs"], chain="t", family="Normal",
          support="continuous")  # fmt: skip
    g.add_edge("trans", "z", lag=0)
    g.add_edge("z", "z", lag=1)
    g.add_edge("z", "x", lag=0)
    g.add_edge("emit_loc", "x", lag=0)
    return g


def ising() -> nx.DiGraph:
    g = _graph("ising_2x2")
    spins = ["s00", "s01", "s10", "s11"]
    for s in spins:
        _node(g, s, "latent", family="Categorical", support="finite", cardinality=2)
    scopes = {
        "f_h0": ("s00", "s01"),
        "f_h1": ("s10", "s11"),
        "f_v0": ("s00", "s10"),
        "f_v1": ("s01", "s11"),
    }
    for f, scope in scopes.items():
        _node(g, f, "factor")
        g.add_edges_from([(s, f) for s in scope], lag=0)
    return g


def vae() -> nx.DiGraph:
    g = _graph(
        "cvae",
        plates={"data": _plate(60000, -2, subsample_size=128), "pixels": _plate(784, -1)},
    )
    _node(g, "decoder", "module")
    _node(g, "y", "input", plates=["data"])
    _node(g, "z", "latent", plates=["data"], family="Normal", support="continuous")
    _node(g, "logits", "deterministic", plates=["data"], modules=["decoder"])
    _node(g, "x", "observed", plates=["data", "pixels"], family="Bernoulli",
          support="finite", cardinality=2)  # fmt: skip
    g.add_edges_from(
        [("z", "logits"), ("y", "logits"), ("decoder", "logits"), ("logits", "x")], lag=0
    )
    return g


def lda() -> nx.DiGraph:
    """Blei et al. (2003), Fig. 1: the words plate, ragged, inside the documents plate."""
    g = _graph(
        "lda",
        plates={
            "documents": {**_plate(None, -1), "parent": None, "sizes": None, "symbol": "M"},
            "words": {**_plate(None, -1), "parent": "documents", "sizes": "lengths",
                      "symbol": "N"},
        },
    )
    _node(g, "topics", "latent", family="Dirichlet", support="continuous")
    _node(g, "theta", "latent", plates=["documents"], family="Dirichlet", support="continuous")
    _node(g, "lengths", "input", plates=["documents"])
    _node(g, "z", "latent", plates=["documents", "words"], family="Categorical",
          support="finite", cardinality=10)  # fmt: skip
    _node(g, "w", "observed", plates=["documents", "words"], family="Categorical",
          support="finite", cardinality=7755)  # fmt: skip
    g.add_edges_from([("theta", "z"), ("z", "w"), ("topics", "w")], lag=0)
    return g


EXAMPLES: dict[str, Callable[[], nx.DiGraph]] = {
    "lda": lda,
    "sprinkler": sprinkler,
    "mixture": mixture,
    "hmm": hmm,
    "ising": ising,
    "vae": vae,
}


# --- spec: golden ----------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_spec_matches_golden(example: str) -> None:
    spec = render_spec(EXAMPLES[example]())
    path = GOLDEN / f"{example}.json"
    if UPDATE:
        path.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with GENPPL_UPDATE_GOLDEN=1"
    assert spec == json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_spec_is_plain_json_and_deterministic(example: str) -> None:
    spec = render_spec(EXAMPLES[example]())
    assert json.loads(json.dumps(spec)) == spec
    assert render_spec(EXAMPLES[example]()) == spec


def test_every_kind_in_the_formatter_table_is_exercised() -> None:
    kinds = {n["kind"] for make in EXAMPLES.values() for n in render_spec(make())["nodes"]}
    assert kinds == set(NODE_STYLES)


def test_hmm_spec_shows_the_lag_as_a_labelled_self_loop_inside_the_chain_box() -> None:
    spec = render_spec(hmm())
    loop = next(e for e in spec["edges"] if e["src"] == e["dst"] == "z")
    assert loop["label"] == "t-1" and loop["lag"] == 1 and loop["style"] == "dashed"
    (chain,) = spec["chains"]
    assert chain["label"] == "t = 1..100"
    assert (chain["parent"], chain["parent_kind"]) == ("seqs", "plate")
    z = next(n for n in spec["nodes"] if n["name"] == "z")
    assert z["label"] == "z_t\n~ Categorical"
    assert (z["cluster"], z["cluster_kind"]) == ("t", "chain")


def test_labels() -> None:
    assert plate_label("data", 1000) == "data (1000)"
    assert plate_label("data", 60000, 128) == "data (128 of 60000)"
    assert plate_label("data", 100, 100) == "data (100)"
    # A size unknown until data arrive is drawn with a symbol, never "?".
    assert plate_label("data", None) == "data (D)"
    assert plate_label("data", None, 32, symbol="N") == "data (32 of N)"
    assert plate_label("words", None, symbol="N", within="documents") == "words (N_d)"
    assert chain_label("t", None) == "t = 1..T"
    assert chain_label("t", 7, reverse=True) == "t = 7..1"


def test_ragged_words_plate_is_drawn_inside_the_documents_plate() -> None:
    """As in Blei et al. (2003), Fig. 1, from the DSL's own graph (not a hand-built one)."""
    import pyro.distributions as dist
    import torch

    import genppl

    m = genppl.Model("lda")
    m.latent("topics", lambda: dist.Dirichlet(torch.ones(6)).expand([2]).to_event(1))
    with m.plate("documents", symbol="M"):
        m.latent("theta", lambda: dist.Dirichlet(torch.ones(2)))
        with m.plate("words", sizes="lengths", symbol="N"):
            m.latent("z", lambda theta: dist.Categorical(theta))
            m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    spec = render_spec(m.graph)
    plates = {p["name"]: p for p in spec["plates"]}
    assert plates["documents"]["label"] == "documents (M)" and plates["documents"]["parent"] is None
    assert plates["words"]["label"] == "words (N_d)"
    assert (plates["words"]["parent"], plates["words"]["parent_kind"]) == ("documents", "plate")
    home = {n["name"]: n["cluster"] for n in spec["nodes"]}
    assert home == {"topics": None, "theta": "documents", "lengths": "documents",
                    "z": "words", "w": "words"}
    assert "subgraph cluster_plate_words" in to_graphviz(spec).source.split(
        "subgraph cluster_plate_documents", 1)[1]


def test_reverse_chain_labels_the_lag_with_the_next_index() -> None:
    g = _graph("rev", chains={"t": {"length": None, "reverse": True, "plates": ()}})
    _node(g, "h", "latent", chain="t", family="Normal")
    g.add_edge("h", "h", lag=1)
    spec = render_spec(g)
    assert spec["edges"][0]["label"] == "t+1"
    assert spec["chains"][0]["label"] == "t = T..1"


def test_plate_inside_a_chain_nests_under_the_chain() -> None:
    g = _graph(
        "dyn",
        plates={"seqs": _plate(5, -2), "feat": _plate(3, -1)},
        chains={"t": {"length": 10, "reverse": False, "plates": ("seqs",)}},
    )
    _node(g, "z", "latent", plates=["seqs"], chain="t", family="Normal")
    _node(g, "x", "observed", plates=["seqs", "feat"], chain="t", family="Normal")
    g.add_edge("z", "x", lag=0)
    spec = render_spec(g)
    parents = {p["name"]: (p["parent"], p["parent_kind"]) for p in spec["plates"]}
    assert parents == {"seqs": (None, None), "feat": ("t", "chain")}
    assert spec["chains"][0]["parent"] == "seqs"
    x = next(n for n in spec["nodes"] if n["name"] == "x")
    assert (x["cluster"], x["cluster_kind"]) == ("feat", "plate")


def test_crossing_plates_are_not_nested_and_the_crossing_is_labelled() -> None:
    g = _graph("cross", plates={"a": _plate(2, -2), "b": _plate(3, -1)})
    _node(g, "u", "latent", plates=["a", "b"], family="Normal")
    _node(g, "v", "latent", plates=["b"], family="Normal")
    spec = render_spec(g)
    assert [(p["name"], p["parent"]) for p in spec["plates"]] == [("a", None), ("b", None)]
    u = next(n for n in spec["nodes"] if n["name"] == "u")
    assert u["cluster"] == "b"
    assert u["label"] == "u\n~ Normal\n[also in a]"


def test_unknown_kind_is_a_clear_error() -> None:
    g = _graph("bad")
    _node(g, "q", "latnet")
    with pytest.raises(ValueError, match=r"kind 'latnet'.*Did you mean 'latent'"):
        render_spec(g)


# --- Graphviz translation --------------------------------------------------------------------


def test_to_graphviz_nests_clusters_and_draws_factor_edges_undirected() -> None:
    src = to_graphviz(render_spec(hmm())).source
    # The chain's cluster opens inside the plate's cluster.
    assert src.index("subgraph cluster_plate_seqs") < src.index("subgraph cluster_chain_t")
    assert 'label="seqs (50)"' in src and 'label="t = 1..100"' in src
    assert 'z -> z [label="  t-1" style=dashed]' in src
    assert 'label="z_t\\n~ Categorical"' in src
    ising_src = to_graphviz(ising()).source  # a bare graph is accepted too
    assert "s00 -> f_h0 [dir=none style=solid]" in ising_src
    assert "fixedsize=true" in ising_src


def test_render_accepts_anything_with_a_graph_attribute(tmp_path: Path) -> None:
    class FakeModel:
        graph = mixture()

    out = render(FakeModel(), tmp_path / "m.dot")
    assert "cluster_plate_data" in out.read_text()
    with pytest.raises(TypeError, match="cannot draw a int"):
        render(3, tmp_path / "x.dot")


@pytest.mark.parametrize("ext", ["dot", "gv"])
def test_dot_source_needs_no_graphviz(tmp_path: Path, monkeypatch, ext: str) -> None:
    monkeypatch.setenv("PATH", "")
    out = render(mixture(), tmp_path / "deep" / "dir" / f"gmm.{ext}")
    assert out == tmp_path / "deep" / "dir" / f"gmm.{ext}"
    assert out.read_text().startswith("digraph gmm {")


def test_unknown_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'jpeg' is not supported.*\.svg, \.png, \.pdf"):
        render(mixture(), tmp_path / "gmm.jpeg")
    with pytest.raises(ValueError, match=r"'\(none\)'"):
        render(mixture(), tmp_path / "gmm")
    assert not any(tmp_path.iterdir())


def test_fmt_overrides_and_completes_the_extension(tmp_path: Path) -> None:
    assert render(mixture(), tmp_path / "gmm", fmt="dot") == tmp_path / "gmm.dot"
    assert render(mixture(), tmp_path / "src.txt", fmt="gv").read_text().startswith("digraph")


def test_missing_dot_writes_the_source_and_says_how_to_install(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(GraphvizNotFound) as info:
        render(hmm(), tmp_path / "figs" / "hmm.svg")
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.dot_path == tmp_path / "figs" / "hmm.dot"
    assert err.dot_path.read_text().startswith("digraph hmm {")
    assert not (tmp_path / "figs" / "hmm.svg").exists()
    msg = str(err)
    assert str(err.dot_path) in msg
    for hint in ("apt-get install graphviz", "brew install graphviz", "conda install graphviz"):
        assert hint in msg


def test_dot_vanishing_after_the_path_check_is_handled_the_same(tmp_path: Path, monkeypatch):
    # shutil.which says yes, but the graphviz package cannot find the executable itself.
    import genppl.graph.render as render_mod

    monkeypatch.setattr(render_mod.shutil, "which", lambda _name: "/usr/bin/dot")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(GraphvizNotFound) as info:
        render(sprinkler(), tmp_path / "s.png")
    assert info.value.dot_path.exists()


# --- real images -----------------------------------------------------------------------------


def _require_dot() -> None:
    if shutil.which("dot") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install graphviz (the `dot` executable) to test rendering")
        pytest.skip("Graphviz `dot` not installed; image output untested here")


MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
@pytest.mark.parametrize("fmt", [f for f in SUPPORTED_FORMATS if f not in ("dot", "gv")])
def test_images_are_real(tmp_path: Path, example: str, fmt: str) -> None:
    _require_dot()
    out = render(EXAMPLES[example](), tmp_path / "out" / f"{example}.{fmt}")
    data = out.read_bytes()
    assert len(data) > 1000
    if fmt == "svg":
        text = data.decode("utf-8")
        assert "<svg" in text
        assert ">" + EXAMPLES[example]().graph["name"] + "<" in text  # graph title
    else:
        assert data.startswith(MAGIC[fmt])
    assert not out.with_suffix(".dot").exists()

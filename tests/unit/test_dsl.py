"""The declaration language: validation errors and the static template graph (docs/dsl.md,
docs/graph.md).

Every error test asserts that the message names the offending node *and* the ``file:line``
where it was declared, computed from this file's own line numbers (``here``), so a message
that points into genppl, into contextlib or at the wrong line fails.
"""

from __future__ import annotations

import dataclasses
import inspect

import networkx as nx
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit


def here(offset: int = 1) -> str:
    """``file:line`` of the caller's line plus ``offset`` (the declaration that follows)."""
    frame = inspect.currentframe().f_back  # type: ignore[union-attr]
    return f"{frame.f_code.co_filename}:{frame.f_lineno + offset}"  # type: ignore[union-attr]


TRANS = torch.tensor([[0.9, 0.1], [0.2, 0.8]])


def normal() -> dist.Normal:
    return dist.Normal(0.0, 1.0)


# --------------------------------------------------------------------------- declaration errors


def test_unknown_parent_names_node_line_and_suggests_the_close_match() -> None:
    m = genppl.Model("m")
    m.latent("mu", normal)
    m.latent("sigma", lambda: dist.HalfNormal(1.0))
    with pytest.raises(ModelError) as err:
        where = here()
        m.latent("x", lambda muu, sigma: dist.Normal(muu, sigma))
    msg = str(err.value)
    assert "'x'" in msg and "'muu'" in msg and where in msg
    assert "Did you mean 'mu'" in msg
    assert "x" not in m.nodes  # nothing half-declared


def test_a_parent_declared_later_is_unknown() -> None:
    m = genppl.Model("m")
    with pytest.raises(ModelError, match="unknown parent 'y'") as err:
        where = here()
        m.latent("x", lambda y: dist.Normal(y, 1.0))
    assert where in str(err.value)


def test_reading_itself() -> None:
    m = genppl.Model("m")
    with pytest.raises(ModelError, match="reads itself") as err:
        where = here()
        m.latent("x", lambda x: dist.Normal(x, 1.0))
    assert "'x'" in str(err.value) and where in str(err.value)


def test_duplicate_name_names_both_declarations() -> None:
    m = genppl.Model("m")
    first = here()
    m.latent("x", normal)
    with pytest.raises(ModelError, match="duplicates") as err:
        second = here()
        m.observed("x", normal)
    msg = str(err.value)
    assert "'x'" in msg and first in msg and second in msg


def test_node_outside_a_plate_cannot_read_a_plate_local_parent() -> None:
    m = genppl.Model("m")
    with m.plate("data", 3):
        m.latent("z", normal)
    with pytest.raises(ModelError) as err:
        where = here()
        m.latent("total", lambda z: dist.Normal(z.sum(), 1.0))
    msg = str(err.value)
    assert "'total'" in msg and "'z'" in msg and "plate 'data'" in msg and where in msg


def test_prev_outside_a_chain() -> None:
    m = genppl.Model("m")
    m.latent("z", normal)
    with pytest.raises(ModelError) as err:
        where = here()
        m.latent("y", lambda z_prev: dist.Normal(z_prev, 1.0))
    msg = str(err.value)
    assert "'y'" in msg and "'z_prev'" in msg and "only exists inside a chain" in msg
    assert where in msg


def test_chain_node_reading_the_previous_step_needs_init() -> None:
    m = genppl.Model("m")
    with m.chain("t", 3), pytest.raises(ModelError, match="init=") as err:
        where = here()
        m.latent("z", lambda z_prev: dist.Normal(z_prev, 1.0))
    assert "'z'" in str(err.value) and where in str(err.value)


def test_prev_of_a_node_the_chain_never_declares() -> None:
    m = genppl.Model("m")
    with pytest.raises(ModelError, match="has no node 'w'") as err, m.chain("t", 3):
        where = here()  # (checked when the chain closes)
        m.latent("z", lambda w_prev: dist.Normal(w_prev, 1.0), init=normal)
    assert "'z'" in str(err.value) and where in str(err.value)


def test_guide_latent_must_be_a_model_latent() -> None:
    m = genppl.Model("m")
    m.latent("mu", normal)
    m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    g = m.guide()
    with pytest.raises(ModelError) as err:
        where = here()
        g.latent("muu", normal)
    msg = str(err.value)
    assert "'muu'" in msg and where in msg and "Did you mean 'mu'" in msg
    with pytest.raises(ModelError, match="not a latent"):  # observed, not latent
        g.latent("x", normal)


def test_guide_param_clashing_with_a_model_node_names_both() -> None:
    m = genppl.Model("m")
    model_line = here()
    m.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    m.latent("mu", lambda scale: dist.Normal(0.0, scale))
    g = m.guide()
    with pytest.raises(ModelError, match="Rename it") as err:
        guide_line = here()
        g.param("scale", torch.tensor(1.0))
    msg = str(err.value)
    assert "'scale'" in msg and model_line in msg and guide_line in msg
    with pytest.raises(ModelError, match="latent"):  # a model latent's name is taken too
        g.param("mu", torch.tensor(0.0))


def _normal_model() -> tuple[genppl.Model, str]:
    m = genppl.Model("m")
    m.latent("mu", normal)
    with m.plate("data", 3):
        where = here()
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    return m, where


def test_observed_node_without_data_at_inference_time() -> None:
    m, where = _normal_model()
    for call in (lambda: genppl.infer(m, {}, engine="nuts"), lambda: m.pyro_model()):
        with pytest.raises(ModelError, match="has no data") as err:
            call()
        assert "'x'" in str(err.value) and where in str(err.value)


def test_data_of_the_wrong_size_names_plate_and_axis() -> None:
    m, where = _normal_model()
    with pytest.raises(ModelError) as err:
        m.pyro_model(x=torch.zeros(4))
    msg = str(err.value)
    assert "'x'" in msg and where in msg and "plate 'data'" in msg and "axis 0" in msg


def test_nested_plate_data_wrong_on_the_inner_axis() -> None:
    m = genppl.Model("m")
    with m.plate("docs"), m.plate("words", 3):
        where = here()
        m.observed("w", normal)
    with pytest.raises(ModelError) as err:
        m.pyro_model(w=torch.zeros(2, 4))
    msg = str(err.value)
    assert "'w'" in msg and where in msg and "plate 'words'" in msg and "axis 1" in msg
    with pytest.raises(ModelError) as err:  # too few axes: names both plates in order
        m.pyro_model(w=torch.zeros(2))
    assert "'w'" in str(err.value) and "docs" in str(err.value) and "words" in str(err.value)


def test_factory_that_raises_is_wrapped_with_node_and_parent_shapes() -> None:
    m = genppl.Model("m")
    m.latent("a", lambda: dist.Normal(torch.zeros(3), 1.0).to_event(1))
    where = here()
    m.latent("b", lambda a: dist.Normal(a @ torch.ones(4), 1.0))
    with pytest.raises(ModelError) as err:
        m.pyro_model()
    msg = str(err.value)
    assert "'b'" in msg and where in msg and "factory raised" in msg
    assert "a: (3,)" in msg
    assert isinstance(err.value.__cause__, RuntimeError)


def test_factory_returning_a_non_distribution() -> None:
    m = genppl.Model("m")
    where = here()
    m.latent("a", lambda: torch.tensor(3.0))
    with pytest.raises(ModelError, match="not a distribution") as err:
        m.pyro_model()
    assert "'a'" in str(err.value) and where in str(err.value)
    assert "Tensor" in str(err.value)


def test_unknown_engine_lists_the_registered_ones() -> None:
    m, _ = _normal_model()
    with pytest.raises(ModelError) as err:
        genppl.infer(m, {"x": torch.zeros(3)}, engine="nutz")
    msg = str(err.value)
    assert "'nutz'" in msg and "Did you mean 'nuts'" in msg
    for name in genppl.ENGINES:
        assert name in msg


@pytest.mark.parametrize(("call", "engine", "bad", "close"), [
    ("infer", "nuts", "num_sample", "num_samples"),
    ("infer", "svi", "stepz", "steps"),
    ("fit", "svi", "learning_rate", None),
    ("infer", "prior", "warmup_steps", None),
])
def test_unknown_engine_option_lists_the_valid_ones(call, engine, bad, close) -> None:
    m, _ = _normal_model()
    fn = getattr(genppl, call)
    with pytest.raises(ModelError) as err:
        fn(m, {"x": torch.zeros(3)}, engine=engine, **{bad: 1})
    msg = str(err.value)
    assert f"{engine!r}" in msg and f"{bad!r}" in msg
    if close:
        assert f"Did you mean {close!r}" in msg
    # the listing is exactly the fields of the engine's options dataclass
    valid = [f.name for f in dataclasses.fields(genppl.ENGINES[engine].options)]
    listing = msg.split("Valid names: ", 1)[1].rstrip(".").split(", ")
    assert sorted(listing) == sorted(valid)


def test_cpt_table_shape_must_match_the_parents() -> None:
    m = genppl.Model("bn")
    m.cpt("a", [], [0.5, 0.5])
    with pytest.raises(ModelError) as err:
        where = here()
        m.cpt("b", ["a"], [[0.5, 0.25, 0.25]] * 3)  # 3 rows for a 2-state parent
    msg = str(err.value)
    assert "'b'" in msg and where in msg and "'a'" in msg and "axis 0" in msg
    with pytest.raises(ModelError, match="dimensions") as err:
        where = here()
        m.cpt("c", ["a"], [0.5, 0.5])  # no parent axis at all
    assert "'c'" in str(err.value) and where in str(err.value)


@pytest.mark.parametrize("table", [[[0.5, 0.6], [0.5, 0.5]], [[1.2, -0.2], [0.5, 0.5]]])
def test_cpt_rows_must_be_probability_vectors(table) -> None:
    m = genppl.Model("bn")
    m.cpt("a", [], [0.5, 0.5])
    with pytest.raises(ModelError, match="probability vector") as err:
        where = here()
        m.cpt("b", ["a"], table)
    assert "'b'" in str(err.value) and where in str(err.value)


def test_cpt_with_an_unknown_parent() -> None:
    m = genppl.Model("bn")
    m.cpt("rain", [], [0.5, 0.5])
    with pytest.raises(ModelError, match="unknown parent 'rian'") as err:
        where = here()
        m.cpt("wet", ["rian"], [[0.9, 0.1], [0.2, 0.8]])
    assert "'wet'" in str(err.value) and where in str(err.value)
    assert "Did you mean 'rain'" in str(err.value)


def test_cpt_state_names_must_match_the_table() -> None:
    m = genppl.Model("bn")
    with pytest.raises(ModelError, match="3 state names") as err:
        where = here()
        m.cpt("a", [], [0.5, 0.5], states=["x", "y", "z"])
    assert where in str(err.value)


@pytest.mark.parametrize("factory", [
    lambda *args: dist.Normal(0.0, 1.0),
    lambda **kwargs: dist.Normal(0.0, 1.0),
    lambda mu, *rest: dist.Normal(mu, 1.0),
])
def test_star_args_factories_are_rejected(factory) -> None:
    m = genppl.Model("m")
    m.latent("mu", normal)
    with pytest.raises(ModelError, match="named explicitly") as err:
        where = here()
        m.latent("x", factory)
    assert "'x'" in str(err.value) and where in str(err.value)


def test_names_must_be_identifiers_and_params_global() -> None:
    m = genppl.Model("m")
    with pytest.raises(ModelError, match="identifier"):
        m.latent("my-node", normal)
    with m.plate("data", 2), pytest.raises(ModelError, match="top level") as err:
        where = here()
        m.param("w", torch.zeros(()))
    assert where in str(err.value)


def test_declaration_inside_a_helper_reports_the_helpers_line() -> None:
    # caller_location walks out of genppl and contextlib only: a user's own helper is the site
    m2, where = _normal_model()
    assert m2["x"].declared_at == where
    assert m2.graph.nodes["x"]["declared_at"] == where
    with pytest.raises(ModelError, match="no node 'y'"):
        m2["y"]


# --------------------------------------------------------------------------- the graph


def every_kind() -> tuple[genppl.Model, dict[str, str]]:
    """One node of each kind (plus a CPT, a counting variable and an HMM chain in a plate)."""
    m = genppl.Model("every_kind")
    at: dict[str, str] = {}
    at["scale"] = here()
    m.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    at["net"] = here()
    m.module("net", torch.nn.Linear(1, 1))
    at["mu"] = here()
    m.latent("mu", normal)
    at["c"] = here()
    m.cpt("c", [], [0.3, 0.7], states=["lo", "hi"])
    at["v"] = here()
    m.variable("v", 3)
    at["f"] = here()
    m.factor("f", lambda v, c: torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])[v, c])
    with m.plate("data"):
        at["z"] = here()
        m.latent("z", lambda: dist.Categorical(torch.ones(4) / 4))
        at["d"] = here()
        m.deterministic("d", lambda z, net: net(z.unsqueeze(-1).to(torch.get_default_dtype())))
        at["x"] = here()
        m.observed("x", lambda d, mu, scale: dist.Normal(mu + d.squeeze(-1), scale))
    with m.plate("seqs", 4), m.chain("t", 5):
        at["h"] = here()
        m.latent("h", lambda h_prev: dist.Categorical(TRANS[h_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.5, 0.5])))
        at["y"] = here()
        m.observed("y", lambda h, t: dist.Poisson(h + 1.0 + t))
    return m, at


def test_graph_node_attributes_for_every_kind() -> None:
    m, at = every_kind()
    g = m.graph
    assert isinstance(g, nx.DiGraph) and g.graph["name"] == "every_kind"
    assert list(g.nodes) == list(m.nodes)
    expect = {  # kind, plates, chain, family, support, cardinality, modules
        "scale": ("param", (), None, None, None, None, ()),
        "net": ("module", (), None, None, None, None, ()),
        "mu": ("latent", (), None, "Normal", "continuous", None, ()),
        "c": ("latent", (), None, "Categorical", "finite", 2, ()),
        "v": ("latent", (), None, "CountingMeasure", "finite", 3, ()),
        "f": ("factor", (), None, None, None, None, ()),
        "z": ("latent", ("data",), None, "Categorical", "finite", 4, ()),
        "d": ("deterministic", ("data",), None, None, None, None, ("net",)),
        "x": ("observed", ("data",), None, "Normal", "continuous", None, ()),
        "h": ("latent", ("seqs",), "t", "Categorical", "finite", 2, ()),
        "y": ("observed", ("seqs",), "t", "Poisson", "discrete", None, ()),
    }
    fields = ("kind", "plates", "chain", "family", "support", "cardinality", "modules")
    for name, want in expect.items():
        got = tuple(g.nodes[name][f] for f in fields)
        assert got == want, name
        assert g.nodes[name]["observed"] == (want[0] == "observed")
        assert g.nodes[name]["declared_at"] == at[name]
    assert g.nodes["c"]["states"] == ("lo", "hi") and g.nodes["v"]["states"] is None
    assert g.nodes["scale"]["constraint"] == "positive"
    assert g.nodes["mu"]["constraint"] is None
    plain = {"parent": None, "sizes": None, "symbol": None}
    assert g.graph["plates"] == {
        "data": {"size": None, "subsample_size": None, "dim": -1, **plain},
        "seqs": {"size": 4, "subsample_size": None, "dim": -1, **plain}}
    assert g.graph["chains"] == {"t": {"length": 5, "reverse": False, "plates": ("seqs",)}}


def test_graph_edges_are_the_factory_arguments() -> None:
    m, _ = every_kind()
    g = m.graph
    want = {("v", "f"), ("c", "f"), ("z", "d"), ("net", "d"), ("d", "x"), ("mu", "x"),
            ("scale", "x"), ("h", "h"), ("h", "y")}
    assert set(g.edges) == want  # the chain index 't' is not a node and draws no edge
    assert g.edges["h", "h"]["lag"] == 1
    assert all(g.edges[e]["lag"] == 0 for e in want - {("h", "h")})
    # factor scope = predecessors; ignoring lag-1 edges leaves a DAG
    assert set(g.predecessors("f")) == {"v", "c"}
    dag = nx.DiGraph([e for e in g.edges if g.edges[e]["lag"] == 0])
    assert nx.is_directed_acyclic_graph(dag)


@pytest.mark.parametrize(("c", "init", "name"), [
    (constraints.positive, torch.tensor(0.5), "positive"),
    (constraints.simplex, torch.ones(2) / 2, "simplex"),
    (constraints.unit_interval, torch.tensor(0.5), "unit_interval"),
    (constraints.real, torch.tensor(0.5), "real"),
    (constraints.lower_cholesky, torch.eye(2), "lower_cholesky"),
    (constraints.greater_than(2.0), torch.tensor(3.0), "greaterthan"),  # no named instance
])
def test_param_constraint_names(c, init, name) -> None:
    m = genppl.Model("m")
    m.param("p", init, constraint=c)
    assert m.graph.nodes["p"]["constraint"] == name


def test_chain_self_edge_and_a_node_reading_both_lags() -> None:
    m = genppl.Model("ar_hmm")
    with m.chain("t", 4):
        m.latent("z", lambda z_prev: dist.Categorical(TRANS[z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.5, 0.5])))
        m.observed("x", lambda z, x_prev: dist.Normal(z + 0.5 * x_prev, 1.0),
                   init=lambda z: dist.Normal(z, 1.0))
    m.latent("after", lambda z: dist.Normal(z, 1.0))  # reads z's last step
    g = m.graph
    assert g.edges["z", "z"]["lag"] == 1
    assert g.edges["x", "x"]["lag"] == 1
    assert g.edges["z", "x"]["lag"] == 0
    assert g.edges["z", "after"]["lag"] == 0
    assert g.nodes["after"]["chain"] is None


def test_graph_is_static_and_leaves_no_params_behind() -> None:
    pyro.clear_param_store()
    calls = {"n": 0}

    def init() -> torch.Tensor:
        calls["n"] += 1
        return torch.tensor(2.0)

    m = genppl.Model("m")
    m.param("scale", init, constraint=constraints.positive)
    m.module("net", torch.nn.Linear(2, 2))
    m.latent("mu", lambda scale: dist.Normal(0.0, scale))
    with m.plate("data"):
        m.observed("x", lambda mu, net: dist.Normal(net(mu.expand(2)).sum(), 1.0))
    g = m.graph
    assert g.nodes["mu"]["family"] == "Normal"  # the draw ran (init was called) ...
    assert calls["n"] >= 1
    assert len(pyro.get_param_store()) == 0  # ... but left nothing in the param store
    assert m.graph is g  # cached ...
    m.latent("later", lambda mu: dist.Normal(mu, 1.0))
    assert "later" in m.graph and m.graph is not g  # ... and rebuilt after a new declaration


def test_graph_of_a_guide_and_of_a_model_with_unknown_families() -> None:
    m = genppl.Model("vae")
    with m.plate("data"):
        m.input("u")
        m.latent("z", normal)
        m.observed("x", lambda z, u: dist.Normal(z + u, 1.0))
    g = m.graph  # an input without data: structure known, families unknown (docs: None)
    assert g.nodes["u"]["kind"] == "input" and g.nodes["u"]["plates"] == ("data",)
    assert set(g.edges) == {("z", "x"), ("u", "x")}
    q = m.guide()
    q.param("q_w", torch.tensor(0.0))
    q.latent("z", lambda x, q_w: dist.Normal(q_w * x, 1.0))
    gg = q.graph
    assert gg.nodes["z"]["plates"] == ("data",)  # takes the model's plates
    assert gg.nodes["x"]["kind"] == "input"  # the model's data, read by the guide
    assert set(gg.edges) == {("x", "z"), ("q_w", "z")}
    assert q.uncovered == []


def test_factor_nodes_in_an_mrf() -> None:
    m = genppl.Model("mrf")
    for s in ("a", "b", "c"):
        m.variable(s, 2, states=("off", "on"))
    m.factor("ab", lambda a, b: (a == b).to(torch.get_default_dtype()))
    m.factor("bc", lambda b, c: (b == c).to(torch.get_default_dtype()))
    g = m.graph
    assert [n for n in g if g.nodes[n]["kind"] == "factor"] == ["ab", "bc"]
    assert set(g.predecessors("ab")) == {"a", "b"} and set(g.predecessors("bc")) == {"b", "c"}
    for s in ("a", "b", "c"):
        assert g.nodes[s]["kind"] == "latent" and g.nodes[s]["support"] == "finite"
        assert g.nodes[s]["cardinality"] == 2 and g.nodes[s]["states"] == ("off", "on")
    with pytest.raises(ModelError, match="empty scope") as err:
        where = here()
        m.factor("constant", lambda: torch.tensor(1.0))
    assert where in str(err.value) and "'constant'" in str(err.value)


def test_chain_data_must_have_one_entry_per_step() -> None:
    m = genppl.Model("hmm")
    with m.plate("seqs"), m.chain("t", 3):
        m.latent("z", lambda z_prev: dist.Normal(z_prev, 1.0), init=normal)
        where = here()
        m.observed("x", lambda z: dist.Normal(z, 1.0))
    m.pyro_model(x=torch.zeros(3, 2))  # (time, seqs)
    for steps in (2, 5):  # too few, or too many (which must not be silently dropped)
        with pytest.raises(ModelError) as err:
            m.pyro_model(x=torch.zeros(steps, 2))
        msg = str(err.value)
        assert "'x'" in msg and where in msg and f"has {steps} steps" in msg
        assert "chain 't' has length 3" in msg


# --------------------------------------------------------------------------- explicit parents

def test_explicit_parents_name_the_edges_and_pass_values_by_position() -> None:
    """``parents=[...]`` for factories built by code: the edges are the names given, and the
    factory gets their values in that order whatever its own argument names are."""
    seen = {}

    def emission(first: torch.Tensor, second: torch.Tensor) -> dist.Distribution:
        seen["order"] = (float(first.detach()), float(second.detach()))
        return dist.Normal(first, second)

    m = genppl.Model("explicit")
    m.param("loc", torch.tensor(3.0))
    m.param("scale", torch.tensor(0.5), constraint=constraints.positive)
    m.deterministic("double", lambda v: 2 * v, parents=["loc"])
    m.latent("y", emission, parents=["double", "scale"])
    m.observed("x", lambda a, b: dist.Normal(a, b), parents=["y", "scale"])
    assert set(m.graph.edges) == {("loc", "double"), ("double", "y"), ("scale", "y"),
                                  ("y", "x"), ("scale", "x")}
    with pyro.get_param_store().scope():
        trace = pyro.poutine.trace(m.pyro_model).get_trace(x=torch.tensor(1.0))
    assert seen["order"] == (6.0, 0.5)
    assert float(trace.nodes["y"]["fn"].loc.detach()) == 6.0


def test_explicit_parents_are_checked_like_argument_names() -> None:
    m = genppl.Model("explicit")
    m.latent("a", normal)
    line = here(2)
    with pytest.raises(ModelError, match=f"{line}.*unknown parent 'b'"):
        m.latent("c", lambda u: dist.Normal(u, 1.0), parents=["b"])
    with pytest.raises(ModelError, match="list of node names"):
        m.latent("d", lambda u: dist.Normal(u, 1.0), parents="a")

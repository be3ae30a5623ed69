"""``engine="exact"`` on DSL models: equal to brute-force enumeration of the joint and to
Pyro's enumeration, on random Bayesian networks, MRFs, batched evidence and continuous
observations."""

from __future__ import annotations

import itertools
import math

import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit
F64 = torch.float64


@st.composite
def bayes_nets(draw: st.DrawFn) -> tuple[genppl.Model, dict[str, list[int]], dict]:
    """Random CPT networks of up to 6 nodes, the last one or two observed."""
    n = draw(st.integers(2, 6))
    cards = [draw(st.integers(2, 3)) for _ in range(n)]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    observed = set(range(n - draw(st.integers(1, min(2, n - 1))), n))
    m = genppl.Model("random_bn")
    parents: dict[str, list[int]] = {}
    tables = {}
    for i in range(n):
        pa = [j for j in range(i) if j not in observed and draw(st.booleans())]
        weights = 0.05 + torch.rand(*(cards[j] for j in pa), cards[i], generator=gen,
                                    dtype=F64)
        table = weights / weights.sum(-1, keepdim=True)
        m.cpt(f"x{i}", [f"x{j}" for j in pa], table, observed=i in observed)
        parents[f"x{i}"] = pa
        tables[f"x{i}"] = table
    data = {f"x{i}": torch.tensor(draw(st.integers(0, cards[i] - 1))) for i in observed}
    return m.to(dtype=F64), {"cards": cards, "parents": parents, "tables": tables}, data


def brute_force(spec: dict, data: dict) -> tuple[float, dict[str, torch.Tensor]]:
    cards, parents, tables = spec["cards"], spec["parents"], spec["tables"]
    names = [f"x{i}" for i in range(len(cards))]
    weights: dict[tuple[int, ...], float] = {}
    for state in itertools.product(*(range(k) for k in cards)):
        if any(state[int(v[1:])] != int(d) for v, d in data.items()):
            continue
        p = 1.0
        for i, v in enumerate(names):
            p *= float(tables[v][(*(state[j] for j in parents[v]), state[i])])
        weights[state] = p
    z = sum(weights.values())
    marg = {}
    for i, v in enumerate(names):
        if v in data:
            continue
        marg[v] = torch.tensor([sum(w for s, w in weights.items() if s[i] == k) / z
                                for k in range(cards[i])], dtype=F64)
    return math.log(z), marg


@settings(max_examples=40, deadline=None)
@given(bayes_nets())
def test_random_bayes_nets_equal_brute_force(case: tuple) -> None:
    model, spec, data = case
    log_z, expected = brute_force(spec, data)
    if log_z == -math.inf:
        return
    post = genppl.infer(model, data, engine="exact")
    assert post.log_evidence == pytest.approx(log_z, abs=1e-10)
    assert set(post.marginals) == set(expected)
    for v, probs in expected.items():
        torch.testing.assert_close(post.marginals[v], probs, rtol=0, atol=1e-10)


def test_batched_evidence_matches_case_by_case_and_pyro_enum() -> None:
    m = genppl.Model("chain3")
    m.cpt("a", [], [0.3, 0.7])
    m.cpt("b", ["a"], [[0.9, 0.1], [0.2, 0.8]])
    m.cpt("c", ["b"], [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], observed=True)
    m.to(dtype=F64)
    cases = torch.tensor([0, 1, 2, 2, 0])
    post = genppl.infer(m, {"c": cases}, engine="exact", map=True)
    assert post.marginals["a"].shape == (5, 2)
    for i, c in enumerate(cases):
        one = genppl.infer(m, {"c": c}, engine="enum")
        torch.testing.assert_close(post.log_evidence[i], torch.tensor(one.log_evidence,
                                                                      dtype=F64))
        for v in ("a", "b"):
            torch.testing.assert_close(post.marginals[v][i], one.marginals[v], rtol=0,
                                       atol=1e-12)
    # MAP by brute force for each case.
    table_a = torch.tensor([0.3, 0.7], dtype=F64)
    table_b = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=F64)
    table_c = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], dtype=F64)
    for i, c in enumerate(cases.tolist()):
        joint = table_a[:, None] * table_b * table_c[None, :, c]
        a, b = divmod(int(joint.argmax()), 2)
        assert (int(post.info["map"]["a"][i]), int(post.info["map"]["b"][i])) == (a, b)


def test_mrf_log_partition_and_continuous_observation() -> None:
    """Two spins with a coupling, one of them emitting a Gaussian observation."""
    m = genppl.Model("mrf")
    m.variable("s", 2)
    m.variable("t", 2)
    m.factor("bond", lambda s, t: 0.8 * (2.0 * s - 1) * (2.0 * t - 1))
    m.observed("y", lambda t: dist.Normal(2.0 * t - 1, 0.5))
    m.to(dtype=F64)
    y = torch.tensor(0.3, dtype=F64)
    post = genppl.infer(m, {"y": y}, engine="exact")
    weights = torch.zeros(2, 2, dtype=F64)
    for s, t in itertools.product(range(2), range(2)):
        like = dist.Normal(torch.tensor(2.0 * t - 1, dtype=F64), 0.5).log_prob(y).exp()
        weights[s, t] = math.exp(0.8 * (2 * s - 1) * (2 * t - 1)) * like
    assert post.log_evidence == pytest.approx(math.log(float(weights.sum())), abs=1e-12)
    torch.testing.assert_close(post.marginals["t"], weights.sum(0) / weights.sum(), rtol=0,
                               atol=1e-12)


def test_exact_refuses_continuous_latents() -> None:
    c = genppl.Model("continuous")
    c.latent("mu", lambda: dist.Normal(0.0, 1.0))
    c.latent("k", lambda mu: dist.Bernoulli(logits=mu))
    with pytest.raises(ModelError, match=r"'mu'.*finite"):
        genppl.infer(c, {}, engine="exact")


def test_impossible_evidence_is_an_error_not_nan() -> None:
    m = genppl.Model("impossible")
    m.cpt("a", [], [1.0, 0.0])
    m.cpt("b", ["a"], [[1.0, 0.0], [0.0, 1.0]], observed=True)
    with pytest.raises(ModelError, match="probability zero"):
        genppl.infer(m, {"b": torch.tensor(1)}, engine="exact")


def test_observed_parents_and_factories_that_ignore_a_parent() -> None:
    """b is observed (two cases at once) and read by c; d's factory ignores its parent a."""
    m = genppl.Model("observed_parent")
    m.cpt("a", [], [0.3, 0.7])
    m.cpt("b", ["a"], [[0.9, 0.1], [0.2, 0.8]], observed=True)
    m.cpt("c", ["b"], [[0.6, 0.4], [0.1, 0.9]])
    m.latent("d", lambda a: dist.Categorical(torch.tensor([0.25, 0.75])))
    m.to(dtype=F64)
    cases = torch.tensor([1, 0])
    post = genppl.infer(m, {"b": cases}, engine="exact")
    for i, b in enumerate(cases):
        one = genppl.infer(m, {"b": b}, engine="enum")
        assert float(post.log_evidence[i]) == pytest.approx(one.log_evidence, abs=1e-12)
        for v in ("a", "c", "d"):
            torch.testing.assert_close(post.marginals[v][i], one.marginals[v], rtol=0,
                                       atol=1e-12)


def test_evidence_outside_the_states_is_reported() -> None:
    m = genppl.Model("range")
    m.cpt("a", [], [0.5, 0.5])
    m.cpt("b", ["a"], [[0.9, 0.1], [0.2, 0.8]], observed=True)
    with pytest.raises(ModelError, match=r"evidence for 'b'.*outside its states \[0, 1\]"):
        genppl.infer(m, {"b": torch.tensor(2)}, engine="exact")
    with pytest.raises(ModelError, match=r"evidence for 'a'.*outside its states"):
        genppl.infer(m, {"a": torch.tensor(-1), "b": torch.tensor(0)}, engine="exact")


@settings(max_examples=25, deadline=None)
@given(bayes_nets(), st.data())
def test_repeated_queries_of_a_network_follow_evidence_and_new_tables(
        case: tuple, draw: st.DataObject) -> None:
    """A network's tables and single-case evidence indicators are kept between queries:
    each query still answers its own evidence, a batch answers each case, and a CPT
    replaced by ``set_table`` is read anew."""
    _, spec, _ = case
    cards, names = spec["cards"], [f"x{i}" for i in range(len(spec["cards"]))]
    model = genppl.Model("bn")
    for v in names:
        model.cpt(v, [f"x{j}" for j in spec["parents"][v]], spec["tables"][v])
    model = model.to(dtype=F64)
    for _ in range(3):
        seen = draw.draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        data = {v: torch.tensor(draw.draw(st.integers(0, cards[int(v[1:])] - 1)))
                for v in seen}
        log_z, expected = brute_force(spec, data)
        if log_z == -math.inf or not expected:
            continue
        post = genppl.infer(model, data, engine="exact")
        assert post.log_evidence == pytest.approx(log_z, abs=1e-10)
        for v, probs in expected.items():
            torch.testing.assert_close(post.marginals[v], probs, rtol=0, atol=1e-10)
    v = names[-1]
    new = torch.rand(spec["tables"][v].shape, dtype=F64) + 0.1
    new = new / new.sum(-1, keepdim=True)
    model.nodes[v].fn.set_table(new)  # type: ignore[union-attr]
    spec = {**spec, "tables": {**spec["tables"], v: new}}
    states = torch.arange(cards[0])
    post = genppl.infer(model, {"x0": states}, engine="exact")
    for k in range(cards[0]):
        log_z, expected = brute_force(spec, {"x0": states[k]})
        assert float(post.log_evidence[k]) == pytest.approx(log_z, abs=1e-10)
        for name, probs in expected.items():
            torch.testing.assert_close(post.marginals[name][k], probs, rtol=0, atol=1e-10)


def test_a_factor_inside_a_chain_is_drawn_and_answered_exactly() -> None:
    """A log-potential at every step of a chain (it has no value for the next step to
    read): the graph builds, and the exact engine's log Z and marginals equal brute force."""
    start = torch.tensor([0.6, 0.4], dtype=F64)
    trans = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=F64)
    bonus = torch.tensor([0.0, 1.0], dtype=F64)
    m = genppl.Model("factor_chain")
    with m.chain("t", 4):
        m.latent("z", lambda z_prev: dist.Categorical(trans[z_prev]),
                 init=lambda: dist.Categorical(start))
        m.factor("f", lambda z: bonus[z])
    m.to(dtype=F64)
    assert set(m.graph.nodes) == {"z", "f"}
    weights = {}
    for path in itertools.product(range(2), repeat=4):
        p = start[path[0]] * math.prod(trans[a, b] for a, b in itertools.pairwise(path))
        weights[path] = float(p) * math.exp(sum(float(bonus[s]) for s in path))
    z = sum(weights.values())
    got = genppl.infer(m, engine="exact")
    assert got.log_evidence == pytest.approx(math.log(z), abs=1e-10)
    for t in range(4):
        p1 = sum(w for path, w in weights.items() if path[t] == 1) / z
        assert float(got.marginals["z"][t, 1]) == pytest.approx(p1, abs=1e-10)

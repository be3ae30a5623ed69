"""``Tabulation`` (record once, then remake only the tables' values) against the reference,
``model_factors``: the same factor model -- variables, factor order, tables, masks, child
links, chain blocks, uses -- and the same gradients, on a Bayesian network with evidence, a
plated mixture at continuous point values, chains (a switching chain with unknown means, a
batched HMM with padding masks under EM's tracking), an RBM and an Ising grid with params;
and the right new answer after each kind of change the record must notice."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl.dsl.tables import CountingMeasure
from genppl.exact.factors import FactorModel, MaskedFactor
from genppl.exact.sum_product import contract
from genppl.hmm import HMM, categorical_hmm, pack_sequences
from genppl.runtime.params import param_values
from genppl.tabulation.tabulation import Tabulation, model_factors
from models_gallery.rbm_digits import rbm

pytestmark = pytest.mark.unit
F64, F32 = torch.float64, torch.float32


# --------------------------------------------------------------------------- comparison
def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
    if tol == 0:
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=tol)


def _same_factor(f: Any, g: Any, tol: float) -> None:
    assert type(f) is type(g) and f.vars == g.vars and f.child == g.child
    _close(f.log_table, g.log_table, tol)
    if isinstance(f, MaskedFactor):
        assert torch.equal(f.mask, g.mask)


def assert_same(a: FactorModel, b: FactorModel, tol: float = 0.0) -> None:
    """``a`` and ``b`` are the same factor model (tables to ``tol``; 0: bit for bit)."""
    assert a.plates == b.plates and a.sizes == b.sizes and a.latents == b.latents
    assert list(a.variables) == list(b.variables)
    for name, v in a.variables.items():
        w = b.variables[name]
        assert (v.node, v.plates, v.chain) == (w.node, w.plates, w.chain)
        assert torch.equal(v.states, w.states)
    assert [p for p, _ in a.factors] == [p for p, _ in b.factors]
    for (_, f), (_, g) in zip(a.factors, b.factors, strict=True):
        _same_factor(f, g, tol)
    assert len(a.chains) == len(b.chains)
    for x, y in zip(a.chains, b.chains, strict=True):
        assert (x.name, x.length, x.plates, x.reverse) == (y.name, y.length, y.plates, y.reverse)
        for fs, gs in ((x.first, y.first), (x.rest, y.rest)):
            assert len(fs) == len(gs)
            for f, g in zip(fs, gs, strict=True):
                _same_factor(f, g, tol)
    assert len(a.uses) == len(b.uses)
    for fm in (a, b):  # each use's placed factors are its model's own (identity)
        own = {id(f) for _, f in fm.factors} | {id(f) for c in fm.chains
                                                for f in (*c.first, *c.rest)}
        assert all(id(f) in own for u in fm.uses for f, _ in u.placed)
    for u, w in zip(a.uses, b.uses, strict=True):
        assert u.node is w.node and u.fn is w.fn and list(u.args) == list(w.args)
        assert [s for _, s in u.placed] == [s for _, s in w.placed] and u.placed
        for (f, _), (g, _) in zip(u.placed, w.placed, strict=True):
            _same_factor(f, g, tol)
        assert type(u.distribution) is type(w.distribution)
        _close(u.table, w.table, tol)
        assert (u.value is None) == (w.value is None)
        if u.value is not None:
            assert torch.equal(u.value, w.value)


def _tol(dtype: torch.dtype) -> float:
    return 0.0 if dtype == F64 else 1e-6


def _grads(fm: FactorModel, leaves: list[torch.Tensor], scalar: Any = None
           ) -> list[torch.Tensor]:
    """Gradients of log Z (or of ``scalar(fm)``) in ``leaves``."""
    out = (contract(fm) if scalar is None else scalar(fm)).sum()
    return list(torch.autograd.grad(out, leaves))


def _weighted_sum(fm: FactorModel) -> torch.Tensor:
    """Every table summed with its own weight (for models the exact engine refuses, like
    the RBM with a plate per layer: CD differentiates its tables, not log Z)."""
    tables = [f.log_table for _, f in fm.factors]
    tables += [f.log_table for b in fm.chains for f in (*b.first, *b.rest)]
    return sum((i + 1) * t.sum() for i, t in enumerate(tables))


def _replays(tab: Tabulation, **kwargs: Any) -> FactorModel:
    """A call that must replay the record, not tabulate anew."""
    plan = tab._plan
    assert plan is not None
    fm = tab(**kwargs)
    assert tab._plan is plan, "the record was made again"
    return fm


# --------------------------------------------------------------------------- models
def _network() -> genppl.Model:
    m = genppl.Model("sprinkler")
    m.cpt("cloudy", [], [0.5, 0.5])
    m.cpt("rain", ["cloudy"], [[0.8, 0.2], [0.2, 0.8]])
    m.cpt("sprinkler", ["cloudy"], [[0.5, 0.5], [0.9, 0.1]])
    m.cpt("wet", ["sprinkler", "rain"], [[[1.0, 0.0], [0.1, 0.9]], [[0.1, 0.9], [0.01, 0.99]]])
    return m.to(dtype=F64)


def _mixture(dtype: torch.dtype) -> tuple[genppl.Model, dict[str, torch.Tensor]]:
    """Pearson's crabs, a smaller copy: weights, locs and scales are continuous latents the
    point fixes; the assignments are summed out."""
    m = genppl.Model("crabs_like")
    m.latent("weights", lambda: dist.Dirichlet(torch.ones(2)))
    m.latent("locs", lambda: dist.Uniform(0.5, 0.8).expand([2]).to_event(1))
    m.latent("scales", lambda: dist.Uniform(0.002, 0.1).expand([2]).to_event(1))
    with m.plate("crabs"):
        m.latent("z", lambda weights: dist.Categorical(weights))
        m.observed("ratio", lambda z, locs, scales: dist.Normal(locs[z], scales[z]))
    x = 0.6 + 0.05 * torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=F64)
    return m.to(dtype=dtype), {"ratio": x.to(dtype)}


def _point(dtype: torch.dtype, shift: float = 0.0) -> dict[str, torch.Tensor]:
    return {"weights": torch.tensor([0.4 + shift, 0.6 - shift], dtype=dtype),
            "locs": torch.tensor([0.58 + shift, 0.65], dtype=dtype),
            "scales": torch.tensor([0.02, 0.015 + shift / 10], dtype=dtype)}


def _leaves(point: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone().requires_grad_() for k, v in point.items()}


def _switching(dtype: torch.dtype, reverse: bool = False) -> tuple[genppl.Model, dict]:
    """A two-state chain with unknown emission means ``mu`` (the point)."""
    trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=dtype)
    m = genppl.Model("switching")
    m.latent("mu", lambda: dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with m.chain("t", reverse=reverse):
        m.latent("z", lambda z_prev: dist.Categorical(trans[z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.5, 0.5])))
        m.observed("y", lambda z, mu: dist.Normal(mu[..., z], 1.0))
    y = torch.randn(30, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype)
    return m.to(dtype=dtype), {"y": y}


def _ising(dtype: torch.dtype, side: int = 3) -> genppl.Model:
    """Spins on a ``side x side`` grid, coupling ``J`` and field ``h`` params."""
    m = genppl.Model("ising")
    m.param("J", torch.tensor(0.4, dtype=F64))
    m.param("h", torch.linspace(-0.5, 0.5, side * side, dtype=F64))
    names = [f"s{i}_{j}" for i in range(side) for j in range(side)]
    for k, name in enumerate(names):
        m.variable(name, 2)
        m.factor(f"field_{name}", lambda a, h, k=k: h[k] * (2 * a - 1), scope=[name, "h"])
    for i in range(side):
        for j in range(side):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < side and j + dj < side:
                    m.factor(f"pair_{i}_{j}_{di}", lambda a, b, J: J * (2 * a - 1) * (2 * b - 1),
                             scope=[f"s{i}_{j}", f"s{i + di}_{j + dj}", "J"])
    return m.to(dtype=dtype)


# --------------------------------------------------------------------------- equal to naive
def test_bayesian_network_with_evidence() -> None:
    m = _network()
    for data in ({"wet": 1}, {"wet": torch.tensor([0, 1, 1]), "cloudy": torch.tensor([1, 1, 0])}):
        tab = Tabulation(m, data)
        for _ in range(2):  # the network's own cache (no point, no grad)
            assert_same(tab(), model_factors(m, data))
        tab(grad=True)  # through the tabulation: recorded, then replayed
        assert_same(_replays(tab, grad=True), model_factors(m, data, grad=True))
        assert_same(_replays(tab, track=True), model_factors(m, data, track=True))


@pytest.mark.parametrize("dtype", [F64, F32])
def test_plated_mixture_at_points(dtype: torch.dtype) -> None:
    m, data = _mixture(dtype)
    tab = Tabulation(m, data)
    tab(point=_point(dtype), grad=True)
    for shift in (0.0, 0.01, -0.02):
        a, b = _leaves(_point(dtype, shift)), _leaves(_point(dtype, shift))
        fast = _replays(tab, point=a, grad=True)
        naive = model_factors(m, data, point=b, grad=True)
        assert_same(fast, naive, _tol(dtype))
        for g, h in zip(_grads(fast, list(a.values())), _grads(naive, list(b.values())),
                        strict=True):
            _close(g, h, _tol(dtype))
    # Without gradients, and with EM's tracked leaves.
    assert_same(_replays(tab, point=_point(dtype, 0.03)),
                model_factors(m, data, point=_point(dtype, 0.03)), _tol(dtype))
    assert_same(_replays(tab, point=_point(dtype), track=True),
                model_factors(m, data, point=_point(dtype), track=True), _tol(dtype))


@pytest.mark.parametrize(("dtype", "reverse"), [(F64, False), (F32, False), (F64, True)])
def test_switching_chain_with_unknown_means(dtype: torch.dtype, reverse: bool) -> None:
    m, data = _switching(dtype, reverse)
    tab = Tabulation(m, data)
    tab(point={"mu": torch.zeros(2, dtype=dtype)}, grad=True)
    for mu in ([-1.0, 1.0], [0.3, 2.0]):
        a = torch.tensor(mu, dtype=dtype, requires_grad=True)
        b = torch.tensor(mu, dtype=dtype, requires_grad=True)
        fast = _replays(tab, point={"mu": a}, grad=True)
        naive = model_factors(m, data, point={"mu": b}, grad=True)
        assert_same(fast, naive, _tol(dtype))
        _close(_grads(fast, [a])[0], _grads(naive, [b])[0], _tol(dtype))


def test_batched_hmm_with_padding_under_em_tracking() -> None:
    """Masked transitions and emissions (padding), params, EM's tracked leaves and their
    gradients (the expected counts)."""
    h = categorical_hmm(3, 4, seed=2).to(dtype=F64)
    gen = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 4, (n,), generator=gen) for n in (7, 5, 9)]
    x, lengths = pack_sequences(seqs)
    data = HMM(h, states=3).batch(x, lengths).data
    with param_values(h, None):
        tab = Tabulation(h, data)
        tab(track=True)
        fast, naive = _replays(tab, track=True), model_factors(h, data, track=True)
        assert_same(fast, naive)
        assert any(isinstance(f, MaskedFactor) for b in fast.chains for f in b.rest)
        for g, k in zip(_grads(fast, [u.table for u in fast.uses]),
                        _grads(naive, [u.table for u in naive.uses]), strict=True):
            _close(g, k, 0.0)
        pyro.get_param_store()["trans"] = torch.tensor(
            [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=F64)
        assert_same(_replays(tab, track=True), model_factors(h, data, track=True))


@pytest.mark.parametrize("dtype", [F64, F32])
def test_rbm_with_param_tables(dtype: torch.dtype) -> None:
    m = rbm(6, 4).to(dtype=dtype)
    with param_values(m, None):
        tab = Tabulation(m, {})
        tab(grad=True)
        store = pyro.get_param_store()
        for step in range(3):
            fast, naive = _replays(tab, grad=True), model_factors(m, {}, grad=True)
            assert_same(fast, naive, _tol(dtype))
            leaves = [store.get_param(n).unconstrained() for n in ("W", "b", "c")]
            for g, k in zip(_grads(fast, leaves, _weighted_sum),
                            _grads(naive, leaves, _weighted_sum), strict=True):
                _close(g, k, _tol(dtype))
            with torch.no_grad():  # an SGD step: the same leaves, new values
                for leaf in leaves:
                    leaf.add_(0.1 * (step + 1))


@pytest.mark.parametrize("dtype", [F64, F32])
def test_ising_grid_with_params(dtype: torch.dtype) -> None:
    m = _ising(dtype)
    with param_values(m, None):
        tab = Tabulation(m, {"s0_0": 1})
        tab(grad=True)
        for value in (0.4, -1.3):
            pyro.get_param_store()["J"] = torch.tensor(value, dtype=dtype)
            fast, naive = _replays(tab, grad=True), model_factors(m, {"s0_0": 1}, grad=True)
            assert_same(fast, naive, _tol(dtype))
            leaf = pyro.get_param_store().get_param("J").unconstrained()
            _close(_grads(fast, [leaf])[0], _grads(naive, [leaf])[0], _tol(dtype))


# --------------------------------------------------------------------------- invalidation
def test_a_node_added_after_the_record() -> None:
    m = _ising(F64, side=2)
    with param_values(m, None):
        tab = Tabulation(m, {})
        tab(grad=True)
        m.factor("extra", lambda a, J: 2.0 * J * a, scope=["s0_0", "J"])
        fm = tab(grad=True)
        assert_same(fm, model_factors(m, {}, grad=True))
        assert len(fm.factors) == len(tab._plan.recipes)  # recorded anew, extra included


def test_a_node_replaced() -> None:
    m = _ising(F64, side=2)
    with param_values(m, None):
        tab = Tabulation(m, {})
        tab(grad=True)
        m.nodes["pair_0_0_0"] = dataclasses.replace(
            m.nodes["pair_0_0_0"],
            fn=lambda **v: 3.0 * v["J"] * (2 * v["s0_0"] - 1) * (2 * v["s0_1"] - 1))
        assert_same(tab(grad=True), model_factors(m, {}, grad=True))


def test_a_table_whose_shape_follows_other_state() -> None:
    """A factor's evidence cases set by something the record cannot see (a closure)."""
    cases = {"n": 2}
    m = genppl.Model("cases")
    m.variable("a", 2)
    m.latent("b", lambda: dist.Categorical(logits=torch.zeros(cases["n"], 3)))
    m.factor("f", lambda a: torch.linspace(0.0, 1.0, cases["n"])[:, None] * a, scope=["a"])
    m.to(dtype=F64)
    tab = Tabulation(m, {})
    for n in (2, 2, 1, 1, 3):
        cases["n"] = n
        fm = tab()
        assert_same(fm, model_factors(m, {}))
        assert fm.cases() == (n,)
    # A counting measure's table (0 whatever its logits) is kept, for its batch shape only.
    alone = genppl.Model("counting").to(dtype=F64)
    alone.latent("c", lambda: CountingMeasure(torch.zeros(cases["n"], 2)))
    tab = Tabulation(alone, {})
    for n in (2, 2, 1, 1, 3):
        cases["n"] = n
        assert_same(tab(), model_factors(alone, {}))


def test_a_cpt_given_a_new_table() -> None:
    m = _network()
    tab = Tabulation(m, {"wet": 1})
    tab(grad=True)
    m["rain"].fn.set_table(torch.tensor([[0.3, 0.7], [0.6, 0.4]], dtype=F64))
    fm = _replays(tab, grad=True)
    assert_same(fm, model_factors(m, {"wet": 1}, grad=True))
    assert math.isclose(float(fm.factors[1][1].log_table.exp()[0, 1]), 0.7, rel_tol=1e-12)
    # rows off 1 by a few 1e-7 (set_table accepts 1e-6): no longer a child link
    m["rain"].fn.set_table(torch.tensor([[0.3, 0.7 + 3e-7], [0.6, 0.4]], dtype=F64))
    fm = _replays(tab, grad=True)
    assert_same(fm, model_factors(m, {"wet": 1}, grad=True))
    assert fm.factors[1][1].child is None


def test_the_model_moved_to_another_dtype() -> None:
    m, data = _mixture(F64)
    tab = Tabulation(m, data)
    tab(point=_point(F64))
    m.to(dtype=F32)
    fm = tab(point=_point(F32))
    assert fm.factors[0][1].log_table.dtype == F32
    assert_same(fm, model_factors(m, data, point=_point(F32)))
    assert_same(_replays(tab, point=_point(F32)), model_factors(m, data, point=_point(F32)))


def test_params_replaced_with_other_shapes() -> None:
    """A param read as a Categorical's probabilities grows a state: new supports, tables."""
    m = genppl.Model("mix_param")
    m.param("w", torch.tensor([0.3, 0.7], dtype=F64), constraint=dist.constraints.simplex)
    with m.plate("items"):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z: dist.Normal(z.to(torch.float64), 1.0))
    m.to(dtype=F64)
    data = {"x": torch.tensor([0.1, 1.9, 1.2], dtype=F64)}
    with param_values(m, None):
        tab = Tabulation(m, data)
        tab()
        pyro.get_param_store()["w"] = torch.tensor([0.6, 0.4], dtype=F64)  # same shape
        assert_same(_replays(tab), model_factors(m, data))
        pyro.get_param_store()["w"] = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
        fm = tab()
        assert_same(fm, model_factors(m, data))
        assert len(fm.variables["z"].states) == 3


def test_data_edited_in_place_or_given_anew() -> None:
    m, data = _mixture(F64)
    point = _point(F64)
    tab = Tabulation(m, data)
    tab(point=point)
    data["ratio"].add_(0.01)  # in place: the record's layout is a view, but also check it
    assert_same(tab(point=point), model_factors(m, data, point=point))
    # Evidence edited in place: the indicator tables are made from the data.
    bn = _network()
    evidence = {"wet": torch.tensor([0, 1])}
    tab = Tabulation(bn, evidence)
    tab(grad=True)
    evidence["wet"][0] = 1
    fm = tab(grad=True)
    assert_same(fm, model_factors(bn, evidence, grad=True))
    assert bool((fm.factors[-1][1].log_table[:, 1] == 0).all())
    # Arrays are copied when the tabulation is made: later edits do not reach it.
    array = data["ratio"].numpy().copy()
    tab = Tabulation(m, {"ratio": array})
    before = tab(point=point)
    array += 1.0
    assert_same(tab(point=point), before)


def test_a_point_with_other_names_or_shapes() -> None:
    m, data = _mixture(F64)
    tab = Tabulation(m, data)
    tab(point=_point(F64))
    # Fewer names: 'weights' is now a latent the tabulation must refuse (not finite).
    point = {k: v for k, v in _point(F64).items() if k != "weights"}
    with pytest.raises(genppl.ModelError, match="finite"):
        tab(point=point)
    # Three components: the assignments' support grows.
    three = {"weights": torch.tensor([0.2, 0.3, 0.5], dtype=F64),
             "locs": torch.tensor([0.55, 0.6, 0.65], dtype=F64),
             "scales": torch.tensor([0.02, 0.02, 0.02], dtype=F64)}
    fm = tab(point=three)
    assert_same(fm, model_factors(m, data, point=three))
    assert len(fm.variables["z"].states) == 3
    assert_same(_replays(tab, point=three), model_factors(m, data, point=three))


def test_a_factory_whose_support_follows_a_value() -> None:
    """Binomial states follow ``total_count``, a point value of the same shape each time."""
    m = genppl.Model("binomial")
    m.latent("n", lambda: dist.Poisson(3.0))
    m.latent("k", lambda n: dist.Binomial(total_count=n, probs=torch.tensor(0.5)))
    m.observed("y", lambda k: dist.Normal(k, 1.0))
    m.to(dtype=F64)
    data = {"y": torch.tensor(1.5, dtype=F64)}
    tab = Tabulation(m, data)
    for n in (3.0, 3.0, 5.0, 5.0, 2.0):
        point = {"n": torch.tensor(n, dtype=F64)}
        fm = tab(point=point)
        assert_same(fm, model_factors(m, data, point=point))
        assert len(fm.variables["k"].states) == n + 1


def test_a_factory_that_changes_its_kind_of_distribution() -> None:
    """Masked for some values, a counting measure (no child link) for others: the record
    notices the new kind."""
    def z(gate: torch.Tensor) -> dist.Distribution:
        if float(gate) > 1:
            return CountingMeasure(torch.zeros(2))
        d = dist.Categorical(torch.tensor([0.3, 0.7]))
        return d.mask(torch.tensor([True, False, True])) if float(gate) > 0 else d

    m = genppl.Model("masked")
    m.latent("gate", lambda: dist.Normal(0.0, 1.0))
    with m.plate("items", 3):
        m.latent("z", z)
    m.to(dtype=F64)
    tab = Tabulation(m, {})
    for gate in (-1.0, -0.5, 0.5, 1.0, 2.0, 3.0, -1.0):
        point = {"gate": torch.tensor(gate, dtype=F64)}
        assert_same(tab(point=point), model_factors(m, {}, point=point))


def test_retabled_tables_replace_the_factories_in_replay_and_reference() -> None:
    """``retable`` (CAVI's expected log tables): the replacement is the tracked leaf and the
    factor's table in both paths, and a replaced latent table loses its child link (it no
    longer sums to one); tables it declines keep the factory's values and links. A replay
    does not call the factory of a table replaced last time."""
    calls = [0]
    trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=F64)

    def emission(z: torch.Tensor, mu: torch.Tensor) -> Any:
        calls[0] += 1
        return dist.Normal(mu[..., z], 1.0)

    m = genppl.Model("switching")
    m.latent("mu", lambda: dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with m.chain("t"):
        m.latent("z", lambda z_prev: dist.Categorical(trans[z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.5, 0.5])))
        m.observed("y", emission)
    m.to(dtype=F64)
    data = {"y": torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=F64)}

    def retable(use: Any) -> torch.Tensor | None:
        if use.node.name == "y":
            return torch.full_like(use.table, -1.5)
        return None if use.fn is use.node.fn else torch.full_like(use.table, -0.25)

    tab = Tabulation(m, data)
    point = {"mu": torch.tensor([-1.0, 1.0], dtype=F64)}
    tab(point=point, track=True, retable=retable)
    before = calls[0]
    fast = _replays(tab, point=point, track=True, retable=retable)
    assert calls[0] == before
    naive = model_factors(m, data, point=point, track=True, retable=retable)
    assert_same(fast, naive)
    plain = model_factors(m, data, point=point, track=True)
    for use, old in zip(fast.uses, plain.uses, strict=True):
        if use.node.name == "y":
            assert torch.equal(use.table, torch.full_like(old.table, -1.5))
        elif use.fn is use.node.fn:
            assert torch.equal(use.table, old.table)
        else:
            assert torch.equal(use.table, torch.full_like(old.table, -0.25))
    block = fast.chains[0]
    assert block.first[0].child is None and block.rest[0].child == "z"
    # Declined after a replacement: the factory's table again, made by the factory.
    assert_same(_replays(tab, point=point, track=True), plain)
    assert calls[0] > before
    with pytest.raises(genppl.ModelError, match="track=True"):
        tab(point=point, retable=retable)
    with pytest.raises(genppl.ModelError, match=r"'y'.*replacement table has shape"):
        model_factors(m, data, point=point, track=True,
                      retable=lambda u: u.table[..., :1] if u.node.name == "y" else None)


def test_a_factor_after_a_replaced_table_is_remade_by_its_own_factory() -> None:
    """The record of a factor node declared after a replaced table must not take that
    table's place on replay (the replacement belongs to the node that had it)."""
    m = genppl.Model("mixed")
    with m.plate("items", 4):
        m.latent("z", lambda: dist.Categorical(torch.tensor([0.3, 0.7])))
        m.observed("y", lambda z: dist.Normal(z.to(torch.get_default_dtype()), 1.0))
        m.factor("bonus", lambda z: torch.stack([torch.tensor(0.0), torch.tensor(0.5)])[z])
    m.to(dtype=F64)
    data = {"y": torch.tensor([0.1, 0.9, 1.2, -0.3], dtype=F64)}

    def retable(use: Any) -> torch.Tensor | None:  # every observed node's table
        return torch.full_like(use.table, -2.0) if use.value is not None else None

    tab = Tabulation(m, data)
    tab(track=True, retable=retable)
    assert_same(_replays(tab, track=True, retable=retable),
                model_factors(m, data, track=True, retable=retable))

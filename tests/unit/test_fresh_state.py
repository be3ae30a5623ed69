"""No hidden state between calls: a fit starts from the declaration (or ``init=``), never
from what an earlier run left in Pyro's global param store, and a table handed to ``m.cpt``
is the model's own copy, so exact inference, EM and ``write_bif`` read the same numbers."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl.bif import read_bif

pytestmark = pytest.mark.unit
F64 = torch.float64


def _mixture() -> genppl.Model:
    m = genppl.Model("mixture")
    m.param("w", torch.tensor([0.3, 0.7]), constraint=dist.constraints.simplex)
    m.param("mu", torch.tensor([-1.0, 1.0]))
    with m.plate("data"):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z, mu: dist.Normal(mu[z], 1.0))
    return m.to(dtype=F64)


X = torch.tensor([-1.5, -0.7, 0.2, 0.9, 1.4, 2.2], dtype=F64)


def test_em_starts_from_the_declaration_not_from_an_earlier_fit() -> None:
    first = genppl.fit(_mixture(), {"x": X}, engine="em", steps=1, tol=0, progress=False)
    second = genppl.fit(_mixture(), {"x": X}, engine="em", steps=1, tol=0, progress=False)
    for name in ("w", "mu"):
        torch.testing.assert_close(second.params[name], first.params[name], rtol=0, atol=0)
    # and the one step moved them (so equality above is not two untouched starts)
    assert not torch.allclose(first.params["mu"], torch.tensor([-1.0, 1.0], dtype=F64))


def test_em_leaves_the_global_param_store_as_it_was() -> None:
    pyro.clear_param_store()
    pyro.param("mu", torch.tensor([5.0, 6.0], dtype=F64))
    fit = genppl.fit(_mixture(), {"x": X}, engine="em", steps=3, tol=0, progress=False)
    torch.testing.assert_close(pyro.param("mu").detach(), torch.tensor([5.0, 6.0], dtype=F64))
    assert "w" not in pyro.get_param_store()
    # the run started from the declared mu (-1, 1), not from the store's (5, 6)
    restart = genppl.fit(_mixture(), {"x": X}, engine="em", steps=3, tol=0, progress=False,
                         init={"mu": torch.tensor([-1.0, 1.0], dtype=F64)})
    torch.testing.assert_close(restart.params["mu"], fit.params["mu"], rtol=0, atol=0)
    pyro.clear_param_store()


def test_em_init_names_a_param_or_a_latent() -> None:
    with pytest.raises(genppl.ModelError, match=r"init= names 'muu'.*Did you mean 'mu'"):
        genppl.fit(_mixture(), {"x": X}, engine="em", init={"muu": [0.0, 1.0]})


def _network(table: torch.Tensor) -> genppl.Model:
    m = genppl.Model("pair")
    m.cpt("a", [], torch.tensor([0.4, 0.6], dtype=F64), states=["no", "yes"])
    m.cpt("b", ["a"], table, states=["no", "yes"])
    return m


def test_a_cpt_is_copied_on_declaration(tmp_path) -> None:
    table = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=F64)
    declared = table.clone()
    m = _network(table)
    table[0] = torch.tensor([0.5, 0.5], dtype=F64)  # the caller reuses its tensor
    reference = _network(declared)
    evidence = {"b": torch.tensor(1)}
    got = genppl.infer(m, evidence, engine="exact")
    want = genppl.infer(reference, evidence, engine="exact")
    assert got.log_evidence == pytest.approx(want.log_evidence, abs=1e-12)
    torch.testing.assert_close(m["b"].fn.table, declared, rtol=0, atol=0)
    genppl.write_bif(m, tmp_path / "pair.bif")
    torch.testing.assert_close(read_bif(tmp_path / "pair.bif")["b"].fn.table, declared,
                               rtol=0, atol=1e-12)
    fit = genppl.fit(m, {"a": torch.tensor([0, 1, 1]), "b": torch.tensor([1, 1, 0])},
                     engine="em", steps=1, tol=0, progress=False)
    start = genppl.fit(reference, {"a": torch.tensor([0, 1, 1]), "b": torch.tensor([1, 1, 0])},
                       engine="em", steps=1, tol=0, progress=False)
    assert fit.info["log_likelihood"][0] == pytest.approx(start.info["log_likelihood"][0],
                                                          abs=1e-12)


def test_editing_a_models_table_in_place_reaches_every_reader() -> None:
    """``node.fn.table`` is the one source of truth: its log table follows an in-place
    edit, as it follows ``set_table``."""
    m = _network(torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=F64))
    before = genppl.infer(m, {"b": torch.tensor(1)}, engine="exact").log_evidence
    m["b"].fn.table[0] = torch.tensor([0.5, 0.5], dtype=F64)
    after = genppl.infer(m, {"b": torch.tensor(1)}, engine="exact").log_evidence
    reference = _network(torch.tensor([[0.5, 0.5], [0.2, 0.8]], dtype=F64))
    want = genppl.infer(reference, {"b": torch.tensor(1)}, engine="exact").log_evidence
    assert after == pytest.approx(want, abs=1e-12)
    assert after != pytest.approx(before)


def test_looking_at_a_model_leaves_the_random_stream_alone() -> None:
    """Building the graph traces a prior draw; the caller's stream must not move, or a seeded
    run would depend on whether the graph was looked at first."""
    m = _mixture()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert m.graph.number_of_nodes() == 4
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)

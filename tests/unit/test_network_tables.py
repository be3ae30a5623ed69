"""``NetworkTables``: a Bayesian network's evidence-free tables and evidence indicators, kept
by the object that holds them (a model's, a ``Tabulation``'s) and made afresh when a table
changes."""

from __future__ import annotations

import pytest
import torch

import genppl
from genppl.exact.contract import marginals
from genppl.tabulation.networks import NetworkTables, is_network, network_tables
from genppl.tabulation.tabulation import Tabulation

pytestmark = pytest.mark.unit
F64 = torch.float64


def _sprinkler() -> genppl.Model:
    m = genppl.Model("sprinkler")
    m.cpt("cloudy", [], [0.5, 0.5])
    m.cpt("rain", ["cloudy"], [[0.8, 0.2], [0.2, 0.8]])
    m.cpt("wet", ["rain"], [[0.9, 0.1], [0.2, 0.8]])
    return m.to(dtype=F64)


def test_tables_and_indicators_are_kept_until_a_table_changes() -> None:
    model, tables = _sprinkler(), NetworkTables()
    first = tables.with_evidence(model, {"wet": torch.tensor(1)})
    again = tables.with_evidence(model, {"wet": torch.tensor(1)})
    assert all(a is b for (_, a), (_, b) in zip(first.factors, again.factors, strict=True))
    other = tables.with_evidence(model, {"wet": torch.tensor(0)})
    assert other.factors[-1][1] is not first.factors[-1][1]  # its own indicator
    model["rain"].fn.set_table(torch.tensor([[0.5, 0.5], [0.1, 0.9]], dtype=F64))
    new = tables.with_evidence(model, {"wet": torch.tensor(1)})
    assert not any(a is b for (_, a), (_, b) in zip(first.factors, new.factors, strict=True))
    _, single, _ = marginals([f for _, f in new.factors])
    rain = torch.tensor([0.3 * 0.1, 0.7 * 0.8], dtype=F64)  # P(rain) P(wet = 1 | rain)
    torch.testing.assert_close(single["rain"], rain / rain.sum())


def test_each_holder_keeps_its_own_tables() -> None:
    """A ``Tabulation`` holds its own; the model's are another object, kept as long as the
    model is."""
    model = _sprinkler()
    assert is_network(model) and network_tables(model) is network_tables(model)
    tab = Tabulation(model, {"wet": torch.tensor(1)})
    fm = tab()
    assert tab().factors[0][1] is fm.factors[0][1]
    kept = network_tables(model).with_evidence(model, {"wet": torch.tensor(1)})
    assert kept.factors[0][1] is not fm.factors[0][1]


def test_a_model_keeps_its_tables_until_its_declaration_changes() -> None:
    """The exact engine finds a network's tables on the model (``Model.derived``), not in a
    module-global map: one per model, dropped when a node is added, and the answer after the
    change is the new network's."""
    model, other = _sprinkler(), _sprinkler()
    held = network_tables(model)
    assert network_tables(model) is held and network_tables(other) is not held
    before = genppl.infer(model, {"wet": 1}, engine="exact").marginals["rain"]
    model.cpt("grass", ["rain"], [[0.5, 0.5], [0.1, 0.9]])
    assert network_tables(model) is not held
    after = genppl.infer(model, {"wet": 1, "grass": 0}, engine="exact").marginals["rain"]
    assert not torch.allclose(before, after)

"""Bayesian networks from pgmpy: ``from_pgmpy(bn)`` turns a ``DiscreteBayesianNetwork`` into a
``genppl.Model`` of CPT nodes.

The tables go through the same builder as ``read_bif`` (``genppl.bif.network_model``), so a
network read from a BIF file and the same network handed over from pgmpy give the same model:
same node order, same state names, rows rescaled alike. pgmpy is imported only when called, so
genppl itself does not depend on it.
"""

from __future__ import annotations

from typing import Any

import torch

from genppl.bif import network_model
from genppl.dsl.model import Model
from genppl.errors import ModelError


def from_pgmpy(bn: Any, name: str | None = None) -> Model:
    """A model of CPT nodes, one per variable of ``bn``, states named as in pgmpy.

    ``name`` defaults to the network's own name (``bn.name``), else ``"network"``. Only
    discrete networks (pgmpy itself only admits ``TabularCPD``s into them) whose every variable
    has its CPD are accepted; anything else is a ``ModelError`` naming the variable.
    """
    try:
        from pgmpy.models import DiscreteBayesianNetwork
    except ImportError as e:
        raise ModelError("from_pgmpy needs pgmpy: pip install 'genppl[gallery]'.") from e
    if not isinstance(bn, DiscreteBayesianNetwork):
        raise ModelError(f"from_pgmpy takes a pgmpy DiscreteBayesianNetwork, not "
                         f"{type(bn).__name__}; continuous and hybrid networks have no "
                         "conditional probability tables to convert.")
    states: dict[str, list[str]] = {}
    tables: dict[str, tuple[list[str], torch.Tensor]] = {}
    cpds = {cpd.variable: cpd for cpd in bn.get_cpds()}
    for var in bn.nodes():
        cpd = cpds.get(var)
        if cpd is None:
            raise ModelError(f"pgmpy network: variable {var!r} has no CPD; add one with "
                             "bn.add_cpds(TabularCPD(...)) before converting.")
        states[str(var)] = [str(s) for s in cpd.state_names[var]]
        # cpd.values has one axis per cpd.variables = (var, *parents); genppl puts the child last.
        table = torch.as_tensor(cpd.values, dtype=torch.float64).movedim(0, -1)
        tables[str(var)] = ([str(p) for p in cpd.variables[1:]], table)
    label = name or str(getattr(bn, "name", "") or "network")
    return network_model(label, states, tables, where=lambda v: f"pgmpy CPD of {v!r}")

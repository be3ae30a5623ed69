"""Turn a discrete DSL model into log-space factors for the elimination engine.

Each random node becomes one table over its finite parents and itself, by calling its
factory once on a grid of parent states (one axis per parent); observed nodes contribute a
table over their parents at the observed value (continuous observations included); factor
nodes a table over their scope. Params, modules, inputs and deterministic values that do not
depend on a latent are read from one run of the compiled program. Leading dimensions of the
data are evidence cases, answered together.

This first version covers models without plates or chains (Bayesian networks, MRFs); those
structures are refused with a clear error rather than unrolled silently. Data given for a
latent node is evidence on it: any variable of a network can be conditioned on without
redeclaring it observed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine

from genppl.dsl.model import Model
from genppl.dsl.nodes import Node
from genppl.dsl.tables import CPT
from genppl.errors import ModelError
from genppl.exact.contract import Factor, evidence_factor
from genppl.pyro.layout import resolve_sizes
from genppl.pyro.program import PyroProgram, as_data, default_tensor_context


@dataclass
class FactorModel:
    """The factors of a model under given data, and each latent's state values."""

    factors: list[Factor]
    states: dict[str, torch.Tensor]  # latent -> its support values (what index k means)
    latents: list[str]


def model_factors(model: Model, data: Mapping[str, Any]) -> FactorModel:
    if model.plates or model.chains:
        raise ModelError(f"engine 'exact' does not yet handle plates or chains (model "
                         f"{model.name!r}); use engine='enum' for now.")
    data = {k: as_data(model, k, v) for k, v in data.items() if v is not None}
    unknown = [k for k in data if k not in model.nodes
               or model.nodes[k].kind not in ("latent", "observed", "input")]
    if unknown:
        raise ModelError(f"data names {unknown[0]!r}, which is not a random node or input of "
                         f"{model.name!r}.")
    needs_fixed = any(model.nodes[p].kind not in ("latent", "observed")
                      for node in model.nodes.values() for p in node.parent_nodes)
    fixed = _fixed_values(model, data) if needs_fixed else {}
    states: dict[str, torch.Tensor] = {}
    factors: list[Factor] = []
    latents: list[str] = []
    observed: dict[str, tuple[torch.Tensor, int]] = {}  # data and event dims, for children

    def add_latent(node: Node, scope: tuple[str, ...], table: torch.Tensor,
                   support: torch.Tensor) -> None:
        states[node.name] = support
        factors.append(Factor((*scope, node.name), table))
        latents.append(node.name)
        if node.name in data:  # evidence on a latent: an indicator of its state
            factors.append(evidence_factor(node.name, _state_index(
                node, data[node.name], support), len(support), like=table))

    with default_tensor_context(model.device, model.dtype), torch.no_grad():
        for node in model.nodes.values():
            if node.kind not in ("factor", "latent", "observed"):
                continue
            scope = _finite_parents(model, node, states)
            if isinstance(node.fn, CPT) and scope == node.fn.parents:
                # A CPT is its own factor: no need to tabulate it through its factory.
                table = node.fn.log_table()
                support = torch.arange(table.shape[-1], device=table.device)
                if node.kind == "latent":
                    add_latent(node, scope, table, support)
                    continue
                value = data.get(node.name)
                if value is not None:
                    index = _state_index(node, value, support)
                    factors.append(Factor(scope, table.movedim(-1, 0)[index]))
                    observed[node.name] = (value, 0)
                    continue
            full = tuple(len(states[v]) for v in scope)
            result = _call(node, _grid(node, scope, states, fixed, observed))
            if node.kind == "factor":
                table = torch.as_tensor(result)
                factors.append(Factor(scope, table.expand(
                    torch.broadcast_shapes(table.shape, full))))
                continue
            d = result.expand(torch.broadcast_shapes(result.batch_shape, full))
            if node.kind == "latent":
                support = _support(node, d)
                table = d.log_prob(support.reshape(-1, *([1] * len(d.batch_shape))))
                add_latent(node, scope, table.movedim(0, -1), support)
            else:
                value = data.get(node.name)
                if value is None:
                    raise ModelError(f"observed node {node.name!r} ({node.declared_at}) has no "
                                     f"data; pass {node.name}=...")
                factors.append(Factor(scope, d.log_prob(_at_cases(value, d, len(scope)))))
                observed[node.name] = (value, len(d.event_shape))
    return FactorModel(factors, states, latents)


def _state_index(node: Node, value: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Evidence values (support values, e.g. 0/1 or 0..K-1) as state indices, checked."""
    match = value.unsqueeze(-1) == support.to(value.dtype)
    if not bool(match.any(-1).all()):
        raise ModelError(f"evidence for {node.name!r} ({node.declared_at}) has values outside "
                         f"its states {support.tolist()}.")
    return match.long().argmax(-1)


def _at_cases(value: torch.Tensor, d: Any, scope_dims: int) -> torch.Tensor:
    """Observed data with its case axes first and singleton axes for the parents' states."""
    cases = value.dim() - len(d.event_shape)
    return value.reshape((*value.shape[:cases], *([1] * scope_dims), *d.event_shape))


def _fixed_values(model: Model, data: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Values of params, modules, inputs and deterministic nodes, from one program run."""
    program = PyroProgram(model, model.name, generative=True)
    sizes, lengths = resolve_sizes(model, {})
    inputs = {k: v for k, v in data.items() if model.nodes[k].kind == "input"}
    with poutine.block():
        return program.execute(inputs, sizes, lengths)


def _finite_parents(model: Model, node: Node, states: Mapping[str, torch.Tensor]
                    ) -> tuple[str, ...]:
    scope = []
    for p in node.parents:
        parent = model.nodes[p.node] if p.node is not None else None
        if parent is None or parent.kind not in ("latent", "observed"):
            continue
        if parent.kind == "observed":
            continue  # its data is a fixed value, like a param's
        if p.node not in states:
            raise ModelError(f"node {node.name!r} ({node.declared_at}) reads {p.node!r}, "
                             "whose support is not finite; engine 'exact' needs every latent "
                             "finite. Use engine='nuts' or 'svi'.")
        scope.append(p.node)
    return tuple(scope)


def _grid(node: Node, scope: tuple[str, ...], states: Mapping[str, torch.Tensor],
          fixed: Mapping[str, Any], observed: Mapping[str, tuple[torch.Tensor, int]]
          ) -> dict[str, Any]:
    """Factory arguments: each finite parent's states along its own axis, observed parents at
    their data (case axes first), everything else at its fixed value."""
    args: dict[str, Any] = {}
    for p in node.parents:
        if p.node in scope:
            shape = [1] * len(scope)
            shape[scope.index(p.node)] = -1
            args[p.arg] = states[p.node].reshape(shape)
        elif p.node in observed:
            value, event_dims = observed[p.node]
            cases = value.dim() - event_dims
            args[p.arg] = value.reshape((*value.shape[:cases], *([1] * len(scope)),
                                         *value.shape[cases:]))
        else:
            args[p.arg] = fixed[p.node]
    return args


def _call(node: Node, args: dict[str, Any]) -> Any:
    try:
        return node.fn(**args)  # type: ignore[misc]
    except ModelError:
        raise
    except (ValueError, RuntimeError, TypeError, IndexError, KeyError) as e:
        raise ModelError(f"node {node.name!r} ({node.declared_at}): its factory raised "
                         f"{type(e).__name__}: {e} while tabulating it over its parents' "
                         "states; index tables with pyro.ops.indexing.Vindex.") from e


def _support(node: Node, d: Any) -> torch.Tensor:
    if not d.has_enumerate_support or d.event_shape:
        raise ModelError(f"latent {node.name!r} ({node.declared_at}) has no finite scalar "
                         f"support ({type(d).__name__}); engine 'exact' needs finite latents.")
    support = d.enumerate_support(expand=False).reshape(-1)
    return support

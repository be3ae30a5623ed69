"""Read values back out of Pyro traces into the compact layout users pass data in.

Pyro keeps every plate at its fixed batch dim (singleton where a node is not in a plate) and
names chain steps ``z[t]``. Results present each node as one tensor: time axis first for chain
nodes, then the node's plates outermost first, then the event axes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from genppl.dsl.model import Model
from genppl.dsl.nodes import Node


def split_site(site: str) -> tuple[str, int | None]:
    """``"z[3]"`` -> ``("z", 3)``; ``"z"`` -> ``("z", None)``."""
    if site.endswith("]") and "[" in site:
        name, step = site[:-1].split("[", 1)
        return name, int(step)
    return site, None


def from_pyro_layout(node: Node, value: torch.Tensor, dims: Mapping[str, int],
                     event_dim: int) -> torch.Tensor:
    """Inverse of ``layout.to_pyro_layout`` for one step: keep only the node's plate axes."""
    batch = value.dim() - event_dim
    keep = [batch + dims[p] for p in node.layout_plates]
    if any(axis < 0 for axis in keep):  # a value broadcast over its plates
        return value
    drop = sorted(set(range(batch)) - set(keep), reverse=True)
    if any(value.shape[axis] != 1 for axis in drop):
        return value  # not laid out by plates (e.g. a deterministic with a custom event_dim)
    for axis in drop:
        value = value.squeeze(axis)
    return value


def by_node(per_site: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``(site, value)`` pairs -> ``{node: value}``, chain steps stacked on a leading time
    axis in step order (whatever order the steps ran in)."""
    steps: dict[str, dict[int, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for site, value in per_site:
        name, step = split_site(site)
        if step is None:
            out[name] = value
        else:
            steps.setdefault(name, {})[step] = value
    for name, by_step in steps.items():
        out[name] = torch.stack([by_step[t] for t in sorted(by_step)])
    return out


def trace_values(model: Model, trace: object, dims: Mapping[str, int],
                 kinds: tuple[str, ...] = ("latent", "deterministic")) -> dict[str, torch.Tensor]:
    """Compact values of the model's nodes of ``kinds`` recorded in a Pyro trace."""
    found = []
    for site in trace.nodes.values():  # type: ignore[attr-defined]
        node = model.nodes.get(split_site(site["name"])[0])
        if site["type"] != "sample" or node is None or node.kind not in kinds:
            continue
        value = from_pyro_layout(node, site["value"].detach(), dims, site["fn"].event_dim)
        found.append((site["name"], value))
    return by_node(found)


def stack_draws(draws: list[dict[str, torch.Tensor]], chains: int = 1) -> dict[str, torch.Tensor]:
    """List of per-draw dicts -> ``{name: (chains, draws, *shape)}``."""
    if not draws:
        return {}
    out = {}
    for name in draws[0]:
        stacked = torch.stack([d[name] for d in draws])
        out[name] = stacked.reshape(chains, -1, *stacked.shape[1:])
    return out


def to_sites(model: Model, values: Mapping[str, torch.Tensor], dims: Mapping[str, int],
             sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Nodes' values in the compact layout as Pyro site values (the inverse of ``by_node``
    and ``from_pyro_layout``): a chain node's time axis becomes one site per step."""
    from genppl.pyro.layout import to_pyro_layout

    out = {}
    for name, value in values.items():
        node = model.nodes[name]
        if node.chain is None:
            out[name] = to_pyro_layout(node, value, dims, sizes, {})
            continue
        for step in range(value.shape[0]):
            out[f"{name}[{step}]"] = to_pyro_layout(node, value[step], dims, sizes, {})
    return out

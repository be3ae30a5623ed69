"""Where plates sit: Pyro batch dimensions, sizes from data, and the data layout.

Users pass each data array in a compact layout: the chain's time axis first (if the node is
in a chain), then one axis per plate of the node, outermost first, then the event axes. Pyro
wants every plate at a fixed negative batch dimension shared by all sites. This module assigns
those dimensions once per model and converts between the two layouts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import torch

from genppl.dsl.ragged import check_sizes, check_total, chosen_copies, entries
from genppl.errors import ModelError

if TYPE_CHECKING:
    from genppl.dsl.model import Model
    from genppl.dsl.nodes import Node, PlateSpec


def plate_dims(model: Model) -> dict[str, int]:
    """Assign each plate a negative batch dim: enclosing plates lie to the left.

    A plate's dim is ``-1 - (longest run of plates nested inside it)``, over every node's plate
    stack, so plates on one stack get distinct dims whatever else is declared.
    """
    encloses = nx.DiGraph()
    encloses.add_nodes_from(p for p, spec in model.plates.items() if not spec.ragged)
    # A ragged plate shares its enclosing plate's dim: no node is in the two at once once
    # the ragged plate is flattened (``Node.layout_plates``).
    stacks = {node.layout_plates for node in model.nodes.values()}
    stacks = {tuple(p for p in stack if not model.plates[p].ragged) for stack in stacks}
    stacks |= {c.plates for c in model.chains.values()}
    for stack in stacks:
        encloses.add_edges_from(itertools.pairwise(stack))
    if not nx.is_directed_acyclic_graph(encloses):
        cycle = nx.find_cycle(encloses)
        raise ModelError(f"model {model.name!r}: plates {cycle[0][0]!r} and {cycle[0][1]!r} are "
                         "nested in both orders; nest plates the same way everywhere.")
    depth: dict[str, int] = {}
    for plate in reversed(list(nx.topological_sort(encloses))):
        depth[plate] = 1 + max((depth[c] for c in encloses.successors(plate)), default=0)
    dims = {p: (spec.dim if spec.dim is not None else -depth[p]) for p, spec in
            model.plates.items() if not spec.ragged}
    dims |= {p: dims[spec.parent] for p, spec in model.plates.items()  # type: ignore[index]
             if spec.ragged}
    for stack in stacks:
        used = [dims[p] for p in stack]
        if any(a >= b for a, b in itertools.pairwise(used)):
            raise ModelError(f"model {model.name!r}: plates {stack} get batch dims {used}; an "
                             "enclosing plate needs a dim left of (more negative than) the "
                             "plates inside it. Fix dim= or drop it.")
    return dims


def resolve_sizes(model: Model, data: Mapping[str, torch.Tensor],
                  default: int | None = None, given: Mapping[str, int] | None = None
                  ) -> tuple[dict[str, int], dict[str, int]]:
    """Plate sizes and chain lengths: ``given`` (by plate or chain name), else declared, else
    read off the data's compact layout.

    ``default`` stands in for sizes no data determines (used when drawing prior samples to
    inspect a model); without it such a size is an error.
    """
    given = dict(given or {})
    unknown = [k for k in given if k not in model.plates and k not in model.chains]
    if unknown:
        raise ModelError(f"sizes= names {unknown[0]!r}, which is neither a plate nor a chain of "
                         f"{model.name!r}; plates: {sorted(model.plates)}, chains: "
                         f"{sorted(model.chains)}.")
    sizes: dict[str, int] = {p: s.size for p, s in model.plates.items() if s.size is not None}
    lengths: dict[str, int] = {c: s.length for c, s in model.chains.items()
                               if s.length is not None}
    for name, value in given.items():
        (sizes if name in model.plates else lengths)[name] = int(value)
    for name, value in data.items():
        node = model.nodes.get(name)
        if node is None or node.kind not in ("observed", "input", "latent"):
            continue  # (data for a latent is evidence on it, in the same layout)
        offset = 0
        if node.chain is not None:
            lengths.setdefault(node.chain, value.shape[0]) if value.dim() else None
            offset = 1
        for i, plate in enumerate(node.layout_plates):
            if value.dim() > offset + i:
                sizes.setdefault(plate, value.shape[offset + i])
    for spec in model.plates.values():
        if spec.ragged:
            _ragged_size(spec, data, sizes, default)
    for what, table, specs in (("plate", sizes, model.plates), ("chain", lengths, model.chains)):
        for name, spec in specs.items():
            if name not in table:
                if default is None:
                    holders = [n.name for n in model.nodes.values()
                               if n.kind in ("observed", "input")
                               and (name in n.plates or n.chain == name)]
                    raise ModelError(
                        f"{what} {name!r} ({spec.declared_at}) has no size and no data to read it "
                        f"from; pass data for one of {holders or 'its nodes'} or declare it with "
                        "a size.")
                table[name] = default
    return sizes, lengths


def _ragged_size(spec: PlateSpec, data: Mapping[str, torch.Tensor],
                 sizes: dict[str, int], default: int | None) -> None:
    """A ragged plate's size is the sum of its sizes input (checked: one non-negative
    integer per entry of the enclosing plate, summing to the flat length of its nodes'
    data). Without the input, ``default`` copies per entry stand in (to inspect a model)."""
    lengths = data.get(spec.sizes)  # type: ignore[arg-type]
    if lengths is None:
        if default is not None and spec.parent in sizes:
            sizes.setdefault(spec.name, default * sizes[spec.parent])  # type: ignore[index]
        return
    check_sizes(spec, lengths, sizes.get(spec.parent))  # type: ignore[arg-type]
    sizes[spec.name] = check_total(spec, lengths, sizes.get(spec.name))


@dataclass(frozen=True)
class RaggedCopies:
    """The copies of a ragged plate one run of the program holds."""

    #: each copy's entry of the enclosing plate, as the run holds that plate: its place in
    #: the minibatch when the enclosing plate is subsampled (the index its parents' values,
    #: one per document of the minibatch, are read at)
    entries: torch.Tensor
    #: the copies' positions in the flat data (the chosen documents' words, in the
    #: minibatch's order), or None when every copy is held
    positions: torch.Tensor | None = None


def ragged_index(model: Model, data: Mapping[str, torch.Tensor],
                 sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """For each ragged plate, the enclosing plate's entry of each of its flat copies
    (``[0, 0, 2, 2, 2]`` for sizes ``[2, 0, 3]``): the index a node of the ragged plate
    reads the enclosing plate's nodes at. Without the sizes input, equal shares stand in
    (``resolve_sizes``'s ``default``)."""
    return {name: entries(_lengths(model, spec, data, sizes))
            for name, spec in model.plates.items() if spec.ragged}


def ragged_copies(model: Model, data: Mapping[str, torch.Tensor], sizes: Mapping[str, int],
                  indices: Mapping[str, torch.Tensor]) -> dict[str, RaggedCopies]:
    """For each ragged plate, the copies a run holds: every copy (``ragged_index``), or,
    where the enclosing plate is subsampled at ``indices``, the chosen entries' copies only
    (``chosen_copies``)."""
    out = {}
    for name, spec in model.plates.items():
        if spec.ragged:
            lengths = _lengths(model, spec, data, sizes)
            chosen = indices.get(spec.parent)  # type: ignore[arg-type]
            out[name] = (RaggedCopies(entries(lengths)) if chosen is None
                         else RaggedCopies(*chosen_copies(lengths, chosen)))
    return out


def _lengths(model: Model, spec: PlateSpec, data: Mapping[str, torch.Tensor],
             sizes: Mapping[str, int]) -> torch.Tensor:
    """A ragged plate's number of copies per entry of its enclosing plate: its sizes input
    (checked), or equal shares of its size without it."""
    outer = sizes[spec.parent]  # type: ignore[index]
    lengths = data.get(spec.sizes)  # type: ignore[arg-type]
    if lengths is None:
        return torch.full((outer,), sizes[spec.name] // max(outer, 1), device=model.device)
    check_sizes(spec, lengths, outer)
    return lengths


def to_pyro_layout(node: Node, value: torch.Tensor, dims: Mapping[str, int],
                   sizes: Mapping[str, int], indices: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Check one step's compact data against the node's plates, subsample, and move each plate
    axis to its Pyro batch dim (inserting singleton axes for plates the node is not in)."""
    plates = node.layout_plates
    k = len(plates)
    if value.dim() < k:
        raise ModelError(
            f"data for {node.name!r} ({node.declared_at}) has shape {tuple(value.shape)}, but "
            f"{node.name!r} sits in plates {plates}: its leading axes must be "
            + ", ".join(f"{p} ({sizes[p]})" for p in plates) + " then the event axes.")
    for axis, plate in enumerate(plates):
        if value.shape[axis] != sizes[plate]:
            raise ModelError(
                f"data for {node.name!r} ({node.declared_at}) has {value.shape[axis]} entries on "
                f"axis {axis}, but plate {plate!r} has size {sizes[plate]}. Data axes are: "
                + ("time, " if node.chain else "") + ", ".join(plates) + ", then event.")
        idx = indices.get(plate)
        if idx is not None:
            value = value.index_select(axis, idx)
    if k == 0:
        return value
    event_shape = value.shape[k:]
    width = max(-dims[p] for p in plates)
    shape = [1] * width
    for axis, plate in enumerate(plates):
        shape[width + dims[plate]] = value.shape[axis]
    # Plates on one stack have increasing dims (outer left), so a reshape keeps the order.
    return value.reshape(*shape, *event_shape)

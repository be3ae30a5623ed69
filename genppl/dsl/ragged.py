"""Ragged plates lowered to the declaration one writes by hand: one flat plate and an index.

A model with a ragged plate (documents, each with its own number of words) compiles as it is
declared: ``genppl.pyro`` runs the words as one flat plate and reads each word's document's
values at its index. The engines that tabulate a model (``exact``, ``em``, ``gibbs``,
``cavi``) take per-document continuous latents the way LDA is written without nested plates,
as one global latent whose rows are the documents, read at each word's document::

    theta ~ Dirichlet(alpha).expand([D]).to_event(1)        # one row per document
    with plate("words"): z ~ Categorical(theta[doc])         # doc: each word's document

``flatten`` rewrites a model into exactly that form when it can: every node of a ragged
plate's enclosing plate is its sizes input or a latent without parents whose distribution is
not finite (a document's mixture). The engines then see the hand-written model's structure,
so its tabulated factors and its speed. A model it cannot rewrite (a finite latent per
document, as naive Bayes's class) is returned as declared: the tabulating engines then take
the ragged plate as a nested plate of the factor model (``genppl.exact.factors.Nesting``),
each word's table multiplied into its document's row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from genppl.dsl.nodes import Node, Parent, PlateSpec
from genppl.errors import ModelError

if TYPE_CHECKING:
    from genppl.dsl.model import Model


def check_sizes(spec: PlateSpec, lengths: torch.Tensor, outer_size: int | None) -> None:
    """A ragged plate's sizes: one non-negative integer per entry of its enclosing plate."""
    where = f"ragged plate {spec.name!r} ({spec.declared_at})"
    fractional = lengths.is_floating_point() and bool((lengths != lengths.round()).any())
    if lengths.dim() != 1 or fractional or lengths.is_complex():
        raise ModelError(f"{where}: its sizes {spec.sizes!r} must be one integer per entry of "
                         f"plate {spec.parent!r}; got shape {tuple(lengths.shape)}, "
                         f"dtype {lengths.dtype}.")
    if bool((lengths < 0).any()):
        first = int(torch.nonzero(lengths < 0)[0, 0])
        raise ModelError(f"{where}: its sizes {spec.sizes!r} hold {lengths[first].item()} at "
                         f"entry {first}; a size is a count of copies, 0 or more.")
    if outer_size is not None and lengths.shape[0] != outer_size:
        raise ModelError(f"{where}: its sizes {spec.sizes!r} have {lengths.shape[0]} entries, "
                         f"but plate {spec.parent!r} has size {outer_size}.")


def check_total(spec: PlateSpec, lengths: torch.Tensor, found: int | None) -> int:
    """The ragged plate's size, the sum of its sizes, which must be ``found`` (the flat
    length of its nodes' data) when that is known."""
    total = int(lengths.sum())
    if found is not None and found != total:
        raise ModelError(f"ragged plate {spec.name!r} ({spec.declared_at}): its sizes "
                         f"{spec.sizes!r} sum to {total}, but its nodes' data has {found} "
                         "entries on the plate's one flat axis (the entries of plate "
                         f"{spec.parent!r} concatenated); they must agree.")
    return total


def entries(lengths: torch.Tensor) -> torch.Tensor:
    """The enclosing plate's entry of each flat copy: ``[0, 0, 2, 2, 2]`` for ``[2, 0, 3]``."""
    return torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device),
                                   lengths.long())


def chosen_copies(lengths: torch.Tensor, chosen: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The copies of the ``chosen`` entries (a minibatch of documents, in its order):
    ``(entry, position)`` of each, its entry's place in ``chosen`` and its position in the
    flat data. For lengths ``[2, 0, 3]`` and ``chosen = [2, 0]``: ``([0, 0, 0, 1, 1],
    [2, 3, 4, 0, 1])``. O(copies chosen)."""
    lengths = lengths.long()
    counts = lengths[chosen]
    starts = torch.cumsum(lengths, 0) - lengths
    entry = entries(counts)
    first = (torch.cumsum(counts, 0) - counts)[entry]  # each copy's first sibling's place
    place = torch.arange(entry.shape[0], device=lengths.device)
    return entry, starts[chosen][entry] + place - first


def flatten(model: Model, data: Mapping[str, Any] | None
            ) -> tuple[Model, dict[str, Any] | None]:
    """``(model, data)`` with each ragged plate lowered to a flat plate read through an index
    input (see the module doc), or as given when there is nothing to lower or it cannot be."""
    ragged = [s for s in model.plates.values() if s.ragged]
    if not ragged or data is None or any(s.sizes not in data for s in ragged):
        return model, None if data is None else dict(data)
    lifted: dict[str, int] = {}  # per-document latent -> number of documents
    for spec in ragged:
        lengths = torch.as_tensor(data[spec.sizes])  # type: ignore[index]
        check_sizes(spec, lengths, model.plates[spec.parent].size)  # type: ignore[index]
        for node in model.nodes.values():
            if node.flattened is not None and spec.name in node.plates and node.name in data:
                check_total(spec, lengths, len(torch.as_tensor(data[node.name])))
        rows = _liftable(model, spec)
        if rows is None:
            return model, dict(data)
        lifted |= dict.fromkeys(rows, lengths.shape[0])
    key = (model.device, model.dtype, tuple(sorted(lifted.items())))
    kept = model.derived(LoweredModels)
    if key not in kept:
        kept[key] = _rewrite(model, ragged, lifted)
    return kept[key], _flat_data(model, ragged, data)


class LoweredModels(dict):  # type: ignore[type-arg]
    """The lowered declarations of one model, by device, dtype and rows per lifted latent,
    kept by the model (``Model.derived``: dropped when it changes), so that repeated calls
    reuse one lowered model and with it what engines keep on it (its graph, its tables)."""


def _liftable(model: Model, spec: PlateSpec) -> list[str] | None:
    """The latents of ``spec``'s enclosing plate to lift to global rows, or None when the
    plate cannot be lowered: a node of that plate is not such a latent (nor the sizes
    input), or a chain runs over that plate."""
    outer = spec.parent
    if any(outer in chain.plates for chain in model.chains.values()):
        return None  # (a chain over the documents repeats them along time)
    rows = []
    for node in model.nodes.values():
        if outer not in node.plates or node.flattened is not None or node.name == spec.sizes:
            continue
        if node.plates != (outer,) or node.chain is not None or node.kind != "latent" \
                or node.parents or not _continuous_root(node):
            return None
        rows.append(node.name)
    return rows


def _continuous_root(node: Node) -> bool:
    """Whether a parentless latent's distribution is one draw per entry and not finite
    (finite ones stay per document: lifting them would make one variable of all documents'
    joint states)."""
    try:
        d = node.fn()  # type: ignore[misc]
    except (ValueError, RuntimeError, TypeError, IndexError, KeyError):  # cannot run alone
        return False
    return not d.has_enumerate_support and tuple(d.batch_shape) == ()


def _index_name(model: Model, spec: PlateSpec) -> str:
    name = f"{spec.parent}_of_{spec.name}"
    while name in model.nodes or name in model.plates:
        name += "_"
    return name


def _rewrite(model: Model, ragged: list[PlateSpec], lifted: Mapping[str, int]) -> Model:
    from genppl.dsl.model import Model

    flat = Model(model.name)
    flat.to(model.device, model.dtype)
    outers = {s.parent for s in ragged}
    by_plate = {s.name: s for s in ragged}
    for name, spec in model.plates.items():
        if name in by_plate:
            flat.plates[name] = PlateSpec(name, None, None, None, None, spec.declared_at,
                                          symbol=spec.symbol)
        elif name not in outers:
            flat.plates[name] = spec
    flat.chains = dict(model.chains)
    sizes = {s.sizes: s for s in ragged}
    for node in model.nodes.values():
        if node.name in sizes:
            spec = sizes[node.name]
            index = _index_name(model, spec)
            flat.nodes[index] = Node(index, "input", node.declared_at, plates=(spec.name,))
        elif node.name in lifted:
            flat.nodes[node.name] = replace(node, plates=(), fn=_Rows(node.fn, lifted[node.name]))
        elif node.flattened is not None:
            spec = next(by_plate[p] for p in node.plates if p in by_plate)
            index = _index_name(model, spec)
            read = tuple(p.arg for p in node.parents if p.node in lifted)
            flat.nodes[node.name] = replace(
                node, plates=(spec.name,), flattened=None,
                fn=_AtEntries(node.fn, read, index),  # type: ignore[arg-type]
                parents=(*node.parents, Parent(index, index)))
        else:
            flat.nodes[node.name] = node
    return flat


def _flat_data(model: Model, ragged: list[PlateSpec], data: Mapping[str, Any]
               ) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in {s.sizes for s in ragged}}
    for spec in ragged:
        lengths = torch.as_tensor(data[spec.sizes], device=model.device)  # type: ignore[index]
        out[_index_name(model, spec)] = entries(lengths)
    return out


class _Rows:
    """A per-document latent's factory lifted to one latent of ``rows`` independent rows."""

    def __init__(self, fn: Callable[..., Any], rows: int) -> None:
        self.fn = fn
        self.rows = rows

    def __call__(self) -> Any:
        return self.fn().expand([self.rows]).to_event(1)


class _AtEntries:
    """A word's factory reading the lifted latents at its document's row (``theta[doc]``)."""

    def __init__(self, fn: Callable[..., Any], read: tuple[str, ...], index: str) -> None:
        self.fn = fn
        self.read = read
        self.index = index

    def __call__(self, **values: Any) -> Any:
        at = values.pop(self.index)
        return self.fn(**{k: v[at] if k in self.read else v for k, v in values.items()})

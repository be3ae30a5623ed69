"""Minibatches of plates, epoch after epoch, with the log-likelihood scaled correctly.

A plate declared with ``subsample_size`` already draws a fresh random minibatch per step
(``pyro.plate(size, subsample_size)``). ``PlateLoader`` instead walks the data the way a
``DataLoader(shuffle=True, drop_last=True)`` does: each epoch is a new permutation cut into
batches, so every item is seen once per epoch. The batch reaches the model as the plate's
subsample indices (``pyro.plate(name, size, subsample=indices)`` semantics): the compiled
program indexes the plate's data with them and Pyro scales the plate's log-likelihood by
``size / batch``, so each step's ELBO is an unbiased estimate of the full-data ELBO (tested
exactly: the mean over an epoch's batches equals the full-data ELBO). Dropping the last
incomplete batch keeps every batch the same size -- a fixed shape for autoguides -- and each
step's estimate unbiased, since each epoch leaves out a different random remainder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest
from genppl.pyro.layout import resolve_sizes
from genppl.tabulation.prepared import Prepared


def plate_batches(prep: Prepared, batch_size: int | dict[str, int] | None) -> dict[str, int]:
    """Batch size by plate: ``batch_size`` for every plate that holds observed data, or per
    plate by name. Plates no larger than their batch are left whole. A ragged plate is
    never batched itself: a minibatch of its enclosing plate holds its entries' copies."""
    if batch_size is None:
        return {}
    model = prep.model
    if isinstance(batch_size, int):
        named = {p: batch_size for p, spec in model.plates.items() if not spec.ragged
                 and any(p in n.plates for n in model.nodes.values() if n.kind == "observed")}
        if not named:
            raise ModelError(f"batch_size= minibatches plates, but no observed node of "
                             f"{model.name!r} sits in a plate.")
    else:
        named = dict(batch_size)
    sizes, _ = resolve_sizes(model, prep.data)
    batches = {}
    for name, size in named.items():
        if name not in model.plates:
            raise ModelError(f"batch_size= names {name!r}, which is not a plate of "
                             f"{model.name!r}." + suggest(name, model.plates))
        if model.plates[name].ragged:
            raise ModelError(f"batch_size= names ragged plate {name!r}, whose copies are "
                             "batched with their entries: name its enclosing plate "
                             f"{model.plates[name].parent!r} instead.")
        if not isinstance(size, int) or size < 1:
            raise ModelError(f"batch size of plate {name!r} must be a positive int, got {size!r}.")
        declared = model.plates[name].subsample_size
        if declared is not None and declared != size:
            raise ModelError(f"plate {name!r} is declared with subsample_size={declared} "
                             f"({model.plates[name].declared_at}); batch_size={size} would "
                             "give it two different minibatch sizes.")
        if size < sizes[name]:
            batches[name] = size
    return batches


class PlateLoader:
    """Shuffled minibatches of indices for each plate in ``batches`` (of full ``sizes``),
    from a generator of its own so that the batches, and a checkpoint of where the loader
    stands, do not depend on how many random numbers the model draws."""

    def __init__(self, sizes: dict[str, int], batches: dict[str, int], seed: int) -> None:
        self.sizes = {name: sizes[name] for name in batches}
        self.batches = batches
        self.generator = torch.Generator().manual_seed(seed)
        self.order: dict[str, torch.Tensor] = {}
        self.cursor = dict.fromkeys(batches, 0)
        self.epochs = dict.fromkeys(batches, 0)  # epochs begun, by plate

    def next(self) -> dict[str, torch.Tensor]:
        """The next batch of indices of every plate (a new permutation at each epoch)."""
        out = {}
        for name, b in self.batches.items():
            if name not in self.order or self.cursor[name] + b > self.sizes[name]:
                self.order[name] = torch.randperm(self.sizes[name], generator=self.generator)
                self.cursor[name] = 0
                self.epochs[name] += 1
            out[name] = self.order[name][self.cursor[name]:self.cursor[name] + b]
            self.cursor[name] += b
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": dict(self.order),
                "cursor": dict(self.cursor), "epochs": dict(self.epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order = dict(state["order"])
        self.cursor = dict(state["cursor"])
        self.epochs = dict(state["epochs"])


class _UseIndices(Messenger):
    """Give the plates named in ``indices`` those subsample indices (the value of the plate's
    own subsample site, which ``pyro.plate`` reads back as its minibatch)."""

    def __init__(self, indices: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.indices = indices

    def _pyro_sample(self, msg: Any) -> None:
        if site_is_subsample(msg) and msg["name"] in self.indices:
            msg["value"] = self.indices[msg["name"]].to(msg["fn"].device)


def on_indices(fn: Callable[..., Any], indices: dict[str, torch.Tensor]) -> Callable[..., Any]:
    """``fn`` run with each plate in ``indices`` (a dict the caller updates between steps)
    subsampled at those indices. Use inside ``subsampled`` so the program indexes its data."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with _UseIndices(indices):
            return fn(*args, **kwargs)

    run.__name__ = getattr(fn, "__name__", "batched")
    return run


@contextmanager
def subsampled(model: Model, batches: dict[str, int]) -> Iterator[None]:
    """While inside, the plates in ``batches`` behave as if declared with that
    ``subsample_size``: the compiled model (and any DSL guide, which shares the model's
    plates) indexes their data by the plate's subsample indices. The declaration is put back
    on the way out."""
    saved = {name: model.plates[name] for name in batches}
    try:
        for name, b in batches.items():
            model.plates[name] = dataclasses.replace(saved[name], subsample_size=b)
        yield
    finally:
        model.plates.update(saved)

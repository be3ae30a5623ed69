"""Factories for table-defined discrete nodes: CPTs and counting-measure variables.

Both return ordinary distribution factories, so the compiler, the graph and every engine treat
them exactly like any other node; the table is kept in float64 and cast to the model's
device and dtype when the model runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from genppl.errors import ModelError
from genppl.library_internals import version

if TYPE_CHECKING:
    from genppl.dsl.declaration import Declaration


class _Cast:
    """The log of a float64 master table, cast once per (device, dtype) the model runs on and
    derived again whenever the master changes (replaced, or edited in place: its version
    counter moves), so the probabilities stay the one source of truth."""

    def __init__(self, model: Declaration, master: Callable[[], torch.Tensor]) -> None:
        self._model = model
        self._master = master
        self._stamp: tuple[int, int] | None = None
        self._cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def __call__(self) -> torch.Tensor:
        master = self._master()
        stamp = (id(master), version(master))
        if stamp != self._stamp:
            self._cache.clear()
            self._stamp = stamp
        key = (self._model.device, self._model.dtype)
        cast = self._cache.get(key)
        if cast is None:
            cast = self._cache[key] = master.log().to(device=key[0], dtype=key[1])
        return cast


def cpt_factory(
    model: Declaration, name: str, parents: tuple[str, ...], table: Any, where: str
) -> tuple[Callable[..., dist.Distribution], int]:
    """Validate a CPT against its parents and return ``(factory, cardinality)``."""
    try:  # a copy: the caller editing its tensor (or array) later must not change the model
        t = torch.as_tensor(table, dtype=torch.float64).detach().clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"CPT {name!r} ({where}): table is not numeric ({e}).") from e
    if t.dim() != len(parents) + 1:
        raise ModelError(
            f"CPT {name!r} ({where}): table has {t.dim()} dimensions but {len(parents)} parents; "
            "its shape must be (parent cardinalities..., own cardinality)."
        )
    for axis, p in enumerate(parents):
        parent = model.nodes.get(p)
        known = parent.cardinality if parent is not None else None
        if known is not None and known != t.shape[axis]:
            raise ModelError(
                f"CPT {name!r} ({where}): axis {axis} has {t.shape[axis]} entries but parent "
                f"{p!r} has {known} states."
            )
    if (t < 0).any() or not torch.allclose(t.sum(-1), torch.ones((), dtype=t.dtype), atol=1e-6):
        raise ModelError(f"CPT {name!r} ({where}): every row (last axis) must be a probability "
                         "vector: non-negative and summing to 1.")
    return CPT(model, parents, t), int(t.shape[-1])


class CPT:
    """A conditional probability table as a distribution factory over its parents' states.

    ``table`` keeps the float64 probabilities as declared (for writing BIF files and for
    engines that read tables directly).
    """

    def __init__(self, model: Declaration, parents: tuple[str, ...], table: torch.Tensor) -> None:
        self.parents = parents
        self.table = table
        # Read as log-probabilities: Categorical(probs=...) clamps a zero to float eps, so
        # impossible states would get log-probability ~ -16 (float32) instead of -inf.
        self._logits = _Cast(model, lambda: self.table)

    def log_table(self) -> torch.Tensor:
        """log P(node | parents), shape (*parent cards, K), on the model's device and dtype."""
        return self._logits()

    def set_table(self, table: torch.Tensor) -> None:
        """Replace the probabilities (EM re-estimates CPTs in place, as SVI updates params in
        the param store); same shape, rows on the simplex."""
        new = torch.as_tensor(table).detach().to(device="cpu", dtype=torch.float64).clone()
        if new.shape != self.table.shape:
            raise ModelError(f"new CPT table has shape {tuple(new.shape)}, expected "
                             f"{tuple(self.table.shape)}.")
        if (new < 0).any() or not torch.allclose(new.sum(-1), torch.ones((), dtype=new.dtype),
                                                 atol=1e-6):
            raise ModelError("new CPT table rows must be probability vectors.")
        self.table = new

    def __call__(self, **values: torch.Tensor) -> dist.Distribution:
        logits = self._logits()
        if self.parents:
            index = tuple(values[p] for p in self.parents)
            logits = Vindex(logits)[(..., *index, slice(None))]
        return dist.Categorical(logits=logits)


_SCALAR = torch.Size()


class CountingMeasure(dist.TorchDistribution):
    """The improper counting measure on ``{0, ..., K-1}``: log density 0 everywhere.

    Undirected variables take their whole distribution from factors; this base measure lets
    them be Pyro sample sites that enumerate like any categorical, without adding ``-log K``.
    """

    arg_constraints: dict = {}  # noqa: RUF012 (torch's own convention)
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        self.logits = logits
        super().__init__(logits.shape[:-1], torch.Size(), validate_args=validate_args)

    @property
    def support(self) -> Any:
        return dist.constraints.integer_interval(0, self.logits.shape[-1] - 1)

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> CountingMeasure:
        batch_shape = torch.Size(batch_shape)
        return CountingMeasure(self.logits.expand(batch_shape + self.logits.shape[-1:]))

    def sample(self, sample_shape: torch.Size = _SCALAR) -> torch.Tensor:
        # Sampling from the base measure means uniformly: engines that sample undirected
        # variables (prior draws, Gibbs initialisation) start from here.
        return dist.Categorical(logits=self.logits).sample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        return torch.zeros(shape, dtype=self.logits.dtype, device=self.logits.device)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        return dist.Categorical(logits=self.logits).enumerate_support(expand)


def uniform_factory(model: Declaration, cardinality: int) -> Callable[[], dist.Distribution]:
    """Factory for a counting-measure variable with ``cardinality`` states."""
    def factory() -> dist.Distribution:
        return CountingMeasure(torch.zeros(cardinality, device=model.device, dtype=model.dtype))

    return factory

"""A model as the structured contraction reads it: log tables grouped by the plates they lie
in, chains as blocks of per-step tables, and the latents they range over -- no DSL, so that
any front end (the DSL's tabulation, a hand-built factor graph) can hand one over.

Table layout: batch axes first, then one axis per variable. The batch axes are, in order,
the chain's time axis (chain tables only), then one axis per plate of the model (outermost
first; size 1 where the table is not in that plate); models without plates or chains may
instead have extra leading axes: evidence cases, answered together. A chain variable read
at the previous step is named with the suffix ``PREV``.

A *nested* plate (``Nesting``: a document's words, each document with its own number) has
one axis of its own holding every entry's copies one after the other; a table in it lies
along that axis, with its enclosing plate's axis of size 1, and reads the enclosing plate's
variables at each copy's entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from genppl.exact.contract import Factor

PREV = "@prev"  # suffix of a chain variable read at the previous step (no identifier has it)


@dataclass
class Variable:
    """A latent's support and where it repeats (its plates and chain)."""

    node: str
    states: torch.Tensor
    plates: tuple[str, ...]
    chain: str | None


@dataclass(frozen=True)
class MaskedFactor(Factor):
    """A table of a masked distribution (``d.mask(m)``): log-probabilities where ``mask``
    holds, log 1 elsewhere. Kept apart from its mask so that a chain can skip masked steps
    (padding of shorter sequences) instead of materialising a transition table per step and
    sequence; everywhere else it is materialised."""

    mask: torch.Tensor

    def materialise(self) -> Factor:
        return Factor(self.vars, torch.where(self.mask, self.log_table,
                                             self.log_table.new_zeros(())))


def plain(f: Factor) -> Factor:
    """``f`` with any mask applied."""
    return f.materialise() if isinstance(f, MaskedFactor) else f


@dataclass
class ChainBlock:
    """A chain's factors, time axis first, in execution order (``reverse`` chains flipped).

    ``first`` holds the tables of the first executed step (time axis of size 1), ``rest``
    those of the later steps (time axis ``length - 1``, or 1 when the same at every step).
    """

    name: str
    length: int
    plates: tuple[str, ...]
    reverse: bool
    first: list[Factor] = field(default_factory=list)
    rest: list[Factor] = field(default_factory=list)


@dataclass(frozen=True)
class Nesting:
    """A plate nested in ``parent`` with a number of copies per entry of it (a ragged plate:
    each document its own number of words). ``entries[i]`` is the parent's entry of copy
    ``i``; copies of one entry are consecutive. A table in the nested plate lies in both
    plates (its plate set holds the two) but only along the nested plate's axis."""

    parent: str
    entries: torch.Tensor


@dataclass
class FactorModel:
    """The factors of a model under given data.

    ``factors`` pairs each non-chain table with its plate set; ``batch`` is the shape of the
    batch axes of non-chain tables (plate sizes, or evidence cases for plate-free models);
    ``nested`` the nested plates by name.
    """

    factors: list[tuple[frozenset[str], Factor]]
    chains: list[ChainBlock]
    variables: dict[str, Variable]
    plates: tuple[str, ...]
    sizes: dict[str, int]
    latents: list[str]
    nested: dict[str, Nesting] = field(default_factory=dict)

    def along(self, plates: Iterable[str]) -> tuple[str, ...]:
        """The plates, in the model's order, along whose axes a table in ``plates`` lies:
        all of them but the enclosing plate of a nested plate among them (its entries'
        copies lie along the nested plate's axis)."""
        inside = set(plates)
        enclosing = {n.parent for p, n in self.nested.items() if p in inside}
        return tuple(p for p in self.plates if p in inside and p not in enclosing)

    def plate_shape(self, plates: Iterable[str]) -> tuple[int, ...]:
        """The plate axes of a table in ``plates``: each plate's size where it lies along
        it (``along``), 1 elsewhere."""
        along = self.along(plates)
        return tuple(self.sizes[p] if p in along else 1 for p in self.plates)

    def cases(self) -> tuple[int, ...]:
        """Plate-free models: the broadcast batch shape of the tables (evidence cases)."""
        if self.plates:
            return ()
        return tuple(torch.broadcast_shapes(*(f.batch_shape for _, f in self.factors)))

    def leaf_shape(self, name: str, cases: tuple[int, ...]) -> tuple[int, ...]:
        """A latent's batch shape: evidence ``cases`` in plate-free models, else its
        chain's time axis (in the order the chain runs) and the model's plates (size 1
        where it is not in one)."""
        var = self.variables[name]
        if not self.plates and var.chain is None:
            return cases
        plates = self.plate_shape(var.plates)
        if var.chain is None:
            return plates
        length = next(b.length for b in self.chains if b.name == var.chain)
        return (length, *plates)

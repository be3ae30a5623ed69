"""What a tabulation records about each node table it makes, for the engines that read more
than the tables: EM (expected sufficient statistics as gradients of log Z), CAVI and
collapsed Gibbs (tables replaced by expected or collapsed ones)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.distributions.torch_distribution import MaskedDistribution

from genppl.dsl.nodes import Node, Parent
from genppl.errors import ModelError
from genppl.exact.contract import Factor
from genppl.exact.factors import FactorModel

#: A factor as it was placed in a ``FactorModel``, with ``(chain, first step, number of
#: steps)`` its time axis stands for when it is a chain's (None otherwise).
Placed = tuple[Factor, tuple[str, int, int] | None]


@dataclass
class Use:
    """One tabulated node table, kept for EM: the distribution the factory returned and the
    arguments it got (to probe which params it reads), and ``table``, the log table before
    broadcasting, whose gradient of log Z is the node's family marginal (for an observed
    node: the posterior of its parents' states, per data entry; ``value`` is its data)."""

    node: Node
    fn: Any
    args: dict[str, Any]
    distribution: Any
    table: torch.Tensor
    value: torch.Tensor | None
    #: Where the table went: the factors made of it (masked, broadcast, a chain's steps
    #: split), each with the chain steps it stands for (see ``Placed``).
    placed: list[Placed] = field(default_factory=list)

    @property
    def parents(self) -> tuple[Parent, ...]:
        """The parents the factory ``fn`` reads (a chain's first step has its own)."""
        node = self.node
        first = self.fn is node.init_fn and node.init_fn is not None
        return node.init_parents if first else node.parents

    @property
    def base(self) -> Any:
        """The distribution the factory returned, under any ``.mask(...)``."""
        d = self.distribution
        return d.base_dist if isinstance(d, MaskedDistribution) else d


@dataclass
class TabulatedModel(FactorModel):
    """A model's factors as tabulated, with ``uses``: each tracked node table and what
    made it (``track=True``; empty otherwise)."""

    uses: list[Use] = field(default_factory=list)


#: A replacement of tracked tables (CAVI puts expected log-probabilities in place of the
#: factories' ones): called with each tracked ``Use``, it returns the table to use instead,
#: of the same shape, or None to keep the factory's. When ``Tabulation`` replays a table
#: that was replaced at the previous call, it does not call the factory again (its values
#: would be thrown away): the callback gets the recorded call's ``Use`` (its arguments and
#: distribution, and the table it returned last) and the recorded mask is kept.
Retable = Callable[[Use], "torch.Tensor | None"]


def retabled(use: Use, retable: Retable | None) -> bool:
    """Put ``retable``'s table, if it gives one, in ``use`` as the tracked leaf; whether it
    did (a replaced table is not a normalised child table)."""
    new = None if retable is None else retable(use)
    if new is not None and new.shape != use.table.shape:
        raise ModelError(f"node {use.node.name!r} ({use.node.declared_at}): a replacement "
                         f"table has shape {tuple(new.shape)}, the tabulation's "
                         f"{tuple(use.table.shape)}.")
    use.table = (use.table if new is None else new).detach().requires_grad_()
    return new is not None

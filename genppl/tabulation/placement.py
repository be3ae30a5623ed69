"""Where a node's table goes in a ``FactorModel``: among the global tables with its plate
set, or into a chain's block (its first step, its later steps, or split between them)."""

from __future__ import annotations

from genppl.dsl.nodes import Node
from genppl.exact.contract import Factor
from genppl.exact.factors import ChainBlock, plain
from genppl.tabulation.uses import Placed

#: Where a table goes: ``("global", None)``, or ``("first" | "rest" | "split", chain)``.
Target = tuple[str, "str | None"]
GLOBAL: Target = ("global", None)


def put(factors: list[tuple[frozenset[str], Factor]], chains: dict[str, ChainBlock],
        target: Target, node: Node, f: Factor) -> list[Placed]:
    """Add a node's table where it goes: a global table with its plate set; a chain's first
    step or later steps; ``split``: one table for all steps of a chain, whose first step is
    cut off (the rest stay one table when it is the same at every step). Returns the
    factors added, with the steps they stand for."""
    where, chain = target
    if where == "global":
        factors.append((frozenset(node.plates), plain(f)))
        return [(factors[-1][1], None)]
    block = chains[chain]  # type: ignore[index]
    if where == "first":
        block.first.append(plain(f))
        return [(block.first[-1], (block.name, 0, 1))]
    if where == "rest":
        block.rest.append(f)
        return [(f, (block.name, 1, block.length - 1))]
    f = plain(f)
    t = f.log_table
    block.first.append(Factor(f.vars, t[:1]))
    placed: list[Placed] = [(block.first[-1], (block.name, 0, 1))]
    if block.length > 1:
        block.rest.append(Factor(f.vars, t[1:] if t.shape[0] > 1 else t))
        placed.append((block.rest[-1], (block.name, 1, block.length - 1)))
    return placed

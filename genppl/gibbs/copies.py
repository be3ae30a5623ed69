"""Many copies of a one-case factor graph as one graph with one flat state, for code that
wants every copy's state in one tensor (the reference conditionals, benchmarks); the ``cd``
engine keeps its copies as a batch axis of the one-case state instead."""

from __future__ import annotations

import torch

from genppl.gibbs.grounding import Block, FactorGraph, FactorGroup, Replica


class Copies:
    """``copies`` independent copies of a one-case factor graph as one graph, for code
    that wants one flat state of every copy (the ``cd`` engine itself keeps the copies as a
    batch axis of the one-case state instead).

    Copy ``r`` of instance ``i`` of a block at ``offset`` with ``size`` instances gets id
    ``offset * copies + r * size + (i - offset)``: each block stays contiguous, laid out as
    ``(copies, *shape)``, so clamping a block's data and reading its values are slices. The
    colours are the one-case colours taken in every copy (copies share no factor)."""

    def __init__(self, graph: FactorGraph, colours: list[torch.Tensor], copies: int) -> None:
        device = graph.padding.device
        ids = torch.empty(copies, graph.size, dtype=torch.long, device=device)
        replica = torch.arange(copies, device=device)[:, None]
        self.blocks: dict[str, Block] = {}
        for b in graph.blocks.values():
            local = torch.arange(b.size, device=device)[None, :]
            ids[:, b.offset:b.offset + b.size] = b.offset * copies + replica * b.size + local
            self.blocks[b.name] = Block(b.name, b.offset * copies, (copies, *b.shape),
                                        b.states, b.chain)
        self.copies = copies
        self.layout = ids
        self.index = [ids[:, g.index].reshape(-1, g.arity) for g in graph.groups]
        self.padding = graph.padding.new_empty(copies * graph.size, graph.states)
        self.padding[ids.reshape(-1)] = graph.padding.repeat(copies, 1)
        self.colours = [ids[:, c].reshape(-1).sort().values for c in colours]

    def graph(self, one: FactorGraph) -> FactorGraph:
        """The copies of ``one`` (a grounding of the same model: same instances and factor
        order), tables detached. Its factor rows are materialised for the reference
        (``conditionals``, ``log_joint``); the kernel's updates read ``one``'s rows through
        ``replica``, the copies as a batch axis."""
        tables = [g.tables.detach() for g in one.groups]
        groups = tuple(FactorGroup(t.repeat(self.copies, *(1,) * g.arity), index)
                       for t, g, index in zip(tables, one.groups, self.index, strict=True))
        return FactorGraph(self.blocks, groups, self.padding,
                           replica=Replica(one.with_tables(tables), self.layout))


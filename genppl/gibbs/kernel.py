"""Gibbs sampling on a grounded factor graph, as a kernel for ``pyro.infer.MCMC``.

Pyro's MCMC has HMC, NUTS and random-walk kernels only; this kernel fills the gap for
finite-support latents. One ``sample`` call is one sweep: the instances are split into
*colours* (a proper colouring of the interaction graph, so that no two instances of a colour
share a factor); all instances of a colour are conditionally independent given the rest and
are drawn together from their full conditionals. A checkerboard is the two-colouring of a
grid, a bipartite RBM the two-colouring of its layers; ``schedule="sequential"`` gives every
instance its own colour (single-site Gibbs in a fixed scan, the textbook reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from genppl.errors import ModelError
from genppl.gibbs.grounding import FactorGraph


def colouring(graph: FactorGraph, schedule: str = "chromatic") -> list[torch.Tensor]:
    """The instance ids of each colour, in update order."""
    device = graph.padding.device
    if schedule == "sequential":
        return [torch.tensor([i], device=device) for i in range(graph.size)]
    if schedule != "chromatic":
        raise ModelError(f"engine 'gibbs': schedule must be 'chromatic' or 'sequential', got "
                         f"{schedule!r}.")
    g = nx.Graph()
    g.add_nodes_from(range(graph.size))
    g.add_edges_from(graph.neighbours())
    colour = nx.greedy_color(g, strategy="largest_first")
    groups: dict[int, list[int]] = {}
    for node, c in colour.items():
        groups.setdefault(c, []).append(node)
    return [torch.tensor(sorted(ids), device=device) for _, ids in sorted(groups.items())]


def draw(logits: torch.Tensor) -> torch.Tensor:
    """One state per row, with probabilities softmax(logits) (Gumbel-max)."""
    u = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny)
    return (logits - (-u.log()).log()).argmax(-1)


def sweep(graph: FactorGraph, colours: list[torch.Tensor], state: torch.Tensor
          ) -> torch.Tensor:
    """One Gibbs sweep: each colour in turn drawn from its full conditionals."""
    state = state.clone()
    for update in updates(graph, colours):
        state[update.ids] = draw(update.logits(state))
    return state


@dataclass(frozen=True)
class _Part:
    """The factor rows that have an instance of the colour at one position: their tables
    flattened, the instances and strides of their other positions, the stride of this one,
    and which of the colour's instances each row adds to."""

    tables: torch.Tensor  # (F', K ** arity)
    others: tuple[tuple[torch.Tensor, int], ...]
    stride: int
    target: torch.Tensor  # (F',)


@dataclass(frozen=True)
class ColourUpdate:
    """One colour's full conditionals, reading only the factor rows that touch it: a
    constant part (padding and one-variable factors, summed once) and, per position of the
    larger factors, one gather of the rows at the current states of their other instances.
    ``FactorGraph.conditionals`` is the reference it is tested against."""

    ids: torch.Tensor  # (C,)
    base: torch.Tensor  # (C, K)
    parts: tuple[_Part, ...]

    def logits(self, state: torch.Tensor) -> torch.Tensor:
        out = self.base.clone()
        steps = torch.arange(out.shape[1], device=state.device)
        for part in self.parts:
            offset = sum(state[ids] * stride for ids, stride in part.others)
            index = offset[:, None] + steps * part.stride  # type: ignore[union-attr]
            out.index_add_(0, part.target, part.tables.gather(1, index))
        return out


def updates(graph: FactorGraph, colours: list[torch.Tensor]) -> list[ColourUpdate]:
    """The colours' updates, built once per graph and colour list and kept with the graph."""
    memo = graph.__dict__.get("_updates")
    if memo is None or memo[0] is not colours:
        memo = (colours, [_update(graph, ids) for ids in colours])
        object.__setattr__(graph, "_updates", memo)  # a cache, not a dataclass field
    return memo[1]


def _update(graph: FactorGraph, ids: torch.Tensor) -> ColourUpdate:
    local = torch.full((graph.size,), -1, dtype=torch.long, device=ids.device)
    local[ids] = torch.arange(len(ids), device=ids.device)
    base = graph.padding[ids].clone()
    parts = []
    k = graph.states
    for group in graph.groups:
        arity = group.arity
        flat = group.tables.reshape(len(group.tables), -1)
        strides = [k ** (arity - 1 - j) for j in range(arity)]
        for p in range(arity):
            rows = (local[group.index[:, p]] >= 0).nonzero().squeeze(1)
            if not len(rows):
                continue
            target = local[group.index[rows, p]]
            if arity == 1:  # no other instance: the same at every step
                base.index_add_(0, target, flat[rows])
                continue
            others = tuple((group.index[rows, j], strides[j]) for j in range(arity) if j != p)
            parts.append(_Part(flat[rows], others, strides[p], target))
    return ColourUpdate(ids, base, tuple(parts))


class GibbsKernel(MCMCKernel):
    """One Gibbs sweep per step (``step``: a state to the next, e.g. ``sweep`` over the
    colours, then any blocks drawn jointly); the state is the single parameter
    ``"state"``, a ``(V,)`` tensor of instance state indices."""

    #: For ``MCMC``: the state is unconstrained already, and there is no Pyro model.
    transforms: dict[str, Any] = {}  # noqa: RUF012 (Pyro reads it as a class attribute)
    model = None

    def __init__(self, step: Callable[[torch.Tensor], torch.Tensor], init: torch.Tensor
                 ) -> None:
        self.step = step
        self._initial = {"state": init}

    @property
    def initial_params(self) -> dict[str, torch.Tensor]:
        return self._initial

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        self._initial = params

    def sample(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"state": self.step(params["state"])}

    def state_dict(self) -> dict[str, Any]:
        """Nothing beyond the parameters: a checkpoint of the state resumes the chain."""
        return {}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Nothing to restore (see ``state_dict``)."""


def starting_state(graph: FactorGraph, step: Callable[[torch.Tensor], torch.Tensor],
                   tries: int = 10) -> torch.Tensor:
    """A joint state of positive probability: from all-zero states, one ``step`` drawing
    each colour from its conditional given what is set so far, retried until the joint is
    possible (evidence and zeros in tables can rule out most states)."""
    for _ in range(tries):
        state = step(torch.zeros(graph.size, dtype=torch.long, device=graph.padding.device))
        if bool(torch.isfinite(graph.log_joint(state))):
            return state
    raise ModelError("engine 'gibbs' found no starting state of positive probability in "
                     f"{tries} tries; pass init={{latent: value}} with a possible state.")

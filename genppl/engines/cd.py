"""``genppl.fit(model, data, engine="cd")``: contrastive divergence (Hinton 2002) and
persistent contrastive divergence (Tieleman 2008).

For a model whose law is a product of potentials over finite variables -- a Boltzmann
machine, an RBM, an MRF with learnable potentials -- write ``E(x)`` for the sum of its
log-potentials at a joint state ``x = (v, h)``, ``v`` the variables the data name. The
gradient of the log-likelihood of one case is

    d/dθ log p(v) = E_{h ~ p(h | v)}[dE(v, h)/dθ] - E_{x ~ p(x)}[dE(x)/dθ],

and ``log Z``, which the second term differentiates, is intractable beyond toy sizes. Both
terms are estimated by Gibbs sampling on the model's grounding (``genppl.gibbs``): the
*positive phase* clamps the data's variables and draws the others given them, the *negative
phase* runs ``k`` sweeps of the whole graph from the positive states (CD-k) or from chains
kept between steps (PCD). The update is autograd of the minibatch mean of
``E(positive state) - E(negative state)`` in the params, so any differentiable potential
works: nothing here knows what an RBM is.

Cases: the model is declared for one case (an RBM over one image). Each data entry has a
leading axis of cases, then the node's own layout (time axis for a chain, then its plates).
A minibatch of B cases is B copies of the one-case grounding side by side (``Copies``): its
index structure and colouring are built once, and each step re-tabulates the one-case model
(tables differentiable in the params, a few milliseconds for a plate-declared RBM) and
repeats its tables B times.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyro
import torch

from genppl.dsl.model import Model
from genppl.engines.common import param_values, progress_bar, seed_everything
from genppl.engines.registry import register
from genppl.errors import ModelError, suggest
from genppl.exact.from_model import FactorModel, model_factors
from genppl.gibbs.grounding import Block, FactorGraph, FactorGroup, ground
from genppl.gibbs.kernel import ColourUpdate, colouring, draw, updates
from genppl.pyro.program import as_data
from genppl.results import FitResult

#: ``callback(step, params)`` after each update, with the current (constrained) params.
Callback = Callable[[int, dict[str, torch.Tensor]], None]


class Copies:
    """``copies`` independent copies of a one-case factor graph as one graph.

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
        self.index = [ids[:, g.index].reshape(-1, g.arity) for g in graph.groups]
        self.padding = graph.padding.new_empty(copies * graph.size, graph.states)
        self.padding[ids.reshape(-1)] = graph.padding.repeat(copies, 1)
        self.colours = [ids[:, c].reshape(-1).sort().values for c in colours]

    def graph(self, one: FactorGraph) -> FactorGraph:
        """The copies of ``one`` (a re-grounding of the same model: same instances and
        factor order), for sampling: tables detached."""
        groups = tuple(FactorGroup(g.tables.detach().repeat(self.copies, *(1,) * g.arity),
                                   index)
                       for g, index in zip(one.groups, self.index, strict=True))
        return FactorGraph(self.blocks, groups, self.padding)

    def counts(self, one: FactorGraph, state: torch.Tensor) -> list[torch.Tensor]:
        """How many copies sit in each cell of each one-case factor row at ``state``:
        ``(F, K ** arity)`` per group. The log joint summed over the copies is
        ``sum(counts * tables)``, so the gradient flows through the one-case tables only,
        not through a gather per copy."""
        k = self.padding.shape[1]
        out = []
        for g, index in zip(one.groups, self.index, strict=True):
            cell = sum(state[index[:, j]] * k ** (g.arity - 1 - j) for j in range(g.arity))
            rows = torch.arange(len(index), device=state.device) % len(g.tables)
            flat = rows * k ** g.arity + cell  # type: ignore[operator]
            out.append(torch.bincount(flat, minlength=len(g.tables) * k ** g.arity)
                       .reshape(len(g.tables), -1))
        return out


def fit(model: Model, data: dict[str, Any] | None = None, *, k: int = 1,
        persistent: bool = False, steps: int = 1000, lr: float = 0.05, momentum: float = 0.0,
        batch_size: int = 100, positive_sweeps: int = 1, learn: Sequence[str] | None = None,
        init: dict[str, Any] | None = None, seed: int | None = None, progress: bool = True,
        callback: Callback | None = None) -> FitResult:
    """``steps`` updates of SGD (``lr``, ``momentum``) on minibatches of ``batch_size``
    cases, drawn without replacement epoch by epoch.

    The positive phase makes ``positive_sweeps`` sweeps over the unclamped instances; one
    is an exact draw when they are conditionally independent given the data (an RBM's
    hidden layer). The negative phase makes ``k`` sweeps, updating the colours holding data
    first, so that CD-1 on an RBM is the textbook v -> h -> v' -> h'. ``persistent=True``
    keeps ``batch_size`` negative chains across steps (PCD). ``learn`` names the params to
    fit (default: all); ``init`` gives starting values of params (default: their declared
    ones). Params live in a param store of their own for the run; the fitted values come
    back in ``FitResult.params``, the last negative states (the "fantasy particles") in
    ``info["negative"]``. ``losses`` are the surrogate ``-(E(positive) - E(negative))``
    per case, whose gradient is the CD estimate; it is not the log-likelihood."""
    for name, value in (("k", k), ("steps", steps), ("batch_size", batch_size),
                        ("positive_sweeps", positive_sweeps)):
        if not isinstance(value, int) or value < 1:
            raise ModelError(f"engine 'cd': {name} must be an int >= 1, got {value!r}.")
    if not lr > 0 or not 0 <= momentum < 1:
        raise ModelError(f"engine 'cd': lr must be > 0 and momentum in [0, 1), got lr={lr}, "
                         f"momentum={momentum}.")
    start = time.perf_counter()
    _check_undirected(model)
    seed_everything(seed)
    with param_values(model, init):
        fm = model_factors(model, {}, grad=True)
        one = ground(fm)
        cases = _cases(model, fm, one, data)
        names = _learned(model, learn)
        count = next(iter(cases.values())).shape[0]
        copies = Copies(one, colouring(one), min(batch_size, count))
        clamped = torch.zeros(len(copies.padding), dtype=torch.bool, device=one.padding.device)
        for name in cases:
            b = copies.blocks[name]
            clamped[b.offset:b.offset + b.size] = True
        # Each colour split into its clamped and free instances (subsets of a colour are
        # colours), the clamped ones first: a negative sweep then starts where the data are
        # and ends with every free instance drawn given the new values. One colour list
        # serves both phases, so the kernel builds its updates once per step.
        parts = [(ids[clamped[ids]], ids[~clamped[ids]]) for ids in copies.colours]
        colours = [ids for part in zip(*parts, strict=True) for ids in part if len(ids)]
        positive = [not bool(clamped[ids[0]]) for ids in colours]
        leaves = [pyro.param(n).unconstrained() for n in names]
        optimiser = torch.optim.SGD(leaves, lr=lr, momentum=momentum)
        state = torch.zeros(len(copies.padding), dtype=torch.long, device=clamped.device)
        chains: torch.Tensor | None = None
        losses: list[float] = []
        batches = _minibatches(count, copies.copies, clamped.device)
        bar = progress_bar(range(steps), total=steps, desc=f"cd {model.name}",
                           enabled=progress)
        for step in bar:
            if step:  # step 0 reuses the grounding made to set up
                one = ground(model_factors(model, {}, grad=True))
            graph = copies.graph(one)
            batch = next(batches)
            with torch.no_grad():
                for name, values in cases.items():
                    b = copies.blocks[name]
                    state[b.offset:b.offset + b.size] = values[batch].reshape(-1)
                steps_of = updates(graph, colours)
                free = [u for u, p in zip(steps_of, positive, strict=True) if p]
                for _ in range(positive_sweeps):
                    state = _sweep(free, state)
                negative = state if chains is None else chains
                for _ in range(k):
                    negative = _sweep(steps_of, negative)
                if persistent:
                    chains = negative
                visits = [(p - n).to(one.padding.dtype) for p, n in zip(
                    copies.counts(one, state), copies.counts(one, negative), strict=True)]
            # Cells no copy visits may hold -inf (padding, impossible states): left out.
            gap = sum(torch.where(c != 0, c * g.tables.reshape(len(c), -1), 0).sum()
                      for c, g in zip(visits, one.groups, strict=True)) / copies.copies
            optimiser.zero_grad()
            (-gap).backward()
            optimiser.step()
            losses.append(-float(gap.detach()))
            if not math.isfinite(losses[-1]):
                raise ModelError(f"engine 'cd': the surrogate became {losses[-1]} at step "
                                 f"{step}; a potential is -inf at a sampled state or lr={lr} "
                                 "is too large.")
            if callback is not None:
                callback(step, {n: pyro.param(n).detach() for n in names})
        params = {n: pyro.param(n).detach().clone() for n in model.names("param")}
    return FitResult(model.name, "cd", params, losses, time.perf_counter() - start,
                     info={"k": k, "persistent": persistent, "batch_size": copies.copies,
                           "colours": len(colours), "cases": count,
                           "negative": graph.values(negative)})


def _sweep(steps: list[ColourUpdate], state: torch.Tensor) -> torch.Tensor:
    """``kernel.sweep`` over prebuilt colour updates (a subset of them for the positive
    phase)."""
    state = state.clone()
    for update in steps:
        state[update.ids] = draw(update.logits(state))
    return state


def _check_undirected(model: Model) -> None:
    for node in model.nodes.values():
        if node.kind in ("observed", "input"):
            raise ModelError(
                f"engine 'cd': {node.kind} node {node.name!r} ({node.declared_at}) -- CD fits "
                "models whose law is a product of potentials over finite variables, with the "
                f"data as values of some of them. Declare {node.name!r} with m.variable(...) "
                "and factors on it, and pass its values as data.")


def _learned(model: Model, learn: Sequence[str] | None) -> list[str]:
    params = model.names("param")
    if not params:
        raise ModelError(f"engine 'cd': model {model.name!r} has no params to fit; declare "
                         "the potentials' weights with m.param(...).")
    for name in learn or ():
        if name not in params:
            raise ModelError(f"engine 'cd': learn= names {name!r}, which is not a param of "
                             f"{model.name!r}." + suggest(name, params))
    return list(learn) if learn is not None else params


def _cases(model: Model, fm: FactorModel, graph: FactorGraph, data: dict[str, Any] | None
           ) -> dict[str, torch.Tensor]:
    """Each data entry as state indices ``(cases, instances)``, checked."""
    if not data:
        raise ModelError(f"engine 'cd' needs data: values of some variables of {model.name!r} "
                         f"({sorted(graph.blocks)}), one case per entry of a leading axis.")
    out: dict[str, torch.Tensor] = {}
    for name, value in data.items():
        block = graph.blocks.get(name)
        if block is None:
            raise ModelError(f"engine 'cd': data names {name!r}, which is not a finite variable "
                             f"of {model.name!r}." + suggest(name, graph.blocks))
        value = as_data(model, name, value)
        layout = block.layout
        if value.dim() != 1 + len(layout) or tuple(value.shape[1:]) != layout:
            raise ModelError(f"engine 'cd': data for {name!r} has shape {tuple(value.shape)}; "
                             f"it needs (cases, {', '.join(map(str, layout))}): a leading axis "
                             "of cases, then the node's time axis and plates.")
        match = value.reshape(len(value), -1, 1) == block.states.to(value.dtype)
        if not bool(match.any(-1).all()):
            raise ModelError(f"engine 'cd': data for {name!r} has values outside its states "
                             f"{block.states.tolist()}.")
        out[name] = match.long().argmax(-1)
    counts = {len(v) for v in out.values()}
    if len(counts) > 1:
        raise ModelError(f"engine 'cd': the data entries have different numbers of cases "
                         f"{ {n: len(v) for n, v in out.items()} }; give every case of each.")
    return out


def _minibatches(count: int, size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Case indices, ``size`` at a time, epoch after epoch (a fresh permutation each;
    a last partial batch is left out)."""
    while True:
        order = torch.randperm(count, device=device)
        for first in range(0, count - size + 1, size):
            yield order[first:first + size]


register("cd", "contrastive divergence (CD-k) and persistent CD for models built from "
         "potentials over finite variables (RBMs, Boltzmann machines, MRFs): Gibbs positive "
         "and negative phases on the grounded model, gradients by autograd", fit=fit)

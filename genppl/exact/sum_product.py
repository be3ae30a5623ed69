"""log Z of a tabulated model with plates and chains, in one differentiable contraction.

The contraction follows the model's structure instead of unrolling it:

- each **chain** first eliminates its step-local variables (those of plates declared
  inside the chain per entry, then the product over the entries), then multiplies its
  per-step transition tables along the time axis (``genppl.exact.scan``: linear work, or
  log-depth on request), leaving one table over the variables outside the chain it reads;
- **plates** are processed from the innermost plate set out: variables local to a plate set
  are eliminated with every plate entry as a batch index, then the plate is a product
  (a sum of log tables over its axis), and the result joins the enclosing plate set.

This is exact whenever plates nest as a tree, which every DSL model satisfies except when
one table reads variables of two sibling plates (then an error says so). The ring
(``genppl.exact.rings``) picks the query: ``MAX`` swaps sum for max (the max-product
semiring); ``SAMPLE`` keeps the sum but makes the backward pass draw an exact joint
posterior sample. Because the result is differentiable, its gradient with respect to a zero
table over one variable is that variable's marginal (sum)
or the indicator of its state in one most probable joint assignment (max: every max routes
its gradient to one maximiser, so the backward pass backtracks consistently through ties):
one backward pass answers every query.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch

from genppl.budget import memory_budget, refuse_over
from genppl.errors import ModelError
from genppl.exact.broadcasting import compact
from genppl.exact.contract import Factor, aligned, cardinalities, eliminate, partial_plan
from genppl.exact.factors import PREV, ChainBlock, FactorModel, MaskedFactor, plain
from genppl.exact.rings import SUM, Ring
from genppl.exact.scan import chain_product


def contract(fm: FactorModel, *, ring: Ring = SUM,
             leaves: Mapping[str, torch.Tensor] | None = None,
             chain_method: str = "auto", budget_bytes: int | None = None,
             per: str | None = None) -> torch.Tensor:
    """log Z (the max log joint for ``MAX``) with the evidence-case shape (``()`` with
    plates).

    ``leaves`` maps a variable to an extra table over it alone, laid out like its node's
    tables (time axis first for chain variables); pass zeros and differentiate to get
    marginals. Each elimination is checked against ``budget_bytes`` before it allocates.
    ``per`` names a plate whose entries are independent given the params (every table lies
    inside it): the result then has one log Z per entry, shape ``(size,)``.
    """
    budget_bytes = memory_budget(budget_bytes)
    if per is not None:
        _check_per(fm, per)
    leaves = dict(leaves or {})
    pending: dict[frozenset[str], list[Factor]] = defaultdict(list)
    for plates, f in fm.factors:
        pending[plates].append(f)
    for name, leaf in leaves.items():
        var = fm.variables[name]
        if var.chain is None:
            pending[frozenset(var.plates)].append(Factor((name,), leaf))
    for block in fm.chains:
        own = {n: leaves[n] for n, v in fm.variables.items() if v.chain == block.name
               and n in leaves}
        f = _eliminate_chain(block, fm, own, ring, chain_method, budget_bytes)
        pending[frozenset(block.plates)].append(f)
    top = _eliminate_plates(pending, _var_plates(fm), frozenset(), ring, budget_bytes, fm,
                            per)
    local = {v for f in top for v in f.vars}
    _check_budget(top, local, budget_bytes, "the variables outside plates")
    log_z = sum(f.log_table for f in eliminate(top, local, ring=ring))
    if per is not None:
        return log_z.reshape(-1)
    return log_z.reshape(log_z.shape[len(fm.plates):]) if fm.plates else log_z


def _var_plates(fm: FactorModel) -> dict[str, frozenset[str]]:
    """Each variable's plate set, under its own name and its previous step's."""
    return {n + lag: frozenset(v.plates) for n, v in fm.variables.items() for lag in ("", PREV)}


def _eliminate_plates(pending: dict[frozenset[str], list[Factor]],
                      var_plates: Mapping[str, frozenset[str]], floor: frozenset[str],
                      ring: Ring, budget_bytes: int, fm: FactorModel,
                      per: str | None = None) -> list[Factor]:
    """Eliminate every plate set of ``pending`` (tables by the plate set they lie in) above
    ``floor``, innermost first: the variables local to a plate set with every plate entry
    as a batch index, then the product over the plates the results no longer need (not
    ``per``), the results joining the plate set they read. Returns the tables that reach
    ``floor``, its own variables left for the caller: the whole model stops at the empty
    set, a chain's step at the chain's plates."""
    while (plates := max(pending, key=len, default=floor)) != floor:
        factors = pending.pop(plates)
        local = {v for f in factors for v in f.vars if var_plates[v] == plates}
        _check_budget(factors, local, budget_bytes, f"plates {sorted(plates)}")
        for f in eliminate(factors, local, ring=ring):
            target = floor.union(*(var_plates[v] for v in f.vars))
            if target == plates:
                raise ModelError(f"a table couples variables {f.vars} of sibling plates inside "
                                 f"{sorted(plates)}; engine 'exact' needs plates that nest as a "
                                 "tree. Use engine='gibbs' or 'svi'.")
            pending[target].append(_product_over(f, plates - target - {per}, fm))
    return pending.pop(floor, [])


def _check_per(fm: FactorModel, per: str) -> None:
    """Per-entry log evidence exists only when nothing couples the entries of ``per``."""
    if per not in fm.plates:
        raise ModelError(f"evidence_per={per!r} is not a plate of the model; plates: "
                         f"{list(fm.plates)}.")
    outside = [f.vars or "a table without latents" for plates, f in fm.factors
               if per not in plates]
    outside += [b.name for b in fm.chains if per not in b.plates]
    if outside:
        raise ModelError(f"evidence_per={per!r}: {outside[0]!r} lies outside plate {per!r}, "
                         "so it couples the plate's entries and they have no separate log "
                         "evidence; ask for the total instead.")


def _product_over(f: Factor, plates: frozenset[str], fm: FactorModel) -> Factor:
    """The product over plate entries: a sum of log tables over those plates' axes -- into
    each entry's own row for a nested plate whose enclosing plate stays (a document's words
    multiply into the document's table)."""
    into = {p: n for p, n in fm.nested.items() if p in plates and n.parent not in plates}
    offset = len(f.batch_shape) - len(fm.plates)
    axes = [offset + i for i, p in enumerate(fm.plates) if p in plates and p not in into]
    table = f.log_table.sum(axes, keepdim=True) if axes else f.log_table
    for plate, nesting in into.items():
        table = _into_entries(table, offset + fm.plates.index(nesting.parent),
                              offset + fm.plates.index(plate), nesting.entries,
                              fm.sizes[nesting.parent])
    return Factor(f.vars, table)


def _into_entries(table: torch.Tensor, parent_axis: int, axis: int, entries: torch.Tensor,
                  parent_size: int) -> torch.Tensor:
    """``table`` summed along a nested plate's ``axis`` into its enclosing plate's
    (``parent_axis``, of size 1 here: a nested plate's table lies along its own axis only),
    copy ``i`` into row ``entries[i]``."""
    shape = list(table.shape)
    shape[axis] = len(entries)
    copies = table.expand(shape).transpose(parent_axis, axis)
    shape[axis], shape[parent_axis] = 1, parent_size
    return copies.new_zeros(shape).index_add(parent_axis, entries, copies)


def _check_budget(factors: Sequence[Factor], local: set[str], budget_bytes: int,
                  where: str) -> None:
    """Refuse, before allocating, an elimination whose largest table would not fit."""
    if not factors or not local:
        return
    cost = partial_plan(tuple(f.vars for f in factors), tuple(cardinalities(factors).items()),
                        frozenset(local))
    _refuse_over(cost.max_table * math.prod(_batch(factors)),
                 factors[0].log_table.element_size(), budget_bytes,
                 f"eliminating {len(local)} variables of {where} (induced width {cost.width})")


def _refuse_over(entries: int, itemsize: int, budget_bytes: int, what: str) -> None:
    refuse_over(entries * itemsize, budget_bytes,
                f"exact inference (a table of {entries:,} entries for {what})",
                "Use an approximate engine (gibbs, svi)")


def _batch(factors: Sequence[Factor]) -> torch.Size:
    return torch.broadcast_shapes(*(f.batch_shape for f in factors))


def _eliminate_chain(block: ChainBlock, fm: FactorModel, leaves: Mapping[str, torch.Tensor],
                     ring: Ring, method: str, budget_bytes: int) -> Factor:
    """Eliminate a chain: step-local variables per step, then the state along time."""
    first, rest = list(block.first), list(block.rest)
    for name, leaf in leaves.items():
        first.append(Factor((name,), leaf[:1]))
        if block.length > 1:
            rest.append(Factor((name,), leaf[1:]))
    own = [n for n, v in fm.variables.items() if v.chain == block.name]
    carried = [n for n in own if any(n + PREV in f.vars for f in rest)]
    floor, var_plates = frozenset(block.plates), _var_plates(fm)
    inner = [n for n in carried if var_plates[n] != floor]
    if inner:
        var = fm.variables[inner[0]]
        raise ModelError(f"latent {var.node!r} is carried from step to step of chain "
                         f"{block.name!r} inside plates {sorted(var_plates[inner[0]] - floor)} "
                         "declared within the chain: its chain state would be a joint state "
                         "over every plate entry. Declare the plate around the chain (with "
                         "m.plate(...), m.chain(...)) if its entries are independent chains; "
                         "else use engine='enum' (exact, for few entries) or 'gibbs'.")
    first, rest = (_step_plates(group, floor, var_plates, fm, ring, budget_bytes)
                   for group in (first, rest))
    where = f"the steps of chain {block.name!r}"
    step_local = [{v for f in group for v in f.vars if v in own and v not in carried}
                  for group in (first, rest)]
    for group, local in zip((first, rest), step_local, strict=True):
        _check_budget(group, local, budget_bytes, where)
    skipping = _step_mask(rest, step_local[1], prev_of=carried)
    rest = [f if f is skipping else plain(f) for f in rest]
    kept = [f for f in rest if f is skipping]
    first = eliminate(first, step_local[0], ring=ring)
    rest = kept + eliminate([f for f in rest if f is not skipping], step_local[1],
                            ring=ring)
    outside = sorted({v for f in (*first, *rest) for v in f.vars
                      if v not in own and not v.endswith(PREV)})
    prev = [n + PREV for n in carried]
    batch = 1 + len(fm.plates)
    like = (block.first or block.rest)[0].log_table
    cards = {**{n: len(v.states) for n, v in fm.variables.items()},
             **{n + PREV: len(fm.variables[n].states) for n in carried}}
    init = _joint(first, (*outside, *carried), batch, cards, like)[0]
    init = init.reshape(*init.shape[: init.dim() - len(carried)], -1)
    pair = unary = None
    if rest:
        states = math.prod(cards[v] for v in carried)
        width = math.prod(cards[v] for v in outside)
        _refuse_over(math.prod(_batch(rest)) * width * states**2, like.element_size(),
                     budget_bytes, f"the {states} joint states of chain {block.name!r}")
        coupled = [f for f in rest if any(v in prev for v in f.vars)]
        if skipping is not None and len(coupled) > 1:  # masks of the sum don't separate
            coupled = [plain(f) for f in coupled]
            rest = [plain(f) for f in rest]
            skipping = None
        pair = _joint(coupled, (*outside, *prev, *carried), batch, cards, like)
        pair = pair.reshape(*pair.shape[: pair.dim() - 2 * len(carried)],
                            math.prod(cards[v] for v in carried), -1)
        unary = _joint([f for f in rest if f not in coupled], (*outside, *carried), batch,
                       cards, like)
        unary = unary.reshape(*unary.shape[: unary.dim() - len(carried)], -1)
    pair_mask = None
    if skipping is not None:  # batch axes only (checked), then room for the outside axes
        mask = compact(skipping.mask)
        pair_mask = mask.reshape(*mask.shape[:batch], *([1] * len(outside)))
    value = chain_product(init, pair, unary, block.length - 1, ring=ring,
                          method=method, pair_mask=pair_mask)
    plates = tuple(fm.sizes[p] if p in block.plates else 1 for p in fm.plates)
    # compacted tables may leave a plate axis at size 1: the product over the plate needs
    # one value per entry
    value = value.reshape((1,) * (len(plates) + len(outside) - value.dim()) + value.shape)
    return Factor(tuple(outside), value.expand((*plates, *value.shape[len(plates):])))


def _step_plates(group: Sequence[Factor], floor: frozenset[str],
                 var_plates: Mapping[str, frozenset[str]], fm: FactorModel,
                 ring: Ring, budget_bytes: int) -> list[Factor]:
    """One step's tables with the plates declared inside the chain eliminated (several
    observations per step, latents per step and entry), as ``contract`` eliminates the
    model's. A table lies in its variables' plates and in every plate it varies along:
    that finds each table's plates, since a chain table of a node in an inner plate varies
    along it (an observation's data; a factor's table, broadcast in full) unless it is a
    latent's, which names its variable. Tables at the chain's own plates stay as they are,
    masks included (the scan may skip masked steps)."""
    pending: dict[frozenset[str], list[Factor]] = defaultdict(list)
    for f in group:
        batch = f.batch_shape[len(f.batch_shape) - len(fm.plates):]
        varies = {p for p, n in zip(fm.plates, batch, strict=True) if n > 1}
        plates = floor.union(varies, *(var_plates[v] for v in f.vars))
        pending[plates].append(f if plates == floor else plain(f))
    return _eliminate_plates(pending, var_plates, floor, ring, budget_bytes, fm)


def _step_mask(rest: Sequence[Factor], local: set[str], prev_of: Sequence[str]
               ) -> MaskedFactor | None:
    """The one masked transition table whose mask the scan can apply by skipping steps:
    it couples consecutive states, touches no step-local variable, and its mask varies only
    along batch axes (a step is masked or not, whatever the states)."""
    prev = {n + PREV for n in prev_of}
    found = [f for f in rest if isinstance(f, MaskedFactor) and prev & set(f.vars)
             and not local & set(f.vars)]
    if len(found) != 1:
        return None
    mask = compact(found[0].mask)
    return found[0] if all(n == 1 for n in mask.shape[mask.dim() - len(found[0].vars):]) \
        else None


def _joint(factors: Sequence[Factor], scope: tuple[str, ...], batch: int,
           cards: Mapping[str, int], like: torch.Tensor) -> torch.Tensor:
    """The sum of log tables aligned on ``scope`` (each variable on its own axis; zeros,
    shaped like ``like``'s dtype and device, when there are none). Batch axes along which
    no table varies stay of size 1 (tables are compacted first), so a transition shared by
    every step and sequence stays one matrix."""
    table = sum((aligned(Factor(f.vars, compact(f.log_table)), scope, batch)
                 for f in factors),
                start=like.new_zeros(()))
    table = table.reshape((1,) * (batch + len(scope) - table.dim()) + tuple(table.shape))
    return table.expand((*table.shape[:batch], *(cards[v] for v in scope)))

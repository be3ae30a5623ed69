"""Products of many K x K matrices in log space: the time axis of a chain, eliminated.

A chain's forward pass is ``alpha_T = alpha_0 (x) M_1 (x) ... (x) M_T`` where ``(x)`` is a
ring's matrix product (``genppl.exact.rings``; sum-product: ``log(exp(a) @ exp(b))``;
max-product: ``max(a + b)``).
Two schedules compute it:

- ``sequential``: T vector-matrix products, O(T K^2) work, T Python-level steps;
- ``parallel``: pairwise matrix-matrix products, O(T K^3) work in log2(T) batched steps, so
  per-step overhead vanishes for long chains and small K (and on GPU).

``choose_method`` picks the cheaper by a rough cost model. Both are differentiable, and the
sum-product's gradient is NaN-free where whole rows are impossible (probability-zero
transitions are common: the first step of a chain, structural zeros in tables), which is
what lets marginals be read off as gradients of log Z.

Both sum-product schedules work on exponentials of shifted log weights, which underflow
where a zero in a table (a forbidden transition) leaves one route whose weight is far below
the others' -- in float32 this takes only a Gaussian HMM with well separated means. Each
therefore checks where underflow can have cost precision and recomputes exactly there (see
``log_ops.LogMatMulExp`` and ``_ScaledChain``), so the answer is exact to float precision
whenever it is representable in log space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from genppl.exact.broadcasting import compact, sum_to_shape
from genppl.exact.rings import MAX, SUM, Ring

#: Rough costs on CPU: one small torch call, flops and bytes moved per second. They set the
#: crossover between T small steps and log2(T) big ones (measured on HMMs, K = 4 .. 64).
_CALL_SECONDS = 2e-5
_FLOPS_PER_SECOND = 2e9
_BYTES_PER_SECOND = 5e9

#: A sequential schedule: ``(init, pair, unary, pair_mask, steps) -> value`` per batch entry.
Schedule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", int],
                    torch.Tensor]


def choose_method(length: int, states: int, batch: int, *, ring: Ring,
                  budget_entries: int = 2**27) -> str:
    """``"parallel"`` or ``"sequential"``, whichever a rough cost model says is faster."""
    if length <= 1:
        return "sequential"
    # max-product and sampling pairs materialise (K, K, K) per matrix pair.
    pair_entries = batch * (length // 2) * states ** (3 if ring.materialises_products else 2)
    if pair_entries > budget_entries:
        return "sequential"
    per_step_calls = _sequential(ring)[1]
    sequential = length * (per_step_calls * _CALL_SECONDS
                           + 2 * batch * states**2 / _FLOPS_PER_SECOND)
    parallel = math.ceil(math.log2(length)) * 8 * _CALL_SECONDS + \
        2 * batch * length * states**3 / _FLOPS_PER_SECOND + \
        400 * batch * length * states**2 / _BYTES_PER_SECOND
    return "parallel" if parallel < sequential else "sequential"


def chain_product(init: torch.Tensor, pair: torch.Tensor | None, unary: torch.Tensor | None,
                  steps: int, *, ring: Ring = SUM, method: str = "auto",
                  pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha_{T}`` reduced in ``ring`` (summed, maximised) over the last state, with batch
    shape kept.

    ``init`` is ``(*batch, K)`` (step 0, evidence included); ``pair`` is
    ``(S | 1, *batch, K, K)`` and ``unary`` ``(S | 1, *batch, K)`` for the ``steps`` = S
    later steps (a leading 1 means the same table at every step), so step t multiplies by
    ``pair[t] + unary[t][..., None, :]``; ``None`` for a chain of one step. Where
    ``pair_mask`` (``(S | 1, *batch)``) is false the step's pair table counts as all zeros
    (log 1: a masked transition, e.g. padding after a sequence ends), applied by skipping
    rather than by materialising a table per step and sequence.
    """
    alpha = init
    if steps and pair is not None and unary is not None:
        pair, unary = compact(pair), compact(unary)
        batch = math.prod(torch.broadcast_shapes(init.shape[:-1], pair.shape[1:-2],
                                                 unary.shape[1:-1]))
        if method == "auto":
            method = choose_method(steps, init.shape[-1], batch, ring=ring)
        if method == "parallel":
            if pair_mask is not None:
                pair = torch.where(pair_mask[..., None, None], pair, pair.new_zeros(()))
            matrices = pair + unary.unsqueeze(-2)
            matrices = matrices.expand(steps, *matrices.shape[1:])
            total = _tree_product(matrices, ring)
            alpha = ring.matmul(alpha.unsqueeze(-2), total).squeeze(-2)
        elif method == "sequential":
            return _sequential(ring)[0](alpha, pair, unary, pair_mask, steps)
        else:
            raise ValueError(f"unknown chain method {method!r}; use 'auto', 'parallel' or "
                             "'sequential'.")
    return _reduce(alpha, ring).squeeze(-1)


def _sequential(ring: Ring) -> tuple[Schedule, int]:
    """A ring's sequential schedule and its torch calls per step (for the cost model): the
    fused scans of the sum (Rabiner's scaled forward-backward) and of the max (Viterbi), or
    log-space steps under autograd for any other ring (sampling)."""
    if ring is SUM:
        return _scaled_sum_chain, 3
    if ring is MAX:
        return _ViterbiChain.apply, 3

    def log_space(init: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor,
                  mask: torch.Tensor | None, steps: int) -> torch.Tensor:
        return _log_space_chain(init, pair, unary, mask, steps, ring, centred=False)
    return log_space, 8


def _scaled_sum_chain(init: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor,
                      mask: torch.Tensor | None, steps: int) -> torch.Tensor:
    """The sum along a chain by the scaled scan, its underflowed entries redone in log
    space (see ``_ScaledChain``)."""
    log_z, lost = _ScaledChain.apply(init, pair, unary, mask, steps)
    if bool(lost.any()):
        log_z = _redo_in_log_space(log_z, lost, init, pair, unary, mask, steps)
    return log_z


def _log_space_chain(alpha: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor,
                     mask: torch.Tensor | None, steps: int, ring: Ring, *, centred: bool
                     ) -> torch.Tensor:
    """``chain_product``'s sequential schedule as T log-space steps under autograd: for
    sampling, and for the sum where the scaled chain lost precision. ``centred`` (the sum)
    re-centres each step on its best state (a shift taken as a constant, so gradients are
    unchanged): log weights then stay within one step's range of 0 instead of growing with
    T, and keep float32's digits; the shifts are added back in one reduction, not a running
    total."""
    pairs, unaries = _per_step(pair, steps), _per_step(unary, steps)
    masks = _per_step(mask, steps) if mask is not None else (None,) * steps
    centres: list[torch.Tensor] = []
    matmul, reduce = ring.matmul, ring.reducer(True)
    for p, u, m in zip(pairs, unaries, masks, strict=True):
        moved = matmul(alpha.unsqueeze(-2), p).squeeze(-2)
        if m is not None:  # a masked step: stay anywhere, from all of alpha
            moved = torch.where(m.unsqueeze(-1), moved, reduce(alpha.unsqueeze(-1), -2))
        alpha = moved + u
        if centred:
            centres.append(alpha.detach().amax(-1, keepdim=True)
                           .clamp(min=torch.finfo(alpha.dtype).min))
            alpha = alpha - centres[-1]
    total = _reduce(alpha, ring)
    if centres:
        total = total + torch.cat(centres, -1).sum(-1, keepdim=True)
    return total.squeeze(-1)


def _redo_in_log_space(log_z: torch.Tensor, lost: torch.Tensor, init: torch.Tensor,
                       pair: torch.Tensor, unary: torch.Tensor, mask: torch.Tensor | None,
                       steps: int) -> torch.Tensor:
    """``log_z`` with the batch entries ``lost`` marks recomputed by the log-space chain,
    which is exact at any dynamic range but several times slower: only those entries pay.
    Inputs as ``chain_product``'s, each cut down to the lost entries (a table shared by
    every entry stays one table)."""
    index = lost.nonzero(as_tuple=True)

    def pick(t: torch.Tensor, lead: int, trail: int) -> torch.Tensor:
        """``t``'s rows for the lost entries, ``(*lead, N | 1, *trail)``."""
        head, inner, tail = t.shape[:lead], t.shape[lead:t.dim() - trail], \
            t.shape[t.dim() - trail:]
        if math.prod(inner) == 1:
            return t.reshape(*head, 1, *tail)
        t = t.reshape(*head, *(1,) * (lost.dim() - len(inner)), *inner, *tail)
        return t.expand(*head, *lost.shape, *tail)[(slice(None),) * lead + index]

    exact = _log_space_chain(pick(init, 0, 1), pick(pair, 1, 2), pick(unary, 1, 1),
                             None if mask is None else pick(mask, 1, 0), steps, SUM,
                             centred=True)
    return log_z.index_put(index, exact.expand(index[0].shape))


def _reduce(alpha: torch.Tensor, ring: Ring) -> torch.Tensor:
    """Eliminate the last (state) axis in ``ring``, kept as size 1."""
    return ring.reducer(True)(alpha.unsqueeze(-1), -2)


def _per_step(t: torch.Tensor, steps: int) -> tuple[torch.Tensor, ...]:
    """Each step's slice; unbind, not ``t[i]``: autograd would give every indexed slice a
    gradient the size of the whole table (quadratic in the chain's length)."""
    return t.unbind(0) if t.shape[0] > 1 else (t[0],) * steps


class _ScaledChain(torch.autograd.Function):
    """The sum-product along a chain in probability space with per-step rescaling
    (Rabiner's scaled forward-backward): one small matrix product per step each way, and
    the gradients -- posterior marginals for ``init``/``unary``, pairwise marginals for
    ``pair`` -- written out and summed over time in one vectorised product, instead of an
    autograd graph of a dozen nodes per step. Every log-space shift is added back; underflow
    is the one way the run can be inexact. Where it may have been (``_precision``), the
    backward recursion runs in the forward pass to bound what underflow cost
    (``_underflow_bound``; the backward pass then reuses it), and the batch entries it
    cannot clear come back flagged, for ``chain_product`` to redo in log space. Their
    gradient here is 0 (not NaN), the redo's is theirs.

    Inputs as ``chain_product``'s (``pair_mask`` may be None); returns log Z per batch entry
    and the (non-differentiable) flags.
    """

    @staticmethod
    def forward(ctx: Any, init: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor,
                mask: torch.Tensor | None, steps: int) -> torch.Tensor:
        tiny, least = torch.finfo(init.dtype).min, torch.finfo(init.dtype).tiny
        if mask is not None and bool(mask.all()):
            mask = None  # nothing skipped: spare the per-step select
        y_max = pair.amax(-2).clamp(min=tiny)  # (P, *b, K): column maxima, added back
        log_e = pair - y_max.unsqueeze(-2)
        e = log_e.exp()
        moved = unary + y_max  # log weight of arriving in k by a (non-masked) transition
        if mask is not None:
            moved = torch.where(mask.unsqueeze(-1), moved, unary)
        moved = moved.expand(steps, *moved.shape[1:])
        shift = moved.amax(-1, keepdim=True).clamp(min=tiny)
        log_w = moved - shift
        w = log_w.exp()
        m0 = init.amax(-1, keepdim=True).clamp(min=tiny)
        a = (init - m0).exp()
        c0 = a.sum(-1, keepdim=True)
        a = a / c0.clamp(min=least)  # an impossible start stays 0, and log Z -inf
        batch = torch.broadcast_shapes(a.shape[:-1], w.shape[1:-1], e.shape[1:-2],
                                       *(() if mask is None else (mask.shape[1:],)))
        k = a.shape[-1]
        # every step writes into preallocated rows: the loop is a handful of in-place calls
        alphas = a.new_empty((steps + 1, *batch, k))
        alphas[0] = a
        scales = a.new_empty((steps, *batch, 1))
        step = _stepper(e, steps)
        skipped = _per_step((~mask).unsqueeze(-1), steps) if mask is not None else None
        rows, scale_rows, w_rows = alphas.unbind(0), scales.unbind(0), w.unbind(0)
        for t in range(steps):
            row = rows[t + 1]
            step(rows[t], t, row)
            if skipped is not None:  # a skipped step reaches every state with weight 1
                row.masked_fill_(skipped[t], 1.0)
            row.mul_(w_rows[t])
            torch.sum(row, -1, keepdim=True, out=scale_rows[t])
            row.div_(scale_rows[t].clamp(min=least))
        log_z = m0 + c0.log() + shift.sum(0) + scales.log().sum(0)
        positive, reached = _precision(init, pair, unary, mask, alphas, scales, (log_e, e),
                                       log_w)
        lost = torch.zeros(batch, dtype=torch.bool, device=alphas.device)
        betas = vs = None
        if reached is not None:
            # Keep every state some route may reach, at 0 or not: a lost weight's future is
            # what the bound needs. Outside the flagged entries, betas are then finite.
            betas, vs = _betas(alphas, scales, e, w, mask, reached[1:].to(w.dtype))
            # lost: a bound above eps (1 / tiny in units of tiny * eps), or NaN
            lost = ~(_underflow_bound(reached, scales, betas) <= 1 / least)
            betas.masked_fill_(lost.unsqueeze(-1), 0.0)
            vs.masked_fill_(lost.unsqueeze(-1), 0.0)
        ctx.zeros = not positive
        ctx.save_for_backward(alphas, scales, e, w, mask, betas, vs)
        ctx.mark_non_differentiable(lost)
        ctx.shapes = (init.shape, pair.shape, unary.shape)
        return log_z.squeeze(-1), lost

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: Any) -> tuple[Any, ...]:
        alphas, scales, e, w, mask, betas, vs = ctx.saved_tensors
        init_shape, pair_shape, unary_shape = ctx.shapes
        if betas is None:
            # A state the forward left at 0 passes nothing back: its beta (how much more
            # the future favours it than the chain's current mix) is unbounded, inf at
            # worst, and 0 * inf is NaN; its true share, if any, is below eps (checked).
            # Weights lie in [0, 1], so ceil marks the kept ones (a float op: several
            # times faster than a boolean mask here).
            keep = alphas[1:].ceil() if ctx.zeros else None
            betas, vs = _betas(alphas, scales, e, w, mask, keep)
        g = grad.unsqueeze(-1)
        grad_init = sum_to_shape(alphas[0] * betas[0] * g, init_shape)
        grad_unary = sum_to_shape(alphas[1:] * betas[1:] * g, unary_shape)
        before = alphas[:-1] * g
        if mask is not None:
            before = before * mask.unsqueeze(-1)  # a masked step moves along no transition
        grad_pair = _pairwise(before, vs, pair_shape, e)
        return grad_init, grad_pair, grad_unary, None, None


def _betas(alphas: torch.Tensor, scales: torch.Tensor, e: torch.Tensor, w: torch.Tensor,
           mask: torch.Tensor | None, keep: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``_ScaledChain``'s backward recursion: ``betas[t]`` (going with ``alphas[t]``) and
    the messages ``vs[t] = betas[t + 1] * w[t] / scales[t]`` that make it, passed only by
    the states ``keep`` (0 or 1 per step and state; None: all) marks."""
    steps = w.shape[0]
    ws = w / scales.clamp(min=torch.finfo(scales.dtype).tiny)
    if keep is not None:
        ws.mul_(keep)
    step_back = _stepper(e.transpose(-1, -2), steps)
    betas = torch.empty_like(alphas)
    betas[steps] = 1.0
    vs = torch.empty_like(alphas[1:])
    beta_rows, v_rows, ws_rows = betas.unbind(0), vs.unbind(0), ws.unbind(0)
    masks = _per_step(mask.unsqueeze(-1), steps) if mask is not None else None
    for t in range(steps - 1, -1, -1):
        torch.mul(ws_rows[t], beta_rows[t + 1], out=v_rows[t])
        step_back(v_rows[t], t, beta_rows[t])
        if masks is not None:
            beta_rows[t].copy_(torch.where(masks[t], beta_rows[t],
                                           v_rows[t].sum(-1, keepdim=True)))
    return betas, vs


def _underflow_bound(reached: torch.Tensor, scales: torch.Tensor, betas: torch.Tensor
                     ) -> torch.Tensor:
    """Per batch entry, a bound on what underflow may have cost ``_ScaledChain``, in units
    of tiny * eps: on log Z, and on every marginal.

    An operation that underflows is off by at most one denormal spacing, tiny * eps. A step
    makes, per state, K products and sums (of weights at most 1), a product by the
    emission weight and a division by the step's scale: at most ``(K + 3) / scale + 1``
    spacings of error on a normalised weight, doubled here for the rounding of ``e`` and
    ``w`` themselves, and charged on every state some route reaches (the others are exactly
    0). Errors travel forward by the same maps as the weights, and betas are those maps
    applied backward from the end, so the error the weights reach the end with, which
    bounds the error of log Z and of the share of every path in it, is at most
    ``sum over t, k of fresh[t, k] * betas[t, k]``.
    """
    k = betas.shape[-1]
    fresh = torch.cat((torch.full_like(scales[:1], 2.0),
                       2.0 * ((k + 3) / scales.clamp(max=1.0) + 1.0)))
    # inf where a scale is 0 or nearly: charged only where some route reaches (else NaN)
    return torch.where(reached, fresh * betas, 0.0).sum(-1).sum(0)


def _precision(init: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor,
               mask: torch.Tensor | None, alphas: torch.Tensor, scales: torch.Tensor,
               transitions: tuple[torch.Tensor, torch.Tensor], log_w: torch.Tensor
               ) -> tuple[bool, torch.Tensor | None]:
    """Whether ``_ScaledChain``'s run kept every weight positive, and, where underflow may
    have cost it precision, the states routes may reach (``(T + 1, *batch, K)``, a superset,
    for ``_underflow_bound``; else None). ``transitions`` is the run's ``e`` with its log,
    ``log_w`` the log of its ``w``.

    Each product or sum of a step is off by at most one denormal spacing (tiny * eps) when
    it underflows, so a state's weight can be lost altogether once it falls below the
    smallest normal float. That is harmless while other states feed its successors far more,
    and can matter where the lost weight alone feeds a successor (every other state's
    transition there forbidden): it may grow back to dominate. Summing the error bounds,
    step t + 1 is exact to float precision when, for every state k some route reaches, the
    weight flowing in, ``m[k] = sum_j alphas[t, j] e[j, k]``, times the scale ``alphas[t]``
    was divided by (1 for ``alphas[0]``), and the step's own scale are at least
    ``K (2K + 5) tiny``.

    Three tests, each run only when the cheaper one before it cannot settle the question:
    every weight kept is positive and large (dense chains: one reduction); nothing can have
    underflowed, by the least positive weight, transition and emission (zeros are then all
    structural: forbidden transitions, impossible emissions); otherwise ``m`` and the states
    some route reaches, entry by entry (reach propagated from the computed ``m > 0`` agrees
    with the true support up to the first entry the test fails, which is what it needs).
    """
    k, tiny = alphas.shape[-1], torch.finfo(alphas.dtype).tiny
    floor = k * (2 * k + 5) * tiny
    before = torch.cat((torch.ones_like(scales[:1]), scales[:-1])).clamp(max=1.0)
    # m >= alphas[t + 1] * scales[t] (the emission weight is at most 1)
    if bool(alphas[1:].amin() * (scales * before).amin() >= floor):
        return True, None
    log_e, e = transitions
    # m >= the least positive weight times the least transition, and so on
    least = (1.0 - alphas.ceil()).add_(alphas).amin()  # weights lie in [0, 1]: zeros to 1
    margin = least.log() + before.amin().log() \
        + log_e.nan_to_num(neginf=0.0).amin() + log_w.nan_to_num(neginf=0.0).amin()
    kept = torch.equal(alphas[0] > 0, (init > -math.inf).expand_as(alphas[0]))
    if kept and bool(margin >= math.log(floor)):
        return False, None
    steps, batch = scales.shape[0], scales.shape[1:-1]
    flowing = _step_all(alphas[:-1], e)
    if mask is not None:  # a skipped step reaches every state with weight exactly 1
        flowing = torch.where(mask.unsqueeze(-1), flowing, flowing.new_ones(()))
    possible = (unary > -math.inf).expand(steps, *batch, k)
    started = (init > -math.inf).expand(1, *batch, k)
    reached = _reach(torch.cat((started, (flowing[:-1] > 0) & possible[:-1])), pair,
                     mask) & possible
    if not bool((reached & (flowing * before < floor)).any()
                or (reached.any(-1) & (scales.squeeze(-1) < floor)).any()):
        return False, None
    # past a failing entry the computed weights no longer show where routes go: give the
    # bound every state that a state with possible evidence moves to
    return False, torch.cat((started, _reach(torch.cat((started, possible[:-1])), pair,
                                             mask) & possible))


def _reach(alive: torch.Tensor, pair: torch.Tensor, mask: torch.Tensor | None
           ) -> torch.Tensor:
    """Which states a transition from the ``alive`` ones (``(T, *batch, K)``, step by step)
    can reach; a skipped step reaches every state."""
    reached = _step_all(alive.to(pair.dtype), (pair > -math.inf).to(pair.dtype)) > 0
    if mask is not None:
        reached = torch.where(mask.unsqueeze(-1), reached, alive.any(-1, keepdim=True))
    return reached


def _step_all(a: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``a[t] @ table[t]`` for every step at once (``table``'s leading axis 1 or T)."""
    k = table.shape[-1]
    if table.numel() == k * table.shape[-2]:
        return (a.reshape(-1, a.shape[-1]) @ table.reshape(-1, k)).reshape(*a.shape[:-1], k)
    return (a.unsqueeze(-2) @ table).squeeze(-2)


class _ViterbiChain(torch.autograd.Function):
    """The max-product along a chain: the forward pass keeps only the best scores (a max
    without indices is several times cheaper than one with them); the backward pass is
    Viterbi's backtracking, recovering each step's best predecessor for the one state on
    the path, and turns the upstream gradient into the indicator of the best path (what
    autograd through ``max`` would give, without a graph of nodes per step).

    The table is held transposed (``into[..., s, :]``: the log weights of arriving in ``s``)
    so each step's max runs over the contiguous last axis, and every step writes into
    preallocated buffers: a step is three calls (broadcast add, max, add the evidence), the
    floor for eager torch. Inputs as ``chain_product``'s; returns the max log joint per
    batch entry.
    """

    @staticmethod
    def forward(ctx: Any, init: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor,
                mask: torch.Tensor | None, steps: int) -> torch.Tensor:
        batch = torch.broadcast_shapes(init.shape[:-1], pair.shape[1:-2], unary.shape[1:-1],
                                       *(() if mask is None else (mask.shape[1:],)))
        k = init.shape[-1]
        into = pair.transpose(-1, -2).contiguous()
        skipped = _skipped_steps(mask, steps)
        deltas = init.new_empty((steps + 1, *batch, k))
        deltas[0] = init
        scores = init.new_empty((*batch, k, k))  # reused by every step
        rows, intos, unaries = deltas.unbind(0), _per_step(into, steps), _per_step(unary, steps)
        lifted = deltas.unsqueeze(-2).unbind(0)  # rows[t][..., None, :], made once
        for t in range(steps):
            torch.add(lifted[t], intos[t], out=scores)
            torch.amax(scores, -1, out=rows[t + 1])
            if t in skipped:  # a masked step: stay anywhere from the best state so far
                torch.where(skipped[t].unsqueeze(-1), rows[t].amax(-1, keepdim=True),
                            rows[t + 1], out=rows[t + 1])
            rows[t + 1].add_(unaries[t])
        value, last = rows[steps].max(-1)
        ctx.save_for_backward(deltas, last, into, mask)
        ctx.skipped = skipped
        ctx.shapes = (init.shape, pair.shape, unary.shape)
        return value

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        deltas, last, into, mask = ctx.saved_tensors
        init_shape, pair_shape, unary_shape = ctx.shapes
        steps, k, batch = deltas.shape[0] - 1, deltas.shape[-1], deltas.shape[1:-1]
        path = last.new_empty((steps + 1, *batch))  # the best state at every step
        path[steps] = last
        # per step: the states as batch-shaped rows (argmax's out) and flat (the index)
        states, flat, rows = path.unbind(0), path.view(steps + 1, -1).unbind(0), deltas.unbind(0)
        # into's rows in one flat table per step: entry b's row for state s is offset[b] + s
        # (offset None when a single table serves every entry)
        tables = [t.reshape(-1, k) for t in _per_step(into, steps)]
        offset = None
        if math.prod(into.shape[1:-2]) > 1:
            lead = torch.arange(math.prod(into.shape[1:-2]), device=into.device) * k
            offset = lead.reshape(into.shape[1:-2]).expand(batch).reshape(-1)
        scores = deltas.new_empty((*batch, k))
        flat_scores, skipped = scores.view(-1, k), ctx.skipped
        for t in range(steps - 1, -1, -1):  # the best predecessor of the state on the path
            torch.index_select(tables[t], 0, flat[t + 1] if offset is None
                               else flat[t + 1] + offset, out=flat_scores)
            scores.add_(rows[t])
            if t in skipped:
                torch.where(skipped[t].unsqueeze(-1), rows[t], scores, out=scores)
            torch.argmax(scores, -1, out=states[t])
        need_init, need_pair, need_unary = ctx.needs_input_grad[:3]
        weight = grad.expand(batch)
        grad_init = grad_unary = grad_pair = None
        if need_init or need_unary:
            one_hot = deltas.new_zeros(deltas.shape).scatter_(
                -1, path.unsqueeze(-1), weight.expand(path.shape).unsqueeze(-1))
            grad_init = sum_to_shape(one_hot[0], init_shape) if need_init else None
            grad_unary = sum_to_shape(one_hot[1:], unary_shape) if need_unary else None
        if need_pair:
            moved = weight.expand(path[1:].shape)
            if mask is not None:  # a masked step moves along no transition
                moved = moved * mask
            grad_pair = _transition_counts(path, moved, pair_shape)
        return grad_init, grad_pair, grad_unary, None, None


def _skipped_steps(mask: torch.Tensor | None, steps: int) -> dict[int, torch.Tensor]:
    """``{t: where step t is skipped}`` for the steps that skip any entry: the scans spend
    no call on the (usually many) steps that mask nothing."""
    if mask is None:
        return {}
    skipped = ~mask
    per_step = skipped.reshape(mask.shape[0], -1).any(-1).tolist()
    if len(per_step) == 1:
        return dict.fromkeys(range(steps), skipped[0]) if per_step[0] else {}
    return {t: skipped[t] for t, any_skipped in enumerate(per_step) if any_skipped}


def _transition_counts(path: torch.Tensor, weight: torch.Tensor, pair_shape: torch.Size
                       ) -> torch.Tensor:
    """``sum of weight[t, b] * [path[t, b] = j, path[t + 1, b] = k]`` into a table of
    ``pair_shape`` (``(S | 1, *batch | 1, K, K)``): the gradient of the best path's score
    with respect to its transitions, one scatter-add rather than a K x K outer product per
    step and sequence."""
    k = pair_shape[-1]
    moves = path[1:].shape  # (S, *batch)
    # where each (step, entry) lands among the table's leading axes (broadcast ones: 0)
    lead = (pair_shape[0], *([1] * (len(moves) - len(pair_shape) + 2)), *pair_shape[1:-2])
    table = torch.arange(math.prod(lead), device=path.device).reshape(lead)
    index = (table * k * k).expand(moves) + path[:-1] * k + path[1:]
    counts = weight.new_zeros(math.prod(pair_shape))
    counts.index_add_(0, index.reshape(-1), weight.expand(moves).reshape(-1))
    return counts.reshape(pair_shape)


def _pairwise(before: torch.Tensor, after: torch.Tensor, pair_shape: torch.Size,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """``sum over steps and batch of before[..., j] * after[..., k] (* weight[..., j, k])``,
    summed down to ``pair_shape``: the gradient of a chain's transition table. A matrix
    shared by every step and sequence takes one contraction, never the (S, *batch, K, K)
    intermediate."""
    k = before.shape[-1]
    if math.prod(pair_shape[:-2]) == 1:
        xi = torch.einsum("...j,...k->jk", before, after)
        if weight is not None:
            xi = xi * weight.reshape(k, k)
        return xi.reshape(pair_shape)
    outer = before.unsqueeze(-1) * after.unsqueeze(-2)
    return sum_to_shape(outer if weight is None else outer * weight, pair_shape)


def _stepper(e: torch.Tensor, steps: int) -> Any:
    """``step(a, t, out)``: ``out = a @ e[t]`` (vector times matrix over the last axes), as
    one plain matrix product into ``out`` when a single matrix serves every step and
    sequence."""
    k = e.shape[-1]
    if e.numel() == k * e.shape[-2]:
        matrix = e.reshape(e.shape[-2], k)

        def shared(a: torch.Tensor, _: int, out: torch.Tensor) -> None:
            torch.mm(a.reshape(-1, a.shape[-1]), matrix, out=out.view(-1, k))
        return shared
    per_step = _per_step(e, steps)

    def each(a: torch.Tensor, t: int, out: torch.Tensor) -> None:
        out.copy_((a.unsqueeze(-2) @ per_step[t]).squeeze(-2))
    return each


def _tree_product(matrices: torch.Tensor, ring: Ring) -> torch.Tensor:
    """Ordered product over axis 0 by pairing neighbours: log2(T) batched products."""
    while matrices.shape[0] > 1:
        even = matrices.shape[0] // 2 * 2
        paired = ring.matmul(matrices[0:even:2], matrices[1:even:2])
        matrices = torch.cat((paired, matrices[even:]), 0) if even < matrices.shape[0] \
            else paired
    return matrices[0]



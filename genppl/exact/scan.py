"""Products of many K x K matrices in log space: the time axis of a chain, eliminated.

A chain's forward pass is ``alpha_T = alpha_0 (x) M_1 (x) ... (x) M_T`` where ``(x)`` is the
log-semiring matrix product (sum-product: ``log(exp(a) @ exp(b))``; max-product: ``max(a + b)``).
Two schedules compute it:

- ``sequential``: T vector-matrix products, O(T K^2) work, T Python-level steps;
- ``parallel``: pairwise matrix-matrix products, O(T K^3) work in log2(T) batched steps, so
  per-step overhead vanishes for long chains and small K (and on GPU).

``choose_method`` picks the cheaper by a rough cost model. Both are differentiable, and the
sum-product's gradient is NaN-free where whole rows are impossible (probability-zero
transitions are common: the first step of a chain, structural zeros in tables), which is
what lets marginals be read off as gradients of log Z.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from genppl.exact.contract import Semiring, _LogSumExp, _max_values, _SampleLogSumExp

#: Rough costs on CPU: one small torch call, flops and bytes moved per second. They set the
#: crossover between T small steps and log2(T) big ones (measured on HMMs, K = 4 .. 64).
_CALL_SECONDS = 2e-5
_FLOPS_PER_SECOND = 2e9
_BYTES_PER_SECOND = 5e9


def choose_method(length: int, states: int, batch: int, *, semiring: Semiring,
                  budget_entries: int = 2**27) -> str:
    """``"parallel"`` or ``"sequential"``, whichever a rough cost model says is faster."""
    if length <= 1:
        return "sequential"
    # max-product and sampling pairs materialise (K, K, K) per matrix pair.
    pair_entries = batch * (length // 2) * states ** (2 if semiring == "sum" else 3)
    if pair_entries > budget_entries:
        return "sequential"
    per_step_calls = 3 if semiring in ("sum", "max") else 8  # fused scans / autograd graph
    sequential = length * (per_step_calls * _CALL_SECONDS
                           + 2 * batch * states**2 / _FLOPS_PER_SECOND)
    parallel = math.ceil(math.log2(length)) * 8 * _CALL_SECONDS + \
        2 * batch * length * states**3 / _FLOPS_PER_SECOND + \
        400 * batch * length * states**2 / _BYTES_PER_SECOND
    return "parallel" if parallel < sequential else "sequential"


def log_matmul(x: torch.Tensor, y: torch.Tensor, *, semiring: Semiring = "sum"
               ) -> torch.Tensor:
    """``log(exp(x) @ exp(y))`` (or ``max_j x_ij + y_jk``), batched and broadcast; with
    ``"sample"`` the backward pass draws the summed-out index (see ``_SampleLogSumExp``)."""
    if semiring == "max":
        return _max_values(x.unsqueeze(-1) + y.unsqueeze(-3), -2)
    if semiring == "sample":
        return _SampleLogSumExp.apply(x.unsqueeze(-1) + y.unsqueeze(-3), -2)
    return _LogMatMulExp.apply(x, y)


def chain_product(init: torch.Tensor, pair: torch.Tensor | None, unary: torch.Tensor | None,
                  steps: int, *, semiring: Semiring = "sum", method: str = "auto",
                  pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha_{T}`` summed (or maximised) over the last state, with batch shape kept.

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
            method = choose_method(steps, init.shape[-1], batch, semiring=semiring)
        if method == "parallel":
            if pair_mask is not None:
                pair = torch.where(pair_mask[..., None, None], pair, pair.new_zeros(()))
            matrices = pair + unary.unsqueeze(-2)
            matrices = matrices.expand(steps, *matrices.shape[1:])
            total = _tree_product(matrices, semiring)
            alpha = log_matmul(alpha.unsqueeze(-2), total, semiring=semiring).squeeze(-2)
        elif method == "sequential" and semiring == "sum":
            return _ScaledChain.apply(alpha, pair, unary, pair_mask, steps)
        elif method == "sequential" and semiring == "max":
            return _ViterbiChain.apply(alpha, pair, unary, pair_mask, steps)
        elif method == "sequential":
            pairs, unaries = _per_step(pair, steps), _per_step(unary, steps)
            masks = _per_step(pair_mask, steps) if pair_mask is not None else (None,) * steps
            for p, u, m in zip(pairs, unaries, masks, strict=True):
                moved = log_matmul(alpha.unsqueeze(-2), p, semiring=semiring).squeeze(-2)
                if m is not None:
                    moved = torch.where(m.unsqueeze(-1), moved, _reduce(alpha, semiring))
                alpha = moved + u
        else:
            raise ValueError(f"unknown chain method {method!r}; use 'auto', 'parallel' or "
                             "'sequential'.")
    return _reduce(alpha, semiring).squeeze(-1)


def _reduce(alpha: torch.Tensor, semiring: Semiring) -> torch.Tensor:
    """Eliminate the last (state) axis, kept as size 1."""
    if semiring == "max":
        return _max_values(alpha, -1).unsqueeze(-1)
    op = _SampleLogSumExp if semiring == "sample" else _LogSumExp
    return op.apply(alpha.unsqueeze(-1), -2)


def _per_step(t: torch.Tensor, steps: int) -> tuple[torch.Tensor, ...]:
    """Each step's slice; unbind, not ``t[i]``: autograd would give every indexed slice a
    gradient the size of the whole table (quadratic in the chain's length)."""
    return t.unbind(0) if t.shape[0] > 1 else (t[0],) * steps


def compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` with every broadcast (stride-0) axis cut to size 1: a transition table that is
    the same at every step and for every sequence then costs one K x K matrix, not a copy
    per step and sequence."""
    index = tuple(slice(0, 1) if stride == 0 and size > 1 else slice(None)
                  for size, stride in zip(t.shape, t.stride(), strict=True))
    return t[index]


class _ScaledChain(torch.autograd.Function):
    """The sum-product along a chain in probability space with per-step rescaling
    (Rabiner's scaled forward-backward): one small matrix product per step each way, and
    the gradients -- posterior marginals for ``init``/``unary``, pairwise marginals for
    ``pair`` -- written out and summed over time in one vectorised product, instead of an
    autograd graph of a dozen nodes per step. Exact: every log-space shift is added back.

    Inputs as ``chain_product``'s (``pair_mask`` may be None); returns log Z per batch entry.
    """

    @staticmethod
    def forward(ctx: Any, init: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor,
                mask: torch.Tensor | None, steps: int) -> torch.Tensor:
        tiny, least = torch.finfo(init.dtype).min, torch.finfo(init.dtype).tiny
        if mask is not None and bool(mask.all()):
            mask = None  # nothing skipped: spare the per-step select
        y_max = pair.amax(-2).clamp(min=tiny)  # (P, *b, K): column maxima, added back
        e = (pair - y_max.unsqueeze(-2)).exp()
        moved = unary + y_max  # log weight of arriving in k by a (non-masked) transition
        if mask is not None:
            moved = torch.where(mask.unsqueeze(-1), moved, unary)
        moved = moved.expand(steps, *moved.shape[1:])
        shift = moved.amax(-1, keepdim=True).clamp(min=tiny)
        w = (moved - shift).exp()
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
        ctx.save_for_backward(alphas, scales, e, w, mask)
        ctx.shapes = (init.shape, pair.shape, unary.shape)
        return log_z.squeeze(-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        alphas, scales, e, w, mask = ctx.saved_tensors
        init_shape, pair_shape, unary_shape = ctx.shapes
        steps = w.shape[0]
        g = grad.unsqueeze(-1)
        ws = w / scales.clamp(min=torch.finfo(scales.dtype).tiny)
        step_back = _stepper(e.transpose(-1, -2), steps)
        betas = torch.empty_like(alphas)  # betas[t] goes with alphas[t]
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
        grad_init = sum_to_shape(alphas[0] * betas[0] * g, init_shape)
        grad_unary = sum_to_shape(alphas[1:] * betas[1:] * g, unary_shape)
        before = alphas[:-1] * g
        if mask is not None:
            before = before * mask.unsqueeze(-1)  # a masked step moves along no transition
        grad_pair = _pairwise(before, vs, pair_shape, e)
        return grad_init, grad_pair, grad_unary, None, None


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


def _tree_product(matrices: torch.Tensor, semiring: Semiring) -> torch.Tensor:
    """Ordered product over axis 0 by pairing neighbours: log2(T) batched products."""
    while matrices.shape[0] > 1:
        even = matrices.shape[0] // 2 * 2
        paired = log_matmul(matrices[0:even:2], matrices[1:even:2], semiring=semiring)
        matrices = torch.cat((paired, matrices[even:]), 0) if even < matrices.shape[0] \
            else paired
    return matrices[0]


def sum_to_shape(grad: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Sum ``grad`` down to ``shape`` (the inverse of broadcasting an input to its shape)."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    dims = [i for i, (g, s) in enumerate(zip(grad.shape, shape, strict=True)) if s == 1 != g]
    return grad.sum(dims, keepdim=True) if dims else grad


class _LogMatMulExp(torch.autograd.Function):
    """``log(exp(x) @ exp(y))`` by one matmul of shifted exponentials.

    Rows of ``x`` and columns of ``y`` are shifted by their maxima (clamped to be finite, so
    an all ``-inf`` row gives exactly ``-inf``, not NaN), and the backward pass is written
    out so impossible entries get gradient 0 rather than ``0 * inf``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tiny = torch.finfo(x.dtype).min
        x_max = x.amax(-1, keepdim=True).clamp(min=tiny)
        y_max = y.amax(-2, keepdim=True).clamp(min=tiny)
        a, b = (x - x_max).exp(), (y - y_max).exp()
        s = a @ b
        ctx.save_for_backward(a, b, s)
        ctx.shapes = (x.shape, y.shape)
        return s.log() + x_max + y_max

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, s = ctx.saved_tensors
        w = torch.where(s > 0, grad / s, torch.zeros_like(s))
        x_shape, y_shape = ctx.shapes
        gx = a * (w @ b.transpose(-1, -2))
        gy = b * (a.transpose(-1, -2) @ w)
        return sum_to_shape(gx, x_shape), sum_to_shape(gy, y_shape)

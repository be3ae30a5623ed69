"""The differentiable reductions of log weights that the semirings are made of, each with the
backward pass an exact query needs: a log-sum-exp whose gradient is 0, not NaN, on impossible
slices (marginals); its twin whose backward pass draws one term (posterior samples); a max
whose backward pass picks one maximiser (MAP backtracking); and a log-space matrix product
exact where the scaled product underflows (chains)."""

from __future__ import annotations

from typing import Any

import torch

from genppl.exact.broadcasting import sum_to_shape


class LogSumExp(torch.autograd.Function):
    """``torch.logsumexp`` whose gradient is 0, not NaN, where every term is -inf.

    Evidence makes whole slices impossible; their share of every marginal is exactly zero,
    but the textbook gradient exp(x - logsumexp(x)) evaluates to exp(-inf + inf) there.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        out = torch.logsumexp(x, dim)
        ctx.save_for_backward(x, out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.unsqueeze(ctx.dim) * _term_weights(ctx), None


def _term_weights(ctx: Any) -> torch.Tensor:
    """exp(term - logsumexp): each term's share of its sum (0 where every term is -inf)."""
    x, out = ctx.saved_tensors
    out = out.unsqueeze(ctx.dim)
    return torch.where(torch.isfinite(out), (x - out).exp(), torch.zeros_like(x))


class SampleLogSumExp(LogSumExp):
    """``logsumexp`` forward; backward routes each output's gradient to *one* term, drawn
    with probability exp(term - output). Run backward from an indicator of a configuration
    and every elimination step draws its variable given the variables it was eliminated
    against: forward filtering, backward sampling, for any elimination order."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.unsqueeze(ctx.dim) * draw_one_hot(_term_weights(ctx), ctx.dim), None


def draw_one_hot(weights: torch.Tensor, dim: int) -> torch.Tensor:
    """One index along ``dim`` per position, drawn proportionally to non-negative
    ``weights`` (all-zero rows, which no draw can reach, pick index 0), as a one-hot."""
    moved = weights.movedim(dim, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    empty = flat.sum(-1, keepdim=True) <= 0
    flat = torch.where(empty, torch.ones_like(flat), flat)
    index = torch.multinomial(flat, 1)
    one_hot = torch.zeros_like(flat).scatter_(1, index, 1.0)
    return one_hot.reshape(moved.shape).movedim(-1, dim)


def max_values(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """The max over ``dim`` (one axis, or several taken as one flattened axis) by
    ``torch.max``, whose backward routes each output's gradient to the one maximiser it
    returns, the first; ``amax``'s backward splits it evenly among ties. Routed to one
    maximiser, the gradient of the max-product from an indicator of the best value is a
    backtrack: each eliminated variable is chosen given the variables already chosen, so
    every leaf's gradient is one-hot and the assignment it reads is a joint maximiser. Read
    off gradients split among ties, each variable would pick among its own tied states
    independently, mixing optima into assignments that need not even be possible. (Its
    forward pass is slower than ``amax``'s, its backward faster, and it keeps only the
    indices for it: forward and backward together, it costs less.)"""
    if isinstance(dim, tuple):
        x = x.movedim(dim, tuple(range(len(dim)))).flatten(0, len(dim) - 1)
        dim = 0
    return x.max(dim).values


class LogMatMulExp(torch.autograd.Function):
    """``log(exp(x) @ exp(y))`` by one matmul of shifted exponentials, exact to float
    precision wherever the result is finite, and -inf (gradient 0) where it is not.

    Rows of ``x`` and columns of ``y`` are shifted by their maxima (clamped to be finite, so
    an all ``-inf`` row gives exactly ``-inf``, not NaN). That rank-one shift suits entry
    ``(i, k)`` only where row i's and column k's best terms meet; where they don't (a
    forbidden transition leaving one route, far below the others), the scaled sum ``s`` can
    underflow to a denormal or to 0 though the entry is ordinary. Entries with ``s`` below
    sqrt(tiny) are therefore recomputed by a logsumexp over their own terms (exact zeros
    among them stay -inf). Above it, what underflow dropped is far below eps relative, and
    the backward's ``grad / s`` stays finite (at most 1/sqrt(tiny) per unit of gradient), so
    no entry's gradient is 0 * inf.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lowest = torch.finfo(x.dtype).min
        x_max = x.amax(-1, keepdim=True).clamp(min=lowest)
        y_max = y.amax(-2, keepdim=True).clamp(min=lowest)
        a, b = (x - x_max).exp(), (y - y_max).exp()
        s = a @ b
        out = s.log() + x_max + y_max
        floor = _sum_floor(s.dtype)
        # one float reduction settles the common case (a boolean mask costs ~10x more)
        redo = (s < floor).nonzero() if s.numel() and bool(s.amin() < floor) else None
        if redo is not None:
            index = redo.unbind(-1)
            out.index_put_(index, torch.logsumexp(_terms(x, y, index, s.shape), -1))
        ctx.save_for_backward(x, y, a, b, s, redo)
        ctx.shapes = (x.shape, y.shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, a, b, s, redo = ctx.saved_tensors
        w = torch.where(s >= _sum_floor(s.dtype), grad / s, torch.zeros_like(s))
        x_shape, y_shape = ctx.shapes
        gx = a * (w @ b.transpose(-1, -2))
        gy = b * (a.transpose(-1, -2) @ w)
        if redo is not None:  # each recomputed entry's gradient, shared among its terms
            index = redo.unbind(-1)
            terms = _terms(x, y, index, s.shape)
            total = torch.logsumexp(terms, -1, keepdim=True)
            share = torch.where(torch.isfinite(total), (terms - total).exp(),
                                torch.zeros_like(terms)) * grad[index].unsqueeze(-1)
            gx.index_put_(index[:-1], share, accumulate=True)
            gy.transpose(-1, -2).index_put_((*index[:-2], index[-1]), share, accumulate=True)
        return sum_to_shape(gx, x_shape), sum_to_shape(gy, y_shape)


def _sum_floor(dtype: torch.dtype) -> float:
    """The least scaled sum ``LogMatMulExp`` trusts: sqrt(tiny)."""
    return torch.finfo(dtype).tiny ** 0.5


def _terms(x: torch.Tensor, y: torch.Tensor, index: tuple[torch.Tensor, ...],
           shape: torch.Size) -> torch.Tensor:
    """``x[..., i, j] + y[..., j, k]`` over j for the entries ``index`` (batch..., i, k) of a
    product of ``shape``: one row of terms per entry."""
    *batch, i, k = index
    rows = x.expand(*shape[:-1], x.shape[-1])[(*batch, i)]
    cols = y.transpose(-1, -2).expand(*shape[:-2], shape[-1], y.shape[-2])[(*batch, k)]
    return rows + cols

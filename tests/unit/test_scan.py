"""The chain scans against a naive log-space loop: the scaled forward-backward
(``sequential``, hand-written gradients) and the log-depth ``parallel`` product give the
same log Z and the same gradients (posterior and pairwise marginals), with shared or
per-step transitions, impossible transitions, masked (skipped) steps, long chains."""

from __future__ import annotations

import pytest
import torch

from genppl.exact import scan

pytestmark = pytest.mark.unit
F64 = torch.float64


def naive(init: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor, steps: int,
          mask: torch.Tensor | None, maximise: bool = False) -> torch.Tensor:
    def reduce(x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.amax(dim) if maximise else torch.logsumexp(x, dim)

    alpha = init
    for t in range(steps):
        p = pair[t if pair.shape[0] > 1 else 0]
        if mask is not None:
            p = torch.where(mask[t].reshape(*mask.shape[1:], 1, 1), p, torch.zeros_like(p))
        alpha = reduce(alpha.unsqueeze(-1) + p, -2) + unary[t]
    return reduce(alpha, -1)


@pytest.mark.parametrize(("k", "steps", "batch", "shared", "masked"), [
    (3, 6, 2, True, False), (3, 6, 2, False, True), (4, 9, 3, True, True), (2, 40, 1, True, False)])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_scans_equal_the_naive_loop(k: int, steps: int, batch: int, shared: bool,
                                    masked: bool, method: str) -> None:
    g = torch.Generator().manual_seed(k * steps)
    init = torch.randn(batch, k, generator=g, dtype=F64)
    pair = torch.randn(1 if shared else steps, 1 if shared else batch, k, k, generator=g,
                       dtype=F64)
    pair[..., 0, 1] = -torch.inf  # an impossible transition
    unary = torch.randn(steps, batch, k, generator=g, dtype=F64)
    mask = torch.rand(steps, batch, generator=g) > 0.3 if masked else None
    weights = torch.arange(1, batch + 1, dtype=F64)
    results = []
    for fn in (lambda i, p, u: naive(i, p, u, steps, mask),
               lambda i, p, u: scan.chain_product(i, p, u, steps, method=method,
                                                  pair_mask=mask)):
        inputs = [t.clone().requires_grad_() for t in (init, pair, unary)]
        log_z = fn(*inputs)
        grads = torch.autograd.grad((log_z * weights).sum(), inputs)
        results.append((log_z.detach(), *grads))
    for expected, got in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("k", "steps", "batch", "pair_steps", "pair_batch", "mask_steps"), [
    (3, 6, 2, 1, 1, None), (3, 6, 2, 6, 2, 6), (5, 12, 3, 1, 1, 12), (4, 7, 3, 1, 3, 1),
    (4, 9, 3, 9, 1, None), (1, 5, 2, 1, 1, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_viterbi_scan_equals_the_naive_max_and_its_gradient_is_the_best_path(
        k: int, steps: int, batch: int, pair_steps: int, pair_batch: int,
        mask_steps: int | None, dtype: torch.dtype) -> None:
    """Tables shared by every step and entry, per step, per entry or both; masks per step
    or one for all steps; float32 and float64."""
    g = torch.Generator().manual_seed(7 * k + steps)
    init = torch.randn(batch, k, generator=g, dtype=dtype)
    pair = torch.randn(pair_steps, pair_batch, k, k, generator=g, dtype=dtype)
    unary = torch.randn(steps, batch, k, generator=g, dtype=dtype)
    mask = None if mask_steps is None else torch.rand(mask_steps, batch, generator=g) > 0.3
    results = []
    for fn in (lambda i, p, u: naive(i, p, u, steps,
                                     None if mask is None else mask.expand(steps, batch),
                                     maximise=True),
               lambda i, p, u: scan.chain_product(i, p, u, steps, semiring="max",
                                                  method="sequential", pair_mask=mask)):
        inputs = [t.clone().requires_grad_() for t in (init, pair, unary)]
        value = fn(*inputs)
        grads = torch.autograd.grad(value.sum(), inputs)
        results.append((value.detach(), *grads))
    tol = 1e-12 if dtype == F64 else 1e-5
    for expected, got in zip(*results, strict=True):  # random reals: the best path is unique
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_sequential_scan_is_finite_on_a_long_float32_chain() -> None:
    g = torch.Generator().manual_seed(0)
    steps = 100_000
    unary = torch.randn(steps, 1, 4, generator=g)
    pair = torch.randn(1, 1, 4, 4, generator=g)
    log_z = scan.chain_product(torch.zeros(1, 4), pair, unary, steps, method="sequential")
    assert bool(torch.isfinite(log_z).all()) and log_z.dtype == torch.float32

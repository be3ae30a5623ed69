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


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_viterbi_gradients_under_ties_are_one_best_path(method: str, masked: bool,
                                                        dtype: torch.dtype) -> None:
    """Tables of a few integer values (ties everywhere, impossible transitions too): the
    gradients mark one path per entry, one state per step, and that path scores the max."""
    k, steps, batch = 4, 7, 3
    g = torch.Generator().manual_seed(3)
    values = torch.tensor([-torch.inf, 0.0, 1.0], dtype=dtype)
    init = values[torch.randint(1, 3, (batch, k), generator=g)]
    pair = values[torch.randint(0, 3, (1, batch, k, k), generator=g)]
    pair[..., 0] = 0.0  # every state reachable: some path is possible
    unary = values[torch.randint(1, 3, (steps, batch, k), generator=g)]
    mask = torch.rand(steps, batch, generator=g) > 0.3 if masked else None
    inputs = [t.clone().requires_grad_() for t in (init, pair, unary)]
    value = scan.chain_product(*inputs, steps, semiring="max", method=method, pair_mask=mask)
    g_init, _, g_unary = torch.autograd.grad(value.sum(), inputs)
    one_hot = torch.cat([g_init.unsqueeze(0), g_unary])  # (steps + 1, batch, k)
    assert torch.equal(one_hot.sum(-1), torch.ones(steps + 1, batch, dtype=dtype))
    assert torch.equal(one_hot.amax(-1), torch.ones(steps + 1, batch, dtype=dtype))
    path = one_hot.argmax(-1)
    entry = torch.arange(batch)
    score = init[entry, path[0]]
    for t in range(steps):
        move = pair[0, entry, path[t], path[t + 1]]
        if mask is not None:
            move = torch.where(mask[t], move, torch.zeros_like(move))
        score = score + move + unary[t, entry, path[t + 1]]
    expected = naive(init, pair, unary, steps, mask, maximise=True)
    torch.testing.assert_close(value.detach(), expected, rtol=0, atol=0)
    torch.testing.assert_close(score, expected, rtol=0, atol=1e-5)

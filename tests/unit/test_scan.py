"""The chain scans against a naive log-space loop: the scaled forward-backward
(``sequential``, hand-written gradients) and the log-depth ``parallel`` product give the
same log Z and the same gradients (posterior and pairwise marginals), with shared or
per-step transitions, impossible transitions, masked (skipped) steps, long chains.

Underflow: a forbidden transition can leave a single route whose weight, shifted by the
row and column maxima the fast products use, lies below the smallest float (e**-120 in
float32, e**-800 in float64) though the answer is ordinary. Those cases are checked against
the naive loop in float64 on the same (rounded) inputs, values and gradients, with no NaN
anywhere; so is a fuzz of random zeros and sharp weights."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from genppl.exact import scan
from genppl.exact.rings import MAX, SUM

pytestmark = pytest.mark.unit
F64 = torch.float64
INF = math.inf


def lse(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp`` whose gradient is 0, not NaN, where every term is -inf."""
    dead = (x == -INF).all(dim, keepdim=True)
    out = torch.logsumexp(torch.where(dead, torch.zeros_like(x), x), dim)
    return torch.where(dead.squeeze(dim), torch.full_like(out, -INF), out)


def naive(init: torch.Tensor, pair: torch.Tensor, unary: torch.Tensor, steps: int,
          mask: torch.Tensor | None, maximise: bool = False) -> torch.Tensor:
    def reduce(x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.amax(dim) if maximise else lse(x, dim)

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
               lambda i, p, u: scan.chain_product(i, p, u, steps, ring=MAX,
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
    value = scan.chain_product(*inputs, steps, ring=MAX, method=method, pair_mask=mask)
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


# ----------------------------------------------------------------------- underflow
Fn = Callable[..., torch.Tensor]


def value_and_grads(fn: Fn, inputs: list[torch.Tensor], weights: torch.Tensor
                    ) -> tuple[torch.Tensor, ...]:
    """``fn``'s value and the gradients of its weighted sum over finite entries."""
    inputs = [t.clone().requires_grad_() for t in inputs]
    value = fn(*inputs)
    finite = torch.where(torch.isfinite(value), value, torch.zeros_like(value))
    grads = torch.autograd.grad((finite * weights.to(value.dtype)).sum(), inputs)
    return (value.detach(), *grads)


def assert_equals_float64(fn: Fn, inputs: list[torch.Tensor], reference: Fn,
                          weights: torch.Tensor) -> None:
    """``fn`` on ``inputs`` against ``reference`` on the same numbers in float64: NaN-free,
    -inf exactly where the reference's is, finite values and gradients to the inputs'
    precision (a few hundred eps of the magnitude of the result: sums of T rounded logs;
    gradients, sums over steps and entries, to that times their own magnitude)."""
    got = value_and_grads(fn, inputs, weights)
    expected = value_and_grads(reference, [t.double() for t in inputs], weights)
    for g in got:
        assert not bool(torch.isnan(g).any())
    assert torch.equal(torch.isinf(got[0]), torch.isinf(expected[0]))
    finite = torch.isfinite(expected[0])
    size = 1 + float(expected[0][finite].abs().max()) if bool(finite.any()) else 1
    tol = 200 * torch.finfo(inputs[0].dtype).eps * size
    torch.testing.assert_close(got[0].double()[finite], expected[0][finite], rtol=0, atol=tol)
    for g, e in zip(got[1:], expected[1:], strict=True):
        torch.testing.assert_close(g.double(), e, rtol=0,
                                   atol=tol * max(1.0, float(e.abs().max())))


def naive_log_matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return lse(x.unsqueeze(-1) + y.unsqueeze(-3), -2)


def depth(dtype: torch.dtype) -> float:
    """Half of a log weight whose exp is below the dtype's least denormal."""
    return 60.0 if dtype == torch.float32 else 400.0


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_log_matmul_is_exact_where_the_scaled_sum_underflows(dtype: torch.dtype) -> None:
    """Entries whose only route lies ``2 * depth`` below the row and column maxima (rows
    0, 1 peak at j = 1, 2, which cannot reach columns 0, 1; those peak at j = 3, 4, which
    rows 0, 1 cannot use; only j = 0 joins them, deep in both), beside ordinary entries,
    all -inf rows and columns, and entries with no route at all."""
    g = torch.Generator().manual_seed(1)
    d = depth(dtype)
    x = torch.randn(3, 4, 5, generator=g, dtype=F64)
    y = torch.randn(3, 5, 4, generator=g, dtype=F64)
    x[:, :2, 0], y[:, 0, :2] = -d, -d
    x[:, :2, 3:] = -INF
    y[:, 1:3, :2] = -INF
    y[:, 0, 2] = -INF  # (row 0 or 1, column 2): only the j = 1, 2 routes
    x[1, 3] = -INF  # a whole row impossible
    y[2, :, 3] = -INF  # a whole column impossible
    y[0, 1:, 1] = -INF  # (row 0 or 1, column 1) of entry 0: j = 0 only, x's peak elsewhere
    x, y = x.to(dtype), y.to(dtype)
    shifted = naive_log_matmul(x.double(), y.double()) - x.double().amax(-1, keepdim=True) \
        - y.double().amax(-2, keepdim=True).clamp(min=-1e300)
    assert bool((shifted < math.log(torch.finfo(dtype).tiny * torch.finfo(dtype).eps)).any())
    assert_equals_float64(lambda a, b: SUM.matmul(a, b), [x, y], naive_log_matmul,
                          torch.rand(3, 4, 4, generator=g, dtype=F64) + 0.5)


def forbidden_chain(dtype: torch.dtype, steps: int, batch: int = 3
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The issue's chain: state 0 may go anywhere but nothing returns to it, and the
    emissions are so sharp that the route staying in 0 -- as likely as any in the end --
    passes through weights below the least float (relative to the others). Entry 0 is
    benign (emissions flat), so the batch mixes certified and redone entries."""
    k, d = 3, depth(dtype)
    init = torch.zeros(batch, k, dtype=F64)
    pair = torch.tensor([[0.8, 0.1, 0.1], [-INF, 0.5, 0.5], [-INF, 0.5, 0.5]], dtype=F64)
    pair = torch.where(pair > 0, pair.log(), pair).expand(1, 1, k, k)
    # state 0 is d behind the others for the first half, d ahead (per step) for the second
    ahead = torch.where(torch.arange(steps) < steps // 2, -d, d).to(F64)
    unary = torch.zeros(steps, batch, k, dtype=F64)
    unary[:, 1:, 0] = ahead.unsqueeze(-1) / 2
    return init.to(dtype), pair.to(dtype), unary.to(dtype)


@pytest.mark.parametrize("steps", [12, 60])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_route_only_its_own_state_feeds_survives_underflow(
        dtype: torch.dtype, method: str, steps: int) -> None:
    init, pair, unary = forbidden_chain(dtype, steps)
    assert_equals_float64(
        lambda i, p, u: scan.chain_product(i, p, u, steps, method=method),
        [init, pair, unary], lambda i, p, u: naive(i, p, u, steps, None),
        torch.tensor([1.0, 2.0, 3.0], dtype=F64))


def test_the_scaled_chain_redoes_only_what_it_cannot_certify() -> None:
    """No flags (so no log-space redo, several times slower) for a dense chain whose
    weights underflow to 0 (other states feed every successor), one with only structural
    zeros, or one where a state only it feeds fades below the least float (0.8**t, a
    left-to-right chain) and never returns; the issue's entries only in its chain."""
    steps, k, batch = 50, 4, 3
    g = torch.Generator().manual_seed(2)
    init = torch.randn(batch, k, generator=g)
    dense = torch.rand(1, 1, k, k, generator=g).log()
    sharp = torch.randn(steps, batch, k, generator=g) * 200  # e**-200: 0 in float32
    cases = {"dense, underflowing": (init, dense, sharp, steps)}
    band = torch.where(torch.rand(1, batch, k, k, generator=g) < 0.3, -INF, dense)
    band[..., 0] = 0.0  # every state can reach 0
    emit = torch.randn(steps, batch, k, generator=g)
    cases["structural zeros"] = (init, band, torch.where(emit > 1, -INF, emit), steps)
    fading, lasting, _ = forbidden_chain(torch.float32, 600)
    assert torch.finfo(torch.float32).tiny > 0.8**600  # state 0's share by the end
    cases["fading"] = (fading, lasting, torch.zeros(600, 3, 3), 600)
    for name, (i, p, u, n) in cases.items():
        log_z, lost = scan._ScaledChain.apply(i, p, u, None, n)
        assert not bool(lost.any()), name
        torch.testing.assert_close(log_z.double(), naive(i.double(), p.double(), u.double(),
                                                         n, None),
                                   rtol=1e-5, atol=1e-5 * float(log_z.abs().max()), msg=name)
    _, lost = scan._ScaledChain.apply(*forbidden_chain(torch.float32, 40), None, 40)
    assert lost.tolist() == [False, True, True]


def test_a_long_float32_chain_is_redone_where_a_lost_route_returns() -> None:
    """2000 steps. Entry 1's route through state 0 falls 3e4 nats behind and comes back
    level: it is redone, and the redo's per-step re-centring keeps log Z to 5e-7 relative
    and posteriors to 5e-6 (with log weights left to grow to -3e4 they were off by 6e-6
    and 1e-5). Entry 0's state 0 only fades: no redo, float32's scaled chain as before."""
    steps = 2000
    init, pair, unary = forbidden_chain(torch.float32, steps, batch=2)
    unary = unary + torch.randn(unary.shape, generator=torch.Generator().manual_seed(3))
    _, lost = scan._ScaledChain.apply(init, pair, unary, None, steps)
    assert lost.tolist() == [False, True]
    inputs = [init, pair, unary]
    got = value_and_grads(lambda i, p, u: scan.chain_product(i, p, u, steps,
                                                             method="sequential"),
                          inputs, torch.ones(2))
    expected = value_and_grads(lambda i, p, u: naive(i, p, u, steps, None),
                               [t.double() for t in inputs], torch.ones(2, dtype=F64))
    for entry, (value_tol, posterior_tol) in enumerate([(1e-6, 5e-5), (5e-7, 5e-6)]):
        torch.testing.assert_close(got[0][entry].double(), expected[0][entry],
                                   rtol=value_tol, atol=0)
        torch.testing.assert_close(got[3][:, entry].double(), expected[3][:, entry], rtol=0,
                                   atol=posterior_tol)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_broadcast_batch_axes_pass_through_the_checks_and_the_redo(
        dtype: torch.dtype, method: str) -> None:
    """Two batch axes, the tables broadcast along one or the other (start, evidence and
    masks shared by the rows, transitions by the columns), in the issue's chain: the
    checks, the bound and the redo of the lost entries (columns 1, 2) keep shapes."""
    steps, k = 14, 3
    g = torch.Generator().manual_seed(5)
    init = torch.randn(3, k, generator=g, dtype=F64)
    pair = forbidden_chain(F64, 1)[1].reshape(1, 1, 1, k, k) \
        + torch.randn(1, 2, 1, k, k, generator=g, dtype=F64) * 0.1
    ahead = torch.where(torch.arange(steps) < steps // 2, -1.0, 1.0).to(F64) * depth(dtype)
    unary = torch.zeros(steps, 1, 3, k, dtype=F64)
    unary[..., 1:, 0] = ahead.reshape(steps, 1, 1) / 2
    mask = torch.ones(steps, 1, 3, dtype=torch.bool)
    mask[:, 0, 0] = torch.rand(steps, generator=g) > 0.2  # a skip would revive state 0
    inputs = [t.to(dtype) for t in (init, pair, unary)]
    if method == "sequential":
        _, lost = scan._ScaledChain.apply(*inputs, mask, steps)
        assert lost.tolist() == [[False, True, True]] * 2
    assert_equals_float64(
        lambda i, p, u: scan.chain_product(i, p, u, steps, method=method, pair_mask=mask),
        inputs, lambda i, p, u: naive(i, p, u, steps, mask.expand(steps, 2, 3)),
        torch.arange(1, 7, dtype=F64).reshape(2, 3))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("method", ["sequential", "parallel"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_chains_under_random_zeros_and_sharp_weights_equal_the_naive_loop(
        seed: int, method: str, dtype: torch.dtype) -> None:
    """Random -inf among transitions, emissions and starts, weights spread over up to
    1e3 nats per step, shared or per-step tables, masked steps (the issue's bug made about
    half of these NaN or wrong in float32, and some in float64)."""
    g = torch.Generator().manual_seed(seed)
    k, steps, batch = 2 + seed % 4, 5 + 3 * seed, 1 + seed % 3
    shared = seed % 2 == 0
    spread = [1.0, 30.0, 100.0, 400.0, 1000.0][seed % 5]
    zeros = 0.1 + 0.4 * (seed % 3) / 2
    init = torch.randn(batch, k, generator=g, dtype=F64) * spread
    pair = torch.randn(1 if shared else steps, 1 if shared else batch, k, k, generator=g,
                       dtype=F64)
    unary = torch.randn(steps, batch, k, generator=g, dtype=F64) * spread
    pair = torch.where(torch.rand(pair.shape, generator=g) < zeros, -INF, pair)
    unary = torch.where(torch.rand(unary.shape, generator=g) < zeros / 3, -INF, unary)
    init = torch.where(torch.rand(init.shape, generator=g) < zeros / 3, -INF, init)
    mask = torch.rand(steps, batch, generator=g) > 0.3 if seed % 4 == 3 else None
    assert_equals_float64(
        lambda i, p, u: scan.chain_product(i, p, u, steps, method=method, pair_mask=mask),
        [t.to(dtype) for t in (init, pair, unary)],
        lambda i, p, u: naive(i, p, u, steps, mask),
        torch.arange(1, batch + 1, dtype=F64))

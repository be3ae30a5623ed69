"""Kalman filter, RTS smoother and FFBS (``genppl.exact.gaussian``) against the dense joint
Gaussian of all states and observations, conditioned by textbook formulas."""

from __future__ import annotations

import pytest
import torch

from genppl.errors import ModelError
from genppl.exact.gaussian import (
    LinearGaussianChain,
    kalman_filter,
    naive_condition,
    rts_smoother,
    sample_posterior,
)

pytestmark = pytest.mark.unit
F64 = torch.float64


def random_chain(steps: int, d: int, m: int, batch: tuple[int, ...] = (), seed: int = 0,
                 dtype: torch.dtype = F64) -> tuple[LinearGaussianChain, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64)

    def spd(*shape: int) -> torch.Tensor:
        x = randn(*shape, shape[-1])
        return x @ x.mT + 0.3 * torch.eye(shape[-1], dtype=F64)

    b = batch
    chain = LinearGaussianChain(randn(*b, d), spd(*b, d), 0.8 * randn(steps - 1, *b, d, d),
                                randn(steps - 1, *b, d), spd(steps - 1, *b, d),
                                randn(steps, *b, m, d), randn(steps, *b, m),
                                spd(steps, *b, m))
    y = randn(steps, *b, m)
    return LinearGaussianChain(*(x.to(dtype) for x in chain)), y.to(dtype)


def blocks(cov: torch.Tensor, d: int) -> torch.Tensor:
    """The (T, d, d) diagonal blocks of a (T d, T d) covariance."""
    steps = cov.shape[0] // d
    return torch.stack([cov[t * d:(t + 1) * d, t * d:(t + 1) * d] for t in range(steps)])


@pytest.mark.parametrize(("steps", "d", "m"), [(1, 1, 1), (2, 1, 1), (5, 2, 1), (8, 2, 3),
                                                (7, 3, 2)])
def test_filter_and_smoother_equal_dense_conditioning(steps: int, d: int, m: int) -> None:
    chain, y = random_chain(steps, d, m, seed=steps * 10 + d)
    f = kalman_filter(chain, y)
    s = rts_smoother(chain, f)
    log_lik, mean, cov = naive_condition(chain, y)
    assert float(f.log_likelihood) == pytest.approx(float(log_lik), abs=1e-10)
    torch.testing.assert_close(s.mean, mean.reshape(steps, d), rtol=0, atol=1e-10)
    torch.testing.assert_close(s.cov, blocks(cov, d), rtol=0, atol=1e-10)
    for t in range(steps):
        _, mean_t, cov_t = naive_condition(chain, y, upto=t + 1)
        torch.testing.assert_close(f.mean[t], mean_t.reshape(steps, d)[t], rtol=0, atol=1e-10)
        torch.testing.assert_close(f.cov[t], blocks(cov_t, d)[t], rtol=0, atol=1e-10)


def test_batch_axes_answer_each_sequence_as_alone() -> None:
    chain, y = random_chain(9, 2, 2, batch=(3, 2), seed=3)
    f = kalman_filter(chain, y)
    s = rts_smoother(chain, f)
    assert f.log_likelihood.shape == (3, 2) and s.cov.shape == (9, 3, 2, 2, 2)
    for i in range(3):
        for j in range(2):
            one = LinearGaussianChain(*(x[i, j] if k < 2 else x[:, i, j]
                                        for k, x in enumerate(chain)))
            log_lik, mean, _ = naive_condition(one, y[:, i, j])
            assert float(f.log_likelihood[i, j]) == pytest.approx(float(log_lik), abs=1e-10)
            torch.testing.assert_close(s.mean[:, i, j], mean.reshape(9, 2), rtol=0, atol=1e-10)


def test_shared_parameters_broadcast_over_a_batch_of_sequences() -> None:
    chain, y = random_chain(6, 1, 1, seed=5)
    ys = torch.stack([y, 2 * y, -y], 1)  # (T, 3, M): three sequences, one set of parameters
    shared = LinearGaussianChain(*(x.unsqueeze(0) if k < 2 else x.unsqueeze(1)
                                   for k, x in enumerate(chain)))  # batch axes of size 1
    f = kalman_filter(shared, ys)
    for k, scale in enumerate((1, 2, -1)):
        assert float(f.log_likelihood[k]) == pytest.approx(
            float(naive_condition(chain, scale * y)[0]), abs=1e-10)


@pytest.mark.parametrize("d", [1, 2])  # scalar chains take the elementwise path
def test_log_likelihood_gradient_equals_the_dense_one(d: int) -> None:
    chain, y = random_chain(6, d, 1, seed=7)
    leaves = [x.clone().requires_grad_() for x in chain]
    kalman_filter(LinearGaussianChain(*leaves), y).log_likelihood.backward()
    fast = [x.grad for x in leaves]
    leaves = [x.clone().requires_grad_() for x in chain]
    naive_condition(LinearGaussianChain(*leaves), y)[0].backward()
    covariances = (1, 4, 7)  # only their symmetric part matters: compare gradients there
    for k, (a, b) in enumerate(zip(fast, (x.grad for x in leaves), strict=True)):
        if k in covariances:
            a, b = a + a.mT, b + b.mT
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_float32_is_close_to_float64() -> None:
    chain, y = random_chain(50, 2, 1, seed=11)
    c32, y32 = LinearGaussianChain(*(x.float() for x in chain)), y.float()
    f64, f32 = kalman_filter(chain, y), kalman_filter(c32, y32)
    assert f32.log_likelihood.dtype == torch.float32
    assert float(f32.log_likelihood) == pytest.approx(float(f64.log_likelihood), rel=1e-4)
    s64, s32 = rts_smoother(chain, f64), rts_smoother(c32, f32)
    torch.testing.assert_close(s32.mean.double(), s64.mean, rtol=1e-3, atol=1e-3)


def local_level(steps: int, dtype: torch.dtype) -> tuple[LinearGaussianChain, torch.Tensor]:
    """Nile-like scales: level noise 40, observation noise 120, a diffuse start."""
    gen = torch.Generator().manual_seed(0)
    walk = torch.cumsum(40 * torch.randn(steps, generator=gen, dtype=F64), 0)
    y = (1000 + walk + 120 * torch.randn(steps, generator=gen, dtype=F64)).to(dtype)
    one = torch.ones(1, 1, dtype=dtype)
    chain = LinearGaussianChain(one[0] * 1000, one * 1e6, one.expand(steps - 1, 1, 1),
                                one[0].expand(steps - 1, 1) * 0, one.expand(steps - 1, 1, 1) *
                                1600, one.expand(steps, 1, 1), one[0].expand(steps, 1) * 0,
                                one.expand(steps, 1, 1) * 14400)
    return chain, y.unsqueeze(-1)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_hundred_thousand_steps_are_finite_and_agree(dtype: torch.dtype) -> None:
    steps = 100_000
    chain, y = local_level(steps, dtype)
    leaves = [x.clone().requires_grad_() for x in chain[5:]]
    f = kalman_filter(LinearGaussianChain(*chain[:5], *leaves), y)
    s = rts_smoother(chain, f)
    f.log_likelihood.backward()
    assert torch.isfinite(f.log_likelihood) and torch.isfinite(s.cov).all()
    assert all(torch.isfinite(x.grad).all() for x in leaves)
    assert bool((s.cov > 0).all()) and bool((s.cov <= f.cov + 1e-3 * f.cov).all())
    # The steady state: every step's filtered variance equals the Riccati fixed point.
    q, r = 1600.0, 14400.0
    pred = (q + (q * q + 4 * q * r) ** 0.5) / 2
    torch.testing.assert_close(f.cov[100:, 0, 0], torch.full_like(
        f.cov[100:, 0, 0], pred * r / (pred + r)), rtol=1e-4 if dtype == F64 else 1e-3,
        atol=0)
    ref = kalman_filter(*local_level(steps, F64))
    assert float(f.log_likelihood.detach()) == pytest.approx(
        float(ref.log_likelihood), rel=1e-12 if dtype == F64 else 1e-4)


def test_ffbs_draws_have_the_exact_joint_posterior_moments() -> None:
    """MCSE z-tests of the draws' means, variances and lag-1 covariances against the dense
    posterior (draws are independent, so the standard error is the sample sd / sqrt(n))."""
    steps, d, n = 6, 2, 40_000
    chain, y = random_chain(steps, d, 1, seed=13)
    f = kalman_filter(chain, y)
    z = sample_posterior(chain, f, n, generator=torch.Generator().manual_seed(0))
    assert z.shape == (n, steps, d)
    _, mean, cov = naive_condition(chain, y)
    flat = z.reshape(n, -1)
    centred = flat - mean
    pairs = [(i, i) for i in range(steps * d)] + [(i, i + d) for i in range(steps * d - d)] \
        + [(i, i + 1) for i in range(0, steps * d, 2)]
    for i, j in pairs:
        prod = centred[:, i] * centred[:, j]
        z_score = (prod.mean() - cov[i, j]) / (prod.std() / n ** 0.5)
        assert abs(float(z_score)) < 5, (i, j)
    z_mean = centred.mean(0) / (centred.std(0) / n ** 0.5)
    assert float(z_mean.abs().max()) < 5


def test_ffbs_is_batched_and_follows_the_generator() -> None:
    chain, y = random_chain(5, 1, 1, batch=(3,), seed=2)
    f = kalman_filter(chain, y)
    a = sample_posterior(chain, f, 4, generator=torch.Generator().manual_seed(1))
    b = sample_posterior(chain, f, 4, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 5, 3, 1) and torch.equal(a, b)


def test_mismatched_lengths_are_a_model_error() -> None:
    chain, y = random_chain(5, 1, 1)
    with pytest.raises(ModelError, match="time first"):
        kalman_filter(chain, y[:4])

"""NUTS on the noise scales of a local-level model with the chain marginalised by the Kalman
filter, against a 2-D grid integration of the exact marginal likelihood times the prior.

A short run is the unit test (each NUTS iteration costs a few Kalman filters and their
gradients, ~0.1 s here); the long one, under ``slow``, tests the same means with an MCSE
several times smaller."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from pyro.ops.stats import effective_sample_size

import genppl
from genppl import Model
from genppl.exact.gaussian import LinearGaussianChain, kalman_filter

F64 = torch.float64


def local_level() -> Model:
    m = Model("local_level")
    m.latent("sigma_level", lambda: dist.HalfNormal(1.0))
    m.latent("sigma_obs", lambda: dist.HalfNormal(1.0))
    with m.chain("t"):
        m.latent("level", lambda level_prev, sigma_level: dist.Normal(level_prev, sigma_level),
                 init=lambda: dist.Normal(0.0, 3.0))
        m.observed("y", lambda level, sigma_obs: dist.Normal(level, sigma_obs))
    return m.to(dtype=F64)


def grid_posterior_means(y: torch.Tensor, n: int = 100) -> tuple[float, float]:
    """E[sigma_level], E[sigma_obs] by a midpoint rule on (0, 3]^2 (the HalfNormal(1) priors
    put < 0.3% of their mass beyond 3), the likelihood from a batch of Kalman filters."""
    grid = (torch.arange(n, dtype=F64) + 0.5) * 3 / n
    sl, so = torch.meshgrid(grid, grid, indexing="ij")
    steps = len(y)
    one = torch.ones(1, 1, dtype=F64)
    chain = LinearGaussianChain(
        torch.zeros(1, 1, 1, dtype=F64), 9 * one.reshape(1, 1, 1, 1),
        one.expand(steps - 1, 1, 1, 1, 1), torch.zeros(steps - 1, 1, 1, 1, dtype=F64),
        (sl ** 2).reshape(1, n, n, 1, 1).expand(steps - 1, n, n, 1, 1),
        one.expand(steps, 1, 1, 1, 1), torch.zeros(steps, 1, 1, 1, dtype=F64),
        (so ** 2).reshape(1, n, n, 1, 1).expand(steps, n, n, 1, 1))
    log_post = kalman_filter(chain, y.reshape(steps, 1, 1, 1)).log_likelihood \
        + dist.HalfNormal(1.0).log_prob(sl) + dist.HalfNormal(1.0).log_prob(so)
    w = torch.softmax(log_post.reshape(-1), 0).reshape(n, n)
    return float((w * sl).sum()), float((w * so).sum())


# (draws, warm-up, least ESS): the ESS floor keeps the MCSE estimate itself reliable.
@pytest.mark.parametrize(("draws", "warmup", "min_ess"), [
    pytest.param(60, 60, 20, marks=pytest.mark.unit),
    pytest.param(250, 150, 50, marks=pytest.mark.slow)])
def test_nuts_on_the_noise_scales_matches_grid_integration(draws: int, warmup: int,
                                                           min_ess: int) -> None:
    gen = torch.Generator().manual_seed(1)
    steps = 40
    level = torch.cumsum(0.5 * torch.randn(steps, generator=gen, dtype=F64), 0)
    y = level + 0.8 * torch.randn(steps, generator=gen, dtype=F64)
    post = genppl.infer(local_level(), {"y": y}, engine="nuts", num_samples=draws,
                        warmup_steps=warmup, seed=0, progress=False)
    assert post.samples["level"].shape == (1, draws, steps)  # drawn by FFBS per sample
    assert not any(k.startswith("level[") for k in post.samples)
    for name, expected in zip(("sigma_level", "sigma_obs"), grid_posterior_means(y),
                              strict=True):
        draws = post.samples[name]
        ess = float(effective_sample_size(draws))
        mcse = float(draws.std()) / ess ** 0.5
        assert ess > min_ess
        assert abs(float(draws.mean()) - expected) < 4 * mcse, (name, expected, mcse)

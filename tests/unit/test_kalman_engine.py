"""``engine="exact"`` on models whose latents are linear-Gaussian chains: the DSL chain read
as a state-space model by probing, answered by the Kalman filter, checked against the dense
joint Gaussian of the unrolled model and against statsmodels' local-level likelihood."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl import Model
from genppl.errors import ModelError
from genppl.exact.gaussian import LinearGaussianChain, naive_condition

pytestmark = pytest.mark.unit
F64 = torch.float64


def trend_model() -> Model:
    """A local linear trend with a time-varying input on the level (two latents per step)."""
    m = Model("trend")
    m.param("s_level", 0.7)
    with m.chain("t"):
        m.input("u")
        m.latent("slope", lambda slope_prev: dist.Normal(0.9 * slope_prev, 0.3),
                 init=lambda: dist.Normal(0.1, 0.5))
        m.latent("level", lambda level_prev, slope_prev, u, s_level:
                 dist.Normal(level_prev + slope_prev + 0.5 * u, s_level),
                 init=lambda: dist.Normal(1.0, 2.0))
        m.observed("y", lambda level, slope, t: dist.Normal(level - 0.2 * slope, 0.4 + 0.01 * t))
    return m


def dense_reference(steps: int, u: torch.Tensor) -> LinearGaussianChain:
    """The same model written out by hand (states ordered slope, level)."""
    a = torch.tensor([[0.9, 0.0], [1.0, 1.0]], dtype=F64)
    return LinearGaussianChain(
        torch.tensor([0.1, 1.0], dtype=F64), torch.diag(torch.tensor([0.25, 4.0], dtype=F64)),
        a.expand(steps - 1, 2, 2), torch.stack([torch.zeros(steps - 1, dtype=F64),
                                                0.5 * u[1:]], -1),
        torch.diag(torch.tensor([0.09, 0.49], dtype=F64)).expand(steps - 1, 2, 2),
        torch.tensor([[-0.2, 1.0]], dtype=F64).expand(steps, 1, 2),
        torch.zeros(steps, 1, dtype=F64),
        ((0.4 + 0.01 * torch.arange(steps, dtype=F64)) ** 2).reshape(steps, 1, 1))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_exact_engine_equals_the_dense_gaussian(dtype: torch.dtype) -> None:
    steps = 7
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(steps, generator=gen, dtype=F64)
    y = torch.randn(steps, generator=gen, dtype=F64) + torch.arange(steps)
    post = genppl.infer(trend_model().to(dtype=dtype), {"y": y, "u": u}, engine="exact",
                        num_samples=3, seed=0)
    log_lik, mean, cov = naive_condition(dense_reference(steps, u), y.unsqueeze(-1))
    tol = 1e-10 if dtype == F64 else 1e-4
    assert post.log_evidence == pytest.approx(float(log_lik), abs=tol * 10, rel=tol)
    var = cov.diagonal().reshape(steps, 2)
    for i, name in enumerate(("slope", "level")):
        got = post.info["smoothed_mean"][name]
        assert got.dtype == dtype and got.shape == (steps,)
        torch.testing.assert_close(got.double(), mean.reshape(steps, 2)[:, i], rtol=tol,
                                   atol=tol)
        torch.testing.assert_close(post.info["smoothed_var"][name].double(), var[:, i],
                                   rtol=tol, atol=tol)
        assert post.samples[name].shape == (1, 3, steps)
    assert post.mean("level").shape == (steps,)


def test_exact_draws_follow_the_seed() -> None:
    data = {"y": torch.arange(5.0), "u": torch.zeros(5)}
    m = trend_model().to(dtype=F64)
    a = genppl.infer(m, data, engine="exact", num_samples=4, seed=3).samples["level"]
    b = genppl.infer(m, data, engine="exact", num_samples=4, seed=3).samples["level"]
    assert torch.equal(a, b)


def one_node(fn: object, observed: object = None) -> Model:
    m = Model("bad")
    with m.chain("t"):
        m.latent("z", fn, init=lambda: dist.Normal(0.0, 1.0))  # type: ignore[arg-type]
        m.observed("y", observed or (lambda z: dist.Normal(z, 1.0)))  # type: ignore[arg-type]
    return m


@pytest.mark.parametrize(("fn", "observed", "match"), [
    (lambda z_prev: dist.Normal(torch.sin(z_prev), 1.0), None, "not affine"),
    (lambda z_prev: dist.Normal(z_prev, 1.0 + z_prev.abs()), None, "scale changes"),
    (lambda z_prev: dist.StudentT(3.0, z_prev, 1.0), None, "not dist.Normal"),
    (lambda z_prev: dist.Normal(z_prev, 1.0), lambda z: dist.Normal(z * z, 1.0), "not affine"),
])
def test_a_chain_that_is_not_linear_gaussian_is_a_model_error(fn: object, observed: object,
                                                              match: str) -> None:
    with pytest.raises(ModelError, match=match) as info:
        genppl.infer(one_node(fn, observed).to(dtype=F64), {"y": torch.zeros(4)},
                     engine="exact")
    assert "'z'" in str(info.value) or "'y'" in str(info.value)


def test_global_continuous_latents_point_to_nuts() -> None:
    m = Model("global")
    m.latent("s", lambda: dist.HalfNormal(1.0))
    with m.chain("t"):
        m.latent("z", lambda z_prev, s: dist.Normal(z_prev, s),
                 init=lambda: dist.Normal(0.0, 1.0))
        m.observed("y", lambda z: dist.Normal(z, 1.0))
    with pytest.raises(ModelError, match="nuts"):
        genppl.infer(m, {"y": torch.zeros(4)}, engine="exact")

"""``engine="hmc_gibbs"``: NUTS on the continuous latent alternating with Gibbs on the
discrete ones, against the posterior computed on a fine grid (the continuous latent is one
number, the discrete ones summed out exactly), within Monte Carlo standard errors."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl.results import diagnostics

pytestmark = pytest.mark.unit
F64 = torch.float64
Y = torch.tensor([-0.4, 0.3, 2.6, 1.9, 3.1], dtype=F64)
SHIFT, PRIOR_ONE = 2.0, 0.3


def _model() -> genppl.Model:
    m = genppl.Model("shifted")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with m.plate("items", len(Y)):
        m.latent("z", lambda: dist.Bernoulli(torch.tensor(PRIOR_ONE, dtype=F64)))
        m.observed("y", lambda mu, z: dist.Normal(mu + SHIFT * z, 1.0))
    return m.to(dtype=F64)


def _grid() -> tuple[float, float, torch.Tensor]:
    """E[mu], sd[mu] and P(z_i = 1) under the exact posterior, on a grid of mu."""
    mu = torch.linspace(-6, 8, 20001, dtype=F64)
    normal = torch.distributions.Normal
    like0 = normal(mu[:, None], 1.0).log_prob(Y) + math.log(1 - PRIOR_ONE)
    like1 = normal(mu[:, None] + SHIFT, 1.0).log_prob(Y) + math.log(PRIOR_ONE)
    log_post = normal(0.0, 1.0).log_prob(mu) + torch.logaddexp(like0, like1).sum(-1)
    w = torch.softmax(log_post, 0)
    mean = float((w * mu).sum())
    sd = math.sqrt(float((w * (mu - mean) ** 2).sum()))
    p_one = (w[:, None] * torch.sigmoid(like1 - like0)).sum(0)
    return mean, sd, p_one


def test_hmc_gibbs_draws_the_exact_posterior() -> None:
    mean, sd, p_one = _grid()
    post = genppl.infer(_model(), {"y": Y}, engine="hmc_gibbs", num_samples=300,
                        warmup_steps=150, num_chains=2, seed=0, progress=False)
    assert post.samples["mu"].shape == (2, 300) and post.samples["z"].shape == (2, 300, 5)
    # 5 Monte Carlo standard errors: a chance failure below 6e-7 per check.
    mu = post.samples["mu"]
    stats = diagnostics(mu)
    assert abs(float(mu.mean()) - mean) <= 5 * stats["mcse_mean"]
    assert abs(float(mu.std()) - sd) <= 0.25 * sd  # a spread from 600 draws, loosely
    assert stats["r_hat"] < 1.05
    for i, p in enumerate(p_one.tolist()):
        hits = (post.samples["z"][..., i] == 1).to(F64)
        err = math.sqrt(p * (1 - p) / max(diagnostics(hits)["ess_bulk"], 1.0))
        assert abs(float(hits.mean()) - p) <= 5 * err + 1e-12, (i, float(hits.mean()), p)


def test_hmc_gibbs_says_which_engine_fits_instead() -> None:
    discrete = genppl.Model("discrete")
    discrete.cpt("a", [], [0.5, 0.5])
    with pytest.raises(genppl.ModelError, match="no continuous latents; use engine 'gibbs'"):
        genppl.infer(discrete, {}, engine="hmc_gibbs", num_samples=5)
    continuous = genppl.Model("continuous")
    continuous.latent("mu", lambda: dist.Normal(0.0, 1.0))
    with pytest.raises(genppl.ModelError, match="no finite latents; use engine 'nuts'"):
        genppl.infer(continuous, {}, engine="hmc_gibbs", num_samples=5)


STEPS = torch.tensor([-1.3, -0.2, 2.9, 2.2, 1.6, -0.8], dtype=F64)
TRANS = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=F64)
PRIOR_LOCS = torch.tensor([-1.0, 2.0], dtype=F64)


def _switching() -> genppl.Model:
    """A two-state chain emitting Normal(mu[z_t], 1), the two means unknown (their priors
    apart, so the labels cannot switch)."""
    m = genppl.Model("switching_means")
    m.latent("mu", lambda: dist.Normal(PRIOR_LOCS, 1.0).to_event(1))
    with m.chain("t"):
        m.latent("z", lambda z_prev: dist.Categorical(TRANS[z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.5, 0.5], dtype=F64)))
        m.observed("y", lambda z, mu: dist.Normal(mu[..., z], 1.0))
    return m.to(dtype=F64)


def _switching_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """E[mu] (2,) and P(z_t = 1) (T,) by a 2-D grid over the means, every path summed."""
    import itertools

    axis = torch.linspace(-5, 6, 221, dtype=F64)
    m0, m1 = torch.meshgrid(axis, axis, indexing="ij")
    mu = torch.stack([m0.reshape(-1), m1.reshape(-1)], -1)  # (G, 2)
    normal = torch.distributions.Normal
    log_w = normal(PRIOR_LOCS, 1.0).log_prob(mu).sum(-1)
    paths = torch.tensor(list(itertools.product((0, 1), repeat=len(STEPS))))
    log_path = math.log(0.5) + TRANS.log()[paths[:, :-1], paths[:, 1:]].sum(-1)  # (P,)
    like = normal(mu[:, paths], 1.0).log_prob(STEPS).sum(-1)  # (G, P)
    joint = log_w[:, None] + log_path[None] + like
    w = torch.softmax(joint.reshape(-1), 0).reshape(joint.shape)
    mean = (w.sum(1)[:, None] * mu).sum(0)
    p_one = (w.sum(0)[:, None] * paths.to(F64)).sum(0)
    return mean, p_one


@pytest.mark.parametrize("discrete", ["gibbs", "exact"])
def test_hmc_gibbs_samples_a_chain_by_sweeps_or_exact_draws(discrete: str) -> None:
    mean, p_one = _switching_grid()
    # A warm-up long enough for the chain's start to be forgotten: with 100 sweeps the
    # sticky chain's single-site updates still carry it (6 MCSE off at seed 1).
    post = genppl.infer(_switching(), {"y": STEPS}, engine="hmc_gibbs", num_samples=300,
                        warmup_steps=200, num_chains=2, seed=1, discrete=discrete,
                        progress=False)
    assert post.samples["z"].shape == (2, 300, len(STEPS))
    for j in range(2):
        mu = post.samples["mu"][..., j]
        assert abs(float(mu.mean()) - float(mean[j])) <= 5 * diagnostics(mu)["mcse_mean"]
    for t, p in enumerate(p_one.tolist()):
        hits = (post.samples["z"][..., t] == 1).to(F64)
        err = math.sqrt(p * (1 - p) / max(diagnostics(hits)["ess_bulk"], 1.0))
        assert abs(float(hits.mean()) - p) <= 5 * err + 1e-12, (t, float(hits.mean()), p)


@pytest.mark.parametrize("discrete", ["gibbs", "exact"])
def test_nuts_never_reuses_an_energy_computed_for_other_discrete_values(discrete: str) -> None:
    """NUTS caches the potential energy and gradient of its current position; the discrete
    update changes the potential, so after every iteration the cache must be empty or equal
    the potential at the new discrete values. (A stale energy enters the next Metropolis
    correction: a bias too small for the posterior tests above to see.)"""
    from pyro.infer import NUTS
    from pyro.ops.integrator import potential_grad

    from genppl.engines.hmc_gibbs import HmcGibbsKernel
    from genppl.tabulation.prepared import prepare

    prep = prepare(_model(), {"y": Y})
    kernel = HmcGibbsKernel(prep, {"y": Y}, None, NUTS, discrete)
    kernel.setup(5)
    params = kernel.initial_params
    torch.manual_seed(0)
    changed = 0
    for _ in range(10):
        before = {k: v.clone() for k, v in kernel.discrete.items()}
        params = kernel.sample(params)
        changed += any(not torch.equal(before[k], v) for k, v in kernel.discrete.items())
        z, energy, _ = kernel.kernel._fetch_from_cache()
        if z is not None:
            _, fresh = potential_grad(kernel.kernel.potential_fn, z)
            assert torch.allclose(energy, fresh)
    assert changed  # the discrete values did move, so a stale cache would have shown

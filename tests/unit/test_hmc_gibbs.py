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

"""``genppl.variational.evaluate``: per-item IWAE-k and IWAE with finite latents summed out
exactly, against closed-form evidence (float64).

Oracles: log p(x) of a two-component mixture with a shared Gaussian shift (brute force over
the 2^5 assignments, each a multivariate normal density) and of a mixture with per-item
shifts (per item: a two-term sum of normal densities). Monte Carlo checks use the estimates'
own standard errors; exact ones (a delta guide, the exact posterior) use 1e-10.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

import genppl
from genppl.tabulation.prepared import prepare
from genppl.variational import evaluate, log_weights

pytestmark = pytest.mark.unit

F64 = torch.float64
X = torch.tensor([-1.2, -0.8, 0.3, 1.9, 2.4], dtype=F64)
PI = torch.tensor([0.4, 0.6], dtype=F64)
C = torch.tensor([-1.0, 1.5], dtype=F64)
SIGMA = 0.7


@pytest.fixture(autouse=True)
def _fresh_param_store() -> None:
    pyro.clear_param_store()


def shared_shift_mixture() -> tuple[genppl.Model, genppl.Guide]:
    """mu ~ N(0, 1); z_i ~ Cat(PI); x_i ~ N(mu + C[z_i], SIGMA). Guide q(mu) = N(m, s); the
    z_i are summed out (the guide does not propose them)."""
    m = genppl.Model("shared_shift")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        m.latent("z", lambda: dist.Categorical(PI))
        m.observed("x", lambda mu, z: dist.Normal(mu + C[z], SIGMA))
    m.to(dtype=F64)
    g = m.guide()
    g.param("m", torch.tensor(0.1, dtype=F64))
    g.param("s", torch.tensor(0.5, dtype=F64), constraint=dist.constraints.positive)
    g.latent("mu", lambda m, s: dist.Normal(m, s))
    return m, g


def shared_shift_log_evidence(x: torch.Tensor) -> float:
    """Sum over every assignment z of P(z) N(x; C[z], SIGMA^2 I + 1 1^T) (mu integrated)."""
    n = len(x)
    cov = SIGMA ** 2 * torch.eye(n, dtype=F64) + torch.ones(n, n, dtype=F64)
    terms = [float(PI[list(z)].log().sum()
                   + dist.MultivariateNormal(C[list(z)], cov).log_prob(x))
             for z in itertools.product(range(2), repeat=n)]
    return float(torch.logsumexp(torch.tensor(terms, dtype=F64), 0))


def local_shift_mixture(subsample_size: int | None = None) -> tuple[genppl.Model, genppl.Guide]:
    """Per item: u_i ~ N(0, 1), z_i ~ Cat(PI), x_i ~ N(u_i + C[z_i], SIGMA); amortised guide
    q(u_i | x_i) = N(a x_i + b, s); z_i summed out."""
    m = genppl.Model("local_shift")
    with m.plate("data", subsample_size=subsample_size):
        m.latent("u", lambda: dist.Normal(torch.tensor(0.0), 1.0))
        m.latent("z", lambda: dist.Categorical(PI))
        m.observed("x", lambda u, z: dist.Normal(u + C[z], SIGMA))
    m.to(dtype=F64)
    g = m.guide()
    g.param("a", torch.tensor(0.5, dtype=F64))
    g.param("b", torch.tensor(0.0, dtype=F64))
    g.param("s", torch.tensor(0.9, dtype=F64), constraint=dist.constraints.positive)
    g.latent("u", lambda x, a, b, s: dist.Normal(a * x + b, s))
    return m, g


def local_shift_log_evidence(x: torch.Tensor) -> torch.Tensor:
    """log p(x_i) = log sum_k PI_k N(x_i; C_k, sqrt(1 + SIGMA^2)), per item."""
    scale = math.sqrt(1 + SIGMA ** 2)
    return torch.logsumexp(PI.log() + dist.Normal(C, scale).log_prob(x[:, None]), -1)


# ----------------------------------------------------------------------- enumerated latents
def test_a_log_weight_sums_the_enumerated_latents_out_exactly() -> None:
    """With a point-mass guide at mu = 0.3, log q = 0 and the log-weight is exactly
    log p(mu) + sum_i log sum_k PI_k N(x_i; mu + C_k, SIGMA)."""
    m, _ = shared_shift_mixture()
    g = m.guide("delta")
    g.latent("mu", lambda: dist.Delta(torch.tensor(0.3, dtype=F64)))
    prep = prepare(m, {"x": X})
    w = log_weights(prep.program, g.pyro_guide, prep.data, 4, max_plate_nesting=1)
    mu = 0.3
    expected = float(dist.Normal(0.0, 1.0).log_prob(torch.tensor(mu, dtype=F64))
                     + torch.logsumexp(PI.log() + dist.Normal(mu + C, SIGMA).log_prob(X[:, None]),
                                       -1).sum())
    assert torch.allclose(w, torch.full((4,), expected, dtype=F64), atol=1e-10, rtol=0)


def test_iwae_with_summed_out_latents_lies_below_log_p_and_reaches_it() -> None:
    m, g = shared_shift_mixture()
    log_p = shared_shift_log_evidence(X)
    ev = evaluate(m, g, {"x": X}, num_particles=4000, iwae=5000, batch=900, seed=0)
    assert ev.iwae is not None and ev.iwae_se is not None and ev.iwae_se < 0.02
    # q(mu) = N(0.1, 0.5) is off the posterior: the ELBO is well below log p
    assert ev.elbo + 4 * ev.elbo_se < ev.iwae < log_p + 4 * ev.iwae_se
    assert ev.iwae == pytest.approx(log_p, abs=max(4 * ev.iwae_se, 0.01))
    # E[IWAE-k] from disjoint groups of k weights rises with k towards log p
    prep = prepare(m, {"x": X})
    pyro.set_rng_seed(1)
    w = log_weights(prep.program, g.pyro_guide, prep.data, 30_000, max_plate_nesting=1)
    means = []
    for k in (1, 3, 10):
        groups = torch.logsumexp(w.reshape(-1, k), 1) - math.log(k)
        means.append((float(groups.mean()), float(groups.std()) / len(groups) ** 0.5))
    for (lo, lo_se), (hi, hi_se) in itertools.pairwise(means):
        assert hi - lo > 3 * math.hypot(lo_se, hi_se)
    assert means[-1][0] < log_p + 3 * means[-1][1]


def test_the_elbo_with_summed_out_latents_is_trace_enum_elbos() -> None:
    m, g = shared_shift_mixture()
    ev = evaluate(m, g, {"x": X}, num_particles=20_000, batch=5000, seed=0)
    pyro.set_rng_seed(1)
    prep = prepare(m, {"x": X})
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=20_000, vectorize_particles=True)
    with torch.no_grad():
        theirs = -float(elbo.loss(prep.program, g.pyro_guide, **prep.data))
    # independent estimates of one expectation: same spread, so sqrt(2) standard errors
    assert theirs == pytest.approx(ev.elbo, abs=4 * math.sqrt(2) * ev.elbo_se)


# ----------------------------------------------------------------------- per item
def test_per_item_iwae_with_summed_out_latents_bounds_each_items_evidence() -> None:
    m, g = local_shift_mixture()
    log_p = local_shift_log_evidence(X)
    ev = evaluate(m, g, {"x": X}, num_particles=2000, iwae=5000, batch=700, items="data",
                  seed=0)
    assert ev.iwae_items is not None and ev.iwae_items_se is not None
    assert ev.elbo_items is not None and ev.iwae_items.shape == (len(X),)
    assert ev.iwae == pytest.approx(float(ev.iwae_items.sum()), abs=1e-12)
    assert ev.elbo == pytest.approx(float(ev.elbo_items.sum()), abs=1e-9)
    se = ev.iwae_items_se
    assert bool((se < 0.02).all()), se
    assert bool((ev.iwae_items < log_p + 4 * se).all()), (ev.iwae_items, log_p)
    assert bool((ev.iwae_items > log_p - 4 * se - 2e-3).all()), (ev.iwae_items, log_p)
    # the guide is Gaussian and each posterior a two-bump mixture: the ELBO is below
    assert bool((ev.elbo_items < ev.iwae_items - 0.01).all())


@pytest.mark.parametrize("subsample_size", [None, 2])
def test_per_item_bounds_of_the_exact_posterior_are_each_items_log_evidence(
        subsample_size: int | None) -> None:
    """u_i ~ N(0, 1), x_i ~ N(u_i, 1), q(u_i | x_i) = N(x_i / 2, 1 / sqrt 2): every weight
    is p(x_i) = N(x_i; 0, sqrt 2), so ELBO and IWAE equal it per item to rounding, in
    batches of 3 for k = 10 (a last batch of 1). A subsampled plate is evaluated in full."""
    m = genppl.Model("local_normal")
    with m.plate("data", subsample_size=subsample_size):
        m.latent("u", lambda: dist.Normal(torch.tensor(0.0), 1.0))
        m.observed("x", lambda u: dist.Normal(u, 1.0))
    m.to(dtype=F64)
    g = m.guide()
    g.latent("u", lambda x: dist.Normal(x / 2, 0.5 ** 0.5))
    ev = evaluate(m, g, {"x": X}, num_particles=7, iwae=10, batch=3, items="data", seed=0)
    log_p = dist.Normal(torch.zeros((), dtype=F64), torch.tensor(2.0, dtype=F64).sqrt()
                        ).log_prob(X)
    assert ev.iwae_items is not None and ev.elbo_items is not None
    assert torch.allclose(ev.iwae_items, log_p, atol=1e-10, rtol=0)
    assert torch.allclose(ev.elbo_items, log_p, atol=1e-10, rtol=0)
    assert ev.iwae == pytest.approx(float(log_p.sum()), abs=1e-10)
    assert m.plates["data"].subsample_size == subsample_size  # the declaration is put back


def test_per_item_bounds_refuse_a_latent_outside_the_items_plate() -> None:
    m, g = shared_shift_mixture()
    with pytest.raises(genppl.ModelError, match="latent 'mu' is outside that plate"):
        evaluate(m, g, {"x": X}, num_particles=3, items="data")
    with pytest.raises(genppl.ModelError, match="not a plate"):
        evaluate(m, g, {"x": X}, num_particles=3, items="dta")


def test_a_site_outside_the_items_plate_counts_once_in_the_total() -> None:
    """A global observed y ~ N(shift, 1) beside the per-item mixture: the items' bounds do not
    see it, and the total is their sum plus log N(y; shift, 1), exactly."""
    m = genppl.Model("local_shift_and_global")
    m.param("shift", torch.tensor(0.2, dtype=F64))
    m.observed("y", lambda shift: dist.Normal(shift, 1.0))
    with m.plate("data"):
        m.latent("u", lambda: dist.Normal(torch.tensor(0.0), 1.0))
        m.latent("z", lambda: dist.Categorical(PI))
        m.observed("x", lambda u, z: dist.Normal(u + C[z], SIGMA))
    m.to(dtype=F64)
    g = m.guide()
    g.latent("u", lambda x: dist.Normal(x / 2, 0.9))
    y = torch.tensor(0.7, dtype=F64)
    ev = evaluate(m, g, {"x": X, "y": y}, num_particles=500, iwae=2000, items="data", seed=0)
    assert ev.iwae_items is not None and ev.iwae_items_se is not None
    log_py = float(dist.Normal(torch.tensor(0.2, dtype=F64), 1.0).log_prob(y))
    assert ev.iwae == pytest.approx(float(ev.iwae_items.sum()) + log_py, abs=1e-10)
    log_p = local_shift_log_evidence(X)
    assert bool((ev.iwae_items < log_p + 4 * ev.iwae_items_se).all())
    assert bool((ev.iwae_items > log_p - 4 * ev.iwae_items_se - 2e-3).all())

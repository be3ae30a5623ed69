"""``engine="ais"``: annealed importance sampling against closed-form log evidence.

Oracles: conjugate models whose marginal likelihood is known exactly -- Normal-Normal with a
known variance (a multivariate normal density of the data), Beta-Bernoulli (a ratio of Beta
functions), Gamma-Poisson (a negative-binomial-type product) and, per item of a plate of
50, a Normal-Normal whose items each have a closed form. The tolerance is the method's own:
its delta-method standard error (3 of them), or the distribution of the items' z-scores.
"""

from __future__ import annotations

import itertools
import math

import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl import ModelError
from genppl.ais import summarise, temperatures
from genppl.ais.schedules import SCHEDULES

pytestmark = pytest.mark.unit

F64, F32 = torch.float64, torch.float32
FAST = {"num_temperatures": 100, "num_chains": 64, "leapfrog_steps": 5, "progress": False}


def normal_normal(dtype: torch.dtype, prior_scale: float = 2.0) -> genppl.Model:
    """mu ~ N(0, prior_scale); x_i ~ N(mu, 1)."""
    m = genppl.Model("normal_normal")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), prior_scale))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    return m.to(dtype=dtype)


def normal_normal_log_evidence(x: torch.Tensor, prior_scale: float) -> float:
    """x ~ N(0, I + prior_scale^2 11^T), mu integrated out."""
    x = x.double()
    n = len(x)
    cov = torch.eye(n, dtype=F64) + prior_scale ** 2 * torch.ones(n, n, dtype=F64)
    return float(dist.MultivariateNormal(torch.zeros(n, dtype=F64), cov).log_prob(x))


def beta_bernoulli(dtype: torch.dtype) -> genppl.Model:
    m = genppl.Model("beta_bernoulli")
    m.latent("p", lambda: dist.Beta(torch.tensor(2.0), 3.0))
    with m.plate("flips"):
        m.observed("x", lambda p: dist.Bernoulli(p))
    return m.to(dtype=dtype)


def beta_bernoulli_log_evidence(x: torch.Tensor, a: float = 2.0, b: float = 3.0) -> float:
    """log B(a + k, b + n - k) - log B(a, b)."""
    k, n = float(x.sum()), len(x)

    def log_beta(u: float, v: float) -> float:
        return math.lgamma(u) + math.lgamma(v) - math.lgamma(u + v)

    return log_beta(a + k, b + n - k) - log_beta(a, b)


def gamma_poisson(dtype: torch.dtype) -> genppl.Model:
    m = genppl.Model("gamma_poisson")
    m.latent("rate", lambda: dist.Gamma(torch.tensor(3.0), 2.0))
    with m.plate("counts"):
        m.observed("x", lambda rate: dist.Poisson(rate))
    return m.to(dtype=dtype)


def gamma_poisson_log_evidence(x: torch.Tensor, a: float = 3.0, b: float = 2.0) -> float:
    """a log b - lgamma(a) + lgamma(a + S) - (a + S) log(b + n) - sum lgamma(x_i + 1)."""
    s, n = float(x.sum()), len(x)
    return (a * math.log(b) - math.lgamma(a) + math.lgamma(a + s) - (a + s) * math.log(b + n)
            - sum(math.lgamma(float(v) + 1) for v in x))


def per_item_normal(dtype: torch.dtype) -> genppl.Model:
    """z_i ~ N(0, 1) per item; three readings x_ij ~ N(z_i, 0.5) each (a nested plate)."""
    m = genppl.Model("per_item_normal")
    with m.plate("items"):
        m.latent("z", lambda: dist.Normal(torch.tensor(0.0), 1.0))
        with m.plate("readings"):
            m.observed("x", lambda z: dist.Normal(z, 0.5))
    return m.to(dtype=dtype)


def per_item_log_evidence(x: torch.Tensor) -> torch.Tensor:
    """Each item's readings ~ N(0, 0.25 I + 11^T)."""
    k = x.shape[1]
    cov = 0.25 * torch.eye(k, dtype=F64) + torch.ones(k, k, dtype=F64)
    return dist.MultivariateNormal(torch.zeros(k, dtype=F64), cov).log_prob(x.double())


def _data(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"normal": torch.tensor([0.5, 1.5, 2.0, 1.0, 3.0], dtype=dtype),
            "bernoulli": torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 1], dtype=dtype),
            "poisson": torch.tensor([2.0, 0, 3, 1, 4, 2], dtype=dtype),
            "items": (torch.randn(50, 1, generator=gen)
                      + 0.5 * torch.randn(50, 3, generator=gen)).to(dtype)}


# ------------------------------------------------------------------ conjugate models
CONJUGATE = {"normal": (normal_normal, lambda x: normal_normal_log_evidence(x, 2.0)),
             "bernoulli": (beta_bernoulli, beta_bernoulli_log_evidence),
             "poisson": (gamma_poisson, gamma_poisson_log_evidence)}


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("case", ["normal", "bernoulli", "poisson"])
def test_the_log_evidence_of_a_conjugate_model_is_within_three_standard_errors(
        case: str, dtype: torch.dtype) -> None:
    x = _data(dtype)[case]
    make, log_evidence = CONJUGATE[case]
    model, truth = make(dtype), log_evidence(x)
    post = genppl.infer(model, {"x": x}, engine="ais", seed=1, **FAST)
    assert post.engine == "ais" and isinstance(post.log_evidence, float)
    stderr = post.info["stderr"]
    assert 0 < stderr < 0.2
    assert abs(post.log_evidence - truth) < 3 * stderr
    assert post.info["log_weights"].dtype == dtype
    assert 1 < post.info["ess"] <= FAST["num_chains"]


@pytest.mark.parametrize("dtype", [F64, F32])
def test_per_item_estimates_match_each_items_evidence(dtype: torch.dtype) -> None:
    x = _data(dtype)["items"]
    truth = per_item_log_evidence(x)
    post = genppl.infer(per_item_normal(dtype), {"x": x}, engine="ais", per="items", seed=2,
                        **FAST)
    per, se = post.info["log_evidence_per"].double(), post.info["stderr_per"].double()
    assert per.shape == se.shape == post.info["ess_per"].shape == (50,)
    z = (per - truth) / se
    # the z-scores of 50 independent items: centred, of unit spread, none extreme
    assert abs(float(z.mean())) < 3 / math.sqrt(50)
    assert 0.5 < float(z.std()) < 1.5
    assert float(z.abs().max()) < 4
    assert post.log_evidence == pytest.approx(float(per.sum()), abs=1e-3)
    assert abs(post.log_evidence - float(truth.sum())) < 3 * post.info["stderr"]


def test_the_estimate_tightens_as_temperatures_are_added() -> None:
    """A posterior 15 times narrower than the prior: ten temperatures leave the weights
    degenerate, a thousand do not. The standard error falls, and so does the bias of one
    chain's log weight, E[log w] - log p(x) (minus the KL divergence between the forward and
    the backward annealing paths, measured over the chains, which bounds the bias of log
    mean w from below)."""
    x = torch.linspace(1.0, 3.0, 20, dtype=F64)
    truth = normal_normal_log_evidence(x, 3.0)
    runs = {t: genppl.infer(normal_normal(F64, 3.0), {"x": x}, engine="ais", seed=3,
                            num_temperatures=t, num_chains=32, leapfrog_steps=5,
                            progress=False) for t in (10, 1000)}
    coarse, fine = runs[10], runs[1000]
    assert fine.info["stderr"] < coarse.info["stderr"] / 3
    gap = {t: float(r.info["log_weights"].mean()) - truth for t, r in runs.items()}
    assert gap[10] < gap[1000] < 0 and abs(gap[1000]) < abs(gap[10]) / 10
    assert abs(fine.log_evidence - truth) < 3 * fine.info["stderr"]
    assert fine.info["ess"] > 2 * coarse.info["ess"]


def test_a_simplex_latent_anneals_through_its_stick_breaking_map() -> None:
    """Dirichlet-Categorical: log Gamma(A) - log Gamma(A + n) + sum_k log Gamma(alpha_k + n_k)
    - log Gamma(alpha_k); the simplex is reached by stick-breaking, whose log Jacobian has an
    event dimension of its own."""
    alpha = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    m = genppl.Model("dirichlet_categorical")
    m.latent("p", lambda: dist.Dirichlet(alpha))
    with m.plate("draws"):
        m.observed("x", lambda p: dist.Categorical(p))
    m.to(dtype=F64)
    x = torch.tensor([0, 1, 1, 2, 1, 0, 1, 1])
    n = torch.bincount(x, minlength=3).double()
    truth = float(torch.lgamma(alpha.sum()) - torch.lgamma(alpha.sum() + len(x))
                  + (torch.lgamma(alpha + n) - torch.lgamma(alpha)).sum())
    post = genppl.infer(m, {"x": x}, engine="ais", seed=1, **FAST)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]


def test_a_support_set_by_a_parent_is_mapped_at_the_parents_value() -> None:
    """a ~ Gamma(2, 1), y ~ Uniform(0, a), x_i ~ N(y, 0.3): y's marginal prior is
    Exponential(1) (the integral of a e^-a / a over a > y), so log p(x) is a
    one-dimensional integral, done here on a fine grid."""
    m = genppl.Model("uniform_below_gamma")
    m.latent("a", lambda: dist.Gamma(torch.tensor(2.0), 1.0))
    m.latent("y", lambda a: dist.Uniform(torch.zeros(()), a))
    with m.plate("data"):
        m.observed("x", lambda y: dist.Normal(y, 0.3))
    m.to(dtype=F64)
    x = torch.tensor([0.8, 1.1, 0.6], dtype=F64)
    y = torch.linspace(0, 20, 200_001, dtype=F64)[1:]
    integrand = -y + dist.Normal(y[:, None], 0.3).log_prob(x).sum(-1)
    truth = float(torch.logsumexp(integrand, 0) + math.log(20 / 200_000))
    post = genppl.infer(m, {"x": x}, engine="ais", seed=0, **FAST)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]


def test_a_chain_of_latents_anneals_to_the_kalman_filters_evidence() -> None:
    """A local-level model: its log evidence exactly from the exact engine's Kalman filter;
    AIS anneals the chain's steps as sites of their own."""
    m = genppl.Model("level")
    with m.chain("t"):
        m.latent("level", lambda level_prev: dist.Normal(level_prev, 0.5),
                 init=lambda: dist.Normal(torch.tensor(0.0), 2.0))
        m.observed("y", lambda level: dist.Normal(level, 1.0))
    m.to(dtype=F64)
    y = torch.tensor([0.1, 0.4, 0.2, 1.0, 1.3, 0.9, 1.5, 2.0], dtype=F64)
    truth = genppl.infer(m, {"y": y}, engine="exact").log_evidence
    assert truth is not None
    post = genppl.infer(m, {"y": y}, engine="ais", seed=0, **FAST)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]


# ------------------------------------------------------------------ seeds
def test_a_seed_repeats_the_estimate_and_no_seed_draws_afresh() -> None:
    x = _data(F64)["normal"]
    small = {**FAST, "num_temperatures": 10}
    first, again = (genppl.infer(normal_normal(F64), {"x": x}, engine="ais", seed=5, **small)
                    for _ in range(2))
    assert first.log_evidence == again.log_evidence
    assert torch.equal(first.info["log_weights"], again.info["log_weights"])
    one, two = (genppl.infer(normal_normal(F64), {"x": x}, engine="ais", **small)
                for _ in range(2))
    assert one.log_evidence != two.log_evidence


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(("option", "value"), [
    ("num_temperatures", 0), ("num_chains", 0), ("leapfrog_steps", 0), ("step_size", 0.0),
    ("target_accept_prob", 1.0), ("schedule", "cosine"), ("per", "plates")])
def test_a_bad_option_is_refused_by_name(option: str, value: object) -> None:
    with pytest.raises(ModelError, match=option):
        genppl.infer(normal_normal(F64), {"x": _data(F64)["normal"]}, engine="ais",
                     progress=False, **{option: value})


def test_a_latent_outside_the_per_plate_is_refused_naming_it() -> None:
    with pytest.raises(ModelError, match=r"latent 'mu' .* outside plate 'data'"):
        genppl.infer(normal_normal(F64), {"x": _data(F64)["normal"]}, engine="ais",
                     per="data", progress=False)


def test_a_model_without_latents_is_refused() -> None:
    m = genppl.Model("fixed")
    with m.plate("data"):
        m.observed("x", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with pytest.raises(ModelError, match="no continuous latents for engine 'ais'"):
        genppl.infer(m.to(dtype=F64), {"x": _data(F64)["normal"]}, engine="ais",
                     progress=False)


def test_a_model_of_finite_latents_alone_is_sent_to_the_exact_engine() -> None:
    m = genppl.Model("coin_choice")
    m.latent("c", lambda: dist.Bernoulli(torch.tensor(0.3)))
    with m.plate("data"):
        m.observed("x", lambda c: dist.Normal(2.0 * c, 1.0))
    with pytest.raises(ModelError, match=r"no continuous latents.*engine=.exact.*gibbs"):
        genppl.infer(m.to(dtype=F64), {"x": _data(F64)["normal"]}, engine="ais",
                     progress=False)


def test_a_continuous_latent_below_a_finite_one_is_refused_naming_it() -> None:
    m = genppl.Model("switch")
    m.latent("c", lambda: dist.Bernoulli(torch.tensor(0.3)))
    m.latent("mu", lambda c: dist.Normal(2.0 * c, 1.0))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    with pytest.raises(ModelError, match=r"continuous latent .mu.*depends on a finite.*"
                                         r"finite='gibbs'"):
        genppl.infer(m.to(dtype=F64), {"x": _data(F64)["normal"]}, engine="ais",
                     progress=False)


# ------------------------------------------------------------------ finite latents summed out
PI = torch.tensor([0.4, 0.6], dtype=F64)
SHIFT = torch.tensor([-1.0, 1.5], dtype=F64)
SIGMA = 0.7


def shared_shift_mixture(dtype: torch.dtype = F64) -> genppl.Model:
    """mu ~ N(0, 1); z_i ~ Cat(PI); x_i ~ N(mu + SHIFT[z_i], SIGMA)."""
    pi, shift = PI.to(dtype), SHIFT.to(dtype)
    m = genppl.Model("shared_shift")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        m.latent("z", lambda: dist.Categorical(pi))
        m.observed("x", lambda mu, z: dist.Normal(mu + shift[z], SIGMA))
    return m.to(dtype=dtype)


def local_shift_mixture() -> genppl.Model:
    """Per item: u_i ~ N(0, 1), z_i ~ Cat(PI), x_i ~ N(u_i + SHIFT[z_i], SIGMA)."""
    m = genppl.Model("local_shift")
    with m.plate("data"):
        m.latent("u", lambda: dist.Normal(torch.tensor(0.0), 1.0))
        m.latent("z", lambda: dist.Categorical(PI))
        m.observed("x", lambda u, z: dist.Normal(u + SHIFT[z], SIGMA))
    return m.to(dtype=F64)


def test_finite_latents_are_summed_out_exactly_around_a_global_latent() -> None:
    """Brute force: the sum over all 2^5 assignments z of P(z) N(x; SHIFT[z], SIGMA^2 I +
    1 1^T), mu integrated out."""
    x = torch.tensor([-1.2, -0.8, 0.3, 1.9, 2.4], dtype=F64)
    cov = SIGMA ** 2 * torch.eye(5, dtype=F64) + torch.ones(5, 5, dtype=F64)
    terms = torch.stack([PI[list(z)].log().sum()
                         + dist.MultivariateNormal(SHIFT[list(z)], cov).log_prob(x)
                         for z in itertools.product(range(2), repeat=5)])
    truth = float(torch.logsumexp(terms, 0))
    post = genppl.infer(shared_shift_mixture(), {"x": x}, engine="ais", seed=0, **FAST)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]


def test_finite_latents_are_summed_out_per_item() -> None:
    """Per item: log sum_k PI_k N(x_i; SHIFT_k, sqrt(1 + SIGMA^2))."""
    x = torch.linspace(-3.0, 3.0, 40, dtype=F64)
    truth = torch.logsumexp(PI.log() + dist.Normal(SHIFT, math.sqrt(1 + SIGMA ** 2))
                            .log_prob(x[:, None]), -1)
    post = genppl.infer(local_shift_mixture(), {"x": x}, engine="ais", per="data", seed=0,
                        **FAST)
    z = (post.info["log_evidence_per"] - truth) / post.info["stderr_per"]
    assert abs(float(z.mean())) < 3 / math.sqrt(40)
    assert float(z.abs().max()) < 4


# ------------------------------------------------------------------ finite latents by Gibbs
def _shared_shift_truth(x: torch.Tensor) -> float:
    """Brute force over all 2^n assignments z of P(z) N(x; SHIFT[z], SIGMA^2 I + 1 1^T)."""
    n = len(x)
    cov = SIGMA ** 2 * torch.eye(n, dtype=F64) + torch.ones(n, n, dtype=F64)
    terms = torch.stack([PI[list(z)].log().sum()
                         + dist.MultivariateNormal(SHIFT[list(z)], cov).log_prob(x.double())
                         for z in itertools.product(range(2), repeat=n)])
    return float(torch.logsumexp(terms, 0))


@pytest.mark.parametrize("dtype", [F64, F32])
def test_finite_latents_moved_by_gibbs_reach_the_brute_force_evidence(
        dtype: torch.dtype) -> None:
    x = torch.tensor([-1.2, -0.8, 0.3, 1.9, 2.4], dtype=dtype)
    post = genppl.infer(shared_shift_mixture(dtype), {"x": x}, engine="ais",
                        finite="gibbs", seed=0, **FAST)
    assert abs(post.log_evidence - _shared_shift_truth(x)) < 3 * post.info["stderr"]
    assert post.info["log_weights"].dtype == dtype
    summed = genppl.infer(shared_shift_mixture(dtype), {"x": x}, engine="ais", seed=0,
                          **FAST)
    # summing out is the Rao-Blackwellised path: never noisier by much
    assert summed.info["stderr"] < 2 * post.info["stderr"]


def test_gibbs_per_item_matches_each_items_evidence() -> None:
    x = torch.linspace(-3.0, 3.0, 40, dtype=F64)
    truth = torch.logsumexp(PI.log() + dist.Normal(SHIFT, math.sqrt(1 + SIGMA ** 2))
                            .log_prob(x[:, None]), -1)
    post = genppl.infer(local_shift_mixture(), {"x": x}, engine="ais", per="data",
                        finite="gibbs", seed=0, **FAST)
    z = (post.info["log_evidence_per"] - truth) / post.info["stderr_per"]
    assert abs(float(z.mean())) < 3 / math.sqrt(40)
    assert float(z.abs().max()) < 4


def switch_model() -> genppl.Model:
    """c ~ Bernoulli(0.3); mu ~ N(2 c, 1) (a continuous latent below a finite one);
    x_i ~ N(mu, 1)."""
    m = genppl.Model("switch")
    m.latent("c", lambda: dist.Bernoulli(torch.tensor(0.3)))
    m.latent("mu", lambda c: dist.Normal(2.0 * c, 1.0))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    return m.to(dtype=F64)


def test_gibbs_anneals_a_continuous_latent_below_a_finite_one() -> None:
    """p(x) = 0.7 N(x; 0, I + 11^T) + 0.3 N(x; 2, I + 11^T), which summing out refuses."""
    x = torch.tensor([1.5, 2.5, 1.0, 3.0], dtype=F64)
    cov = torch.eye(4, dtype=F64) + torch.ones(4, 4, dtype=F64)
    truth = float(torch.logsumexp(torch.stack([
        math.log(0.7) + dist.MultivariateNormal(torch.zeros(4, dtype=F64), cov).log_prob(x),
        math.log(0.3) + dist.MultivariateNormal(torch.full((4,), 2.0, dtype=F64), cov)
        .log_prob(x)]), 0))
    post = genppl.infer(switch_model(), {"x": x}, engine="ais", finite="gibbs", seed=0,
                        **FAST)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]
    reverse = genppl.infer(switch_model(), {"x": x}, engine="ais", finite="gibbs", seed=1,
                           reverse_from={"c": torch.ones(()), "mu": x.mean()}, **FAST)
    assert reverse.info["bound"] == "upper"
    assert reverse.log_evidence > truth - 3 * reverse.info["stderr"]


def test_a_model_of_finite_latents_alone_anneals_by_gibbs_alone() -> None:
    """c ~ Bernoulli(0.3); x_i ~ N(2 c, 1): no HMC, only Gibbs; log p(x) in closed form."""
    m = genppl.Model("coin_choice")
    m.latent("c", lambda: dist.Bernoulli(torch.tensor(0.3)))
    with m.plate("data"):
        m.observed("x", lambda c: dist.Normal(2.0 * c, 1.0))
    x = _data(F64)["normal"]
    truth = float(torch.logsumexp(torch.stack([
        math.log(0.7) + dist.Normal(0.0, 1.0).log_prob(x).sum(),
        math.log(0.3) + dist.Normal(2.0, 1.0).log_prob(x).sum()]), 0))
    post = genppl.infer(m.to(dtype=F64), {"x": x}, engine="ais", finite="gibbs", seed=0,
                        **FAST)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]


CODE_PROBS = torch.tensor([0.2, 0.3, 0.5], dtype=F64)


def coded_shift(per_item: bool) -> genppl.Model:
    """codes ~ Cat(CODE_PROBS)^3 (one finite latent with an event dimension: Pyro does not
    enumerate it); mu ~ N(0, 1); x ~ N(mu + sum(codes) / 2, 1) -- the codes global, or one
    set per item."""
    m = genppl.Model("coded_shift")
    codes = lambda: dist.Categorical(CODE_PROBS).expand([3]).to_event(1)  # noqa: E731
    if not per_item:
        m.latent("codes", codes)
        m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        if per_item:
            m.latent("codes", codes)
            m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
        m.observed("x", lambda mu, codes: dist.Normal(mu + codes.sum(-1) / 2, 1.0))
    return m.to(dtype=F64)


def test_a_finite_latent_with_event_dims_moves_coordinate_by_coordinate() -> None:
    """Brute force over the 27 code vectors: sum_c P(c) N(x; s(c) 1, I + 1 1^T), s(c) the
    codes' half-sum; and per item, with codes and mu of each item its own."""
    x = torch.tensor([1.2, 0.4, 2.1, 1.6], dtype=F64)
    cov = torch.eye(4, dtype=F64) + torch.ones(4, 4, dtype=F64)
    grid = list(itertools.product(range(3), repeat=3))
    truth = float(torch.logsumexp(torch.stack([
        CODE_PROBS[list(c)].log().sum() + dist.MultivariateNormal(
            torch.full((4,), sum(c) / 2, dtype=F64), cov).log_prob(x) for c in grid]), 0))
    post = genppl.infer(coded_shift(False), {"x": x}, engine="ais", finite="gibbs", seed=0,
                        **FAST)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]
    with pytest.raises(ModelError, match=r"'codes' .*not enumerated.*pass finite='gibbs'"):
        genppl.infer(coded_shift(False), {"x": x}, engine="ais", **FAST)
    per = genppl.infer(coded_shift(True), {"x": x}, engine="ais", finite="gibbs",
                       per="data", seed=0, **FAST)
    each = torch.logsumexp(torch.stack([
        CODE_PROBS[list(c)].log().sum() + dist.Normal(sum(c) / 2, math.sqrt(2.0)).log_prob(x)
        for c in grid]), 0)
    z = (per.info["log_evidence_per"] - each) / per.info["stderr_per"]
    assert float(z.abs().max()) < 4


def test_a_finite_latent_of_one_state_stays_put_under_gibbs() -> None:
    """c ~ Categorical([1]) (one state, so nothing to draw); mu ~ N(0 c, 2); x_i ~ N(mu, 1):
    the evidence is the Normal-Normal one."""
    m = genppl.Model("one_state")
    m.latent("c", lambda: dist.Categorical(torch.ones(1)))
    m.latent("mu", lambda c: dist.Normal(0.0 * c, 2.0))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    x = _data(F64)["normal"]
    post = genppl.infer(m.to(dtype=F64), {"x": x}, engine="ais", finite="gibbs", seed=0,
                        **FAST)
    assert abs(post.log_evidence - normal_normal_log_evidence(x, 2.0)) < 3 * post.info["stderr"]


def test_gibbs_draws_follow_the_tempered_conditional() -> None:
    """One Gibbs draw of z_i at b = 0.5, 4,000 chains: the frequencies of each state match
    P(z_i = k) N(x_i; mu + SHIFT_k, SIGMA)^0.5, normalised, within 4 binomial errors."""
    from genppl.ais.gibbs import gibbs_sweep
    from genppl.ais.hmc import evaluate
    from genppl.ais.target import TemperedTarget
    from genppl.tabulation.prepared import prepare

    model = local_shift_mixture()
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=F64)
    prep = prepare(model, {"x": x})
    target = TemperedTarget(model, prep.program, prep.data, prep.continuous, summed=[],
                            nesting=prep.max_plate_nesting, num_chains=4000, items=None,
                            finite=prep.enumerated)
    torch.manual_seed(0)
    values, finite = target.draw()
    point = evaluate(target, values, 0.5, finite)
    drawn = gibbs_sweep(target, point, 0.5)["z"].reshape(4000, 3)
    u = torch.as_tensor(point.values["u"]).reshape(4000, 3)
    logits = PI.log() + 0.5 * dist.Normal(u[..., None] + SHIFT, SIGMA).log_prob(x[:, None])
    expected = logits.softmax(-1)[..., 1].mean(0)  # P(z_i = 1), averaged over the chains
    observed = (drawn == 1).double().mean(0)
    error = (expected * (1 - expected) / 4000).sqrt()
    assert float(((observed - expected).abs() / error).max()) < 4


def test_finite_and_guide_options_are_checked() -> None:
    x = _data(F64)["normal"]
    with pytest.raises(ModelError, match="finite='sideways'; pass 'sum' or 'gibbs'"):
        genppl.infer(normal_normal(F64), {"x": x}, engine="ais", finite="sideways", **FAST)
    model = shared_shift_mixture()
    g = model.guide()
    g.latent("mu", lambda: dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with pytest.raises(ModelError, match="with finite='gibbs' the path starts from the prior"):
        genppl.infer(model, {"x": x}, engine="ais", finite="gibbs", guide=g, **FAST)


# ------------------------------------------------------------------ parts
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_schedule_rises_from_zero_to_one(schedule: str) -> None:
    betas = temperatures(schedule, 50)
    assert len(betas) == 51 and betas[0] == 0.0 and betas[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(betas))
    assert temperatures(schedule, 1) == (0.0, 1.0)


def test_the_sigmoid_schedule_crowds_both_ends() -> None:
    betas = temperatures("sigmoid", 100)
    steps = [b - a for a, b in itertools.pairwise(betas)]
    assert steps[0] < steps[50] and steps[-1] < steps[50]


def test_the_weights_summary_matches_its_definitions() -> None:
    log_w = torch.randn(40, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    summary = summarise(log_w)
    w = log_w.exp()
    assert torch.allclose(summary.log_mean, w.mean(0).log())
    assert torch.allclose(summary.ess, w.sum(0) ** 2 / (w ** 2).sum(0))
    delta = (w.var(0, unbiased=False) / 40).sqrt() / w.mean(0)
    assert torch.allclose(summary.stderr, delta)
    equal = summarise(torch.zeros(8, dtype=F64))
    assert float(equal.ess) == pytest.approx(8) and float(equal.stderr) < 1e-6


# ------------------------------------------------------------------ reverse AIS (BDMC)
def test_forward_and_reverse_annealing_bracket_the_log_evidence() -> None:
    """Bidirectional Monte Carlo (Grosse et al. 2015) on data simulated from the model,
    reverse chains started from exact posterior draws (the conjugate posterior). Each
    chain's log weight bounds log p(x) in expectation -- from below forwards, from above
    backwards -- so their means over 64 chains bracket it; the sandwich narrows as
    temperatures are added, and both estimates then agree with log p(x) within their
    standard errors."""
    gen = torch.Generator().manual_seed(0)
    mu = 3.0 * torch.randn((), generator=gen, dtype=F64)
    x = mu + torch.randn(20, generator=gen, dtype=F64)
    truth = normal_normal_log_evidence(x, 3.0)
    precision = 1 / 9 + 20
    draws = x.sum() / precision + precision ** -0.5 * torch.randn(64, generator=gen, dtype=F64)
    width = {}
    for t in (10, 300):
        run = {"num_temperatures": t, "num_chains": 64, "leapfrog_steps": 5, "seed": 4,
               "progress": False}
        forward = genppl.infer(normal_normal(F64, 3.0), {"x": x}, engine="ais", **run)
        reverse = genppl.infer(normal_normal(F64, 3.0), {"x": x}, engine="ais",
                               reverse_from={"mu": draws}, **run)
        assert forward.info["bound"] == "lower" and reverse.info["bound"] == "upper"
        lower = float(forward.info["log_weights"].mean())
        upper = -float(reverse.info["log_weights"].mean())
        assert lower < truth < upper
        width[t] = upper - lower
        assert forward.log_evidence < truth + 3 * forward.info["stderr"]
        assert reverse.log_evidence > truth - 3 * reverse.info["stderr"]
    assert width[300] < width[10] / 5
    assert abs(forward.log_evidence - truth) < 3 * forward.info["stderr"]
    assert abs(reverse.log_evidence - truth) < 3 * reverse.info["stderr"]


def test_reverse_annealing_takes_one_draw_for_every_chain_and_refuses_a_bad_one() -> None:
    x = _data(F64)["normal"]
    one = genppl.infer(normal_normal(F64), {"x": x}, engine="ais", seed=0,
                       reverse_from={"mu": 1.2}, **{**FAST, "num_temperatures": 5})
    assert one.info["bound"] == "upper" and one.info["log_weights"].shape == (64,)
    with pytest.raises(ModelError, match=r"latent 'mu'.*shape \(3,\)"):
        genppl.infer(normal_normal(F64), {"x": x}, engine="ais",
                     reverse_from={"mu": torch.zeros(3)}, **FAST)
    with pytest.raises(ModelError, match="reverse_from names 'nu'"):
        genppl.infer(normal_normal(F64), {"x": x}, engine="ais", reverse_from={"nu": 0.0},
                     **FAST)


# ------------------------------------------------------------------ a neural decoder
def linear_decoder(dtype: torch.dtype) -> tuple[genppl.Model, torch.nn.Linear]:
    """Probabilistic PCA as a VAE's decoder: z_i ~ N(0, I_2) per image, x_i ~ N(W z_i + b,
    0.5^2 I_4), the decoder a torch module."""
    torch.manual_seed(0)
    decoder = torch.nn.Linear(2, 4)
    m = genppl.Model("linear_decoder")
    m.module("decoder", decoder)
    with m.plate("images"):
        m.latent("z", lambda: dist.Normal(torch.zeros(2), 1.0).to_event(1))
        m.observed("x", lambda z, decoder: dist.Normal(decoder(z), 0.5).to_event(1))
    return m.to(dtype=dtype), decoder


def ppca(dtype: torch.dtype) -> tuple[genppl.Model, torch.nn.Linear, torch.Tensor,
                                     torch.Tensor]:
    """The decoder, its module, 30 images it could have made (in ``dtype``) and each one's
    exact log p(x_i) = log N(x_i; b, W W^T + 0.25 I) in float64."""
    model, decoder = linear_decoder(dtype)
    w, b = decoder.weight.detach().double(), decoder.bias.detach().double()
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(30, 2, generator=gen, dtype=F64) @ w.T + b
         + 0.5 * torch.randn(30, 4, generator=gen, dtype=F64))
    truth = dist.MultivariateNormal(b, w @ w.T + 0.25 * torch.eye(4, dtype=F64)).log_prob(x)
    return model, decoder, x.to(dtype), truth


def test_per_image_estimates_of_a_neural_decoder_match_probabilistic_pca() -> None:
    """Each image's log p(x_i) = log N(x_i; b, W W^T + 0.25 I) exactly."""
    model, _, x, truth = ppca(F32)
    post = genppl.infer(model, {"x": x}, engine="ais", per="images", seed=0, **FAST)
    z = (post.info["log_evidence_per"].double() - truth) / post.info["stderr_per"].double()
    assert abs(float(z.mean())) < 3 / math.sqrt(30)
    assert float(z.abs().max()) < 4


# ------------------------------------------------------------------ starting from a guide
def ppca_posterior_guide(model: genppl.Model, decoder: torch.nn.Linear,
                         shrink: float = 1.0, widen: float = 1.0) -> genppl.Guide:
    """q(z | x) = the exact posterior of probabilistic PCA, N(M^-1 W^T (x - b) / s^2, M^-1)
    with M = W^T W / s^2 + I (s = 0.5), its mean scaled by ``shrink`` and its covariance by
    ``widen``^2 (1, 1: exact)."""
    w, b = decoder.weight.detach(), decoder.bias.detach()
    precision = w.T @ w / 0.25 + torch.eye(2, dtype=w.dtype)
    covariance = torch.linalg.inv(precision)
    g = model.guide()
    g.latent("z", lambda x: dist.MultivariateNormal(
        shrink * ((x - b) @ w / 0.25) @ covariance.T, widen ** 2 * covariance))
    return g


@pytest.mark.parametrize(("dtype", "tolerance"), [(F64, 1e-8), (F32, 2e-4)])
def test_from_the_exact_posterior_every_weight_is_the_evidence(dtype: torch.dtype,
                                                               tolerance: float) -> None:
    """Started at the exact posterior, every tempered target is that posterior times
    p(x)^b: the chains stay in it, and each log weight is log p(x) exactly, whatever the
    temperatures and moves."""
    model, decoder, x, truth = ppca(dtype)
    post = genppl.infer(model, {"x": x}, engine="ais", per="images", seed=0,
                        guide=ppca_posterior_guide(model, decoder),
                        **{**FAST, "num_temperatures": 7, "num_chains": 8})
    per = post.info["log_evidence_per"].double()
    assert float((per - truth).abs().max()) < tolerance * max(1.0, float(truth.abs().max()))
    spread = post.info["log_weights"].double().std(0)
    assert float(spread.max()) < tolerance * 10 * float(truth.abs().max())
    assert post.info["log_weights"].dtype == dtype


@pytest.mark.parametrize("dtype", [F64, F32])
def test_from_a_rough_guide_the_estimate_is_unbiased_and_beats_the_prior_start(
        dtype: torch.dtype) -> None:
    """A guide with its mean shrunk and its spread widened: still a lower bound within its
    standard errors of each image's log p(x); with few temperatures, far tighter than the
    path from the prior."""
    model, decoder, x, truth = ppca(dtype)
    run = {**FAST, "num_temperatures": 5, "num_chains": 64}
    guided = genppl.infer(model, {"x": x}, engine="ais", per="images", seed=3,
                          guide=ppca_posterior_guide(model, decoder, 0.8, 1.5), **run)
    prior = genppl.infer(model, {"x": x}, engine="ais", per="images", seed=3, **run)
    z = (guided.info["log_evidence_per"].double() - truth) / guided.info["stderr_per"].double()
    assert abs(float(z.mean())) < 3 / math.sqrt(30) and float(z.abs().max()) < 4
    gap = {name: float(truth.sum()) - post.log_evidence
           for name, post in (("guided", guided), ("prior", prior))}
    assert abs(gap["guided"]) < 3 * guided.info["stderr"]
    assert guided.info["stderr"] < prior.info["stderr"] / 2
    assert gap["prior"] > 0  # the prior's path, this short, is a loose lower bound


def test_an_svi_fit_starts_the_path_with_its_own_params() -> None:
    """A DSL guide fitted by svi, its params restored from the fit even after the store is
    cleared, starts a path whose estimate agrees with the conjugate evidence, its weights
    nearly equal (the fitted q is the exact posterior's family)."""
    import pyro

    x = _data(F64)["normal"]
    model = normal_normal(F64)
    g = model.guide()
    g.param("m", torch.tensor(0.0, dtype=F64))
    g.param("s", torch.tensor(1.0, dtype=F64), constraint=dist.constraints.positive)
    g.latent("mu", lambda m, s: dist.Normal(m, s))
    fit = genppl.fit(model, {"x": x}, engine="svi", guide=g, steps=1500, lr=0.02, seed=0,
                     progress=False)
    pyro.clear_param_store()
    post = genppl.infer(model, {"x": x}, engine="ais", guide=fit, seed=1,
                        **{**FAST, "num_temperatures": 10})
    truth = normal_normal_log_evidence(x, 2.0)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]
    assert post.info["ess"] > 0.9 * FAST["num_chains"]
    cold = genppl.infer(model, {"x": x}, engine="ais", seed=1,
                        **{**FAST, "num_temperatures": 10})
    assert post.info["stderr"] < cold.info["stderr"]


def test_an_autoguide_whose_density_needs_its_auxiliary_draw_is_refused() -> None:
    x = _data(F64)["normal"]
    model = normal_normal(F64)
    fit = genppl.fit(model, {"x": x}, engine="svi", guide="normal", steps=5, seed=0,
                     progress=False)
    with pytest.raises(ModelError, match="auxiliary site 'mu_unconstrained'"):
        genppl.infer(model, {"x": x}, engine="ais", guide=fit, **FAST)


def test_a_guide_that_does_not_fit_the_model_is_refused_by_name() -> None:
    x = _data(F64)["normal"]
    model = normal_normal(F64)
    stranger = normal_normal(F64).guide()
    stranger.latent("mu", lambda: dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with pytest.raises(ModelError, match="was declared for model"):
        genppl.infer(model, {"x": x}, engine="ais", guide=stranger, **FAST)
    two = genppl.Model("two")
    two.latent("a", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    two.latent("b", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    two.observed("x", lambda a, b: dist.Normal(a + b, 1.0))
    half = two.guide()
    half.latent("a", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with pytest.raises(ModelError, match=r"leaves out \['b'\]"):
        genppl.infer(two, {"x": torch.tensor(1.0)}, engine="ais", guide=half, **FAST)
    with pytest.raises(ModelError, match="option guide= must be"):
        genppl.infer(model, {"x": x}, engine="ais", guide="normal", **FAST)

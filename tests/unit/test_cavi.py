"""``engine="cavi"``: closed-form coordinate ascent against exact posteriors and evidences.

Oracles: conjugate posteriors and log evidences in closed form (one global latent: CAVI is
exact); brute-force log evidence by enumerating every assignment of small mixtures and a
Bayesian HMM, with the Dirichlet/Beta integrals in closed form (CAVI's ELBO must stay below
it); an independently written fixed-point iteration for the Normal-Gamma mean field
(Bishop 2006, section 10.1.3) and a quadrature of its evidence; monotone ELBO everywhere.
"""

from __future__ import annotations

import itertools
import math

import naive_bayes_counts
import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl.errors import ModelError

pytestmark = pytest.mark.unit

F64 = torch.float64


def _fit(model: genppl.Model, data: dict, **options) -> genppl.results.FitResult:
    return genppl.fit(model, data, engine="cavi", progress=False, **options)


def _monotone(elbos: list[float]) -> bool:
    return all(b >= a - 1e-10 * abs(a) for a, b in itertools.pairwise(elbos))


def _log_beta(a: torch.Tensor) -> torch.Tensor:
    """log of the multivariate Beta function over the last axis."""
    return torch.lgamma(a).sum(-1) - torch.lgamma(a.sum(-1))


# ----------------------------------------------------------------------- one global: exact
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_beta_bernoulli_is_exact(dtype: torch.dtype) -> None:
    m = genppl.Model("coin")
    m.latent("p", lambda: dist.Beta(2.0, 3.0))
    with m.plate("flips", 10):
        m.observed("x", lambda p: dist.Bernoulli(p))
    m.to(dtype=dtype)
    x = torch.tensor([1.0, 0, 1, 1, 1, 0, 1, 1, 0, 1], dtype=dtype)
    r = _fit(m, {"x": x}, init="prior")
    a, b = 2 + x.sum(), 3 + (1 - x).sum()
    tol = 1e-10 if dtype == F64 else 1e-4
    assert r.params["p.concentration1"].dtype == dtype
    assert float(r.params["p.concentration1"]) == pytest.approx(float(a), abs=tol)
    assert float(r.params["p.concentration0"]) == pytest.approx(float(b), abs=tol)
    log_evidence = float(_log_beta(torch.stack([a, b]).double())
                         - _log_beta(torch.tensor([2.0, 3.0], dtype=F64)))
    assert r.info["elbo"][-1] == pytest.approx(log_evidence, abs=tol * 10)


def test_normal_mean_with_known_noise_is_exact() -> None:
    m0, s0, sigma = 1.0, 2.0, 0.7
    m = genppl.Model("mean")
    m.latent("mu", lambda: dist.Normal(m0, s0))
    with m.plate("data", 8):
        m.observed("y", lambda mu: dist.Normal(mu, sigma))
    m.to(dtype=F64)
    y = torch.linspace(-1, 3, 8, dtype=F64) ** 2 / 3
    r = _fit(m, {"y": y}, init="prior")
    precision = s0 ** -2 + len(y) / sigma ** 2
    loc = (m0 / s0 ** 2 + y.sum() / sigma ** 2) / precision
    assert float(r.params["mu.loc"]) == pytest.approx(float(loc), abs=1e-12)
    assert float(r.params["mu.scale"]) == pytest.approx(precision ** -0.5, abs=1e-12)
    cov = sigma ** 2 * torch.eye(8, dtype=F64) + s0 ** 2
    evidence = dist.MultivariateNormal(torch.full((8,), m0, dtype=F64), cov).log_prob(y)
    assert r.info["elbo"][-1] == pytest.approx(float(evidence), abs=1e-10)


def test_dirichlet_categorical_with_a_batch_is_exact() -> None:
    """Two independent probability vectors (a batch), each read by its own group."""
    alpha = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    m = genppl.Model("dice")
    m.latent("probs", lambda: dist.Dirichlet(alpha).expand([2]).to_event(1))
    with m.plate("rolls", 9):
        m.input("group")
        m.observed("x", lambda probs, group: dist.Categorical(probs[group]))
    m.to(dtype=F64)
    x = torch.tensor([0, 2, 2, 1, 0, 2, 1, 1, 1])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    r = _fit(m, {"x": x, "group": group}, init="prior")
    counts = torch.zeros(2, 3, dtype=F64)
    counts.index_put_((group, x), torch.ones(9, dtype=F64), accumulate=True)
    assert torch.allclose(r.params["probs.concentration"], alpha + counts, atol=1e-12)
    evidence = (_log_beta(alpha + counts) - _log_beta(alpha)).sum()
    assert r.info["elbo"][-1] == pytest.approx(float(evidence), abs=1e-10)


# ----------------------------------------------------------------------- mean field
def _normal_gamma_model(m0: float, s0: float, a0: float, b0: float, n: int) -> genppl.Model:
    m = genppl.Model("normal_gamma")
    m.latent("mu", lambda: dist.Normal(m0, s0))
    m.latent("tau", lambda: dist.Gamma(a0, b0))
    with m.plate("data", n):
        m.observed("y", lambda mu, tau: dist.Normal(mu, tau.rsqrt()))
    return m.to(dtype=F64)


def test_normal_gamma_mean_field_matches_the_textbook_fixed_point() -> None:
    m0, s0, a0, b0 = 0.5, 3.0, 2.0, 1.5
    y = torch.tensor([1.2, 0.3, 2.2, 1.9, 0.8, 1.4, 2.6], dtype=F64)
    r = _fit(_normal_gamma_model(m0, s0, a0, b0, len(y)), {"y": y}, init="prior", tol=0.0,
             steps=200)
    # q(mu) = N(m, v), q(tau) = Gamma(a, b), iterated by hand.
    n, a = len(y), a0 + len(y) / 2
    e_tau = a0 / b0
    for _ in range(200):
        precision = s0 ** -2 + n * e_tau
        m = (m0 / s0 ** 2 + e_tau * y.sum()) / precision
        v = 1 / precision
        b = b0 + 0.5 * float(((y - m) ** 2).sum() + n * v)
        e_tau = a / b
    # The run stops once the ELBO stops changing in float64; near the optimum it is flat to
    # second order, so the parameters agree to about the square root of that.
    assert float(r.params["mu.loc"]) == pytest.approx(float(m), abs=1e-8)
    assert float(r.params["mu.scale"]) == pytest.approx(math.sqrt(v), abs=1e-8)
    assert float(r.params["tau.concentration"]) == pytest.approx(a, abs=1e-12)
    assert float(r.params["tau.rate"]) == pytest.approx(b, abs=1e-8)
    assert _monotone(r.info["elbo"])
    # The evidence by quadrature over (mu, log tau): the ELBO is below it, and close.
    mu = torch.linspace(-4, 6, 1201, dtype=F64)
    log_tau = torch.linspace(-6, 4, 1201, dtype=F64)
    tau = log_tau.exp()
    joint = (dist.Normal(m0, s0).log_prob(mu)[:, None]
             + dist.Gamma(a0, b0).log_prob(tau)[None, :] + log_tau[None, :]
             + dist.Normal(mu[:, None, None], tau.rsqrt()[None, :, None]).log_prob(y).sum(-1))
    cell = math.log(float((mu[1] - mu[0]) * (log_tau[1] - log_tau[0])))
    evidence = float(torch.logsumexp(joint.reshape(-1), 0)) + cell
    assert r.info["elbo"][-1] < evidence
    assert evidence - r.info["elbo"][-1] < 0.1


def _mixture_of_coins(n: int, k: int) -> genppl.Model:
    m = genppl.Model("coins")
    m.latent("w", lambda: dist.Dirichlet(torch.ones(k)))
    m.latent("p", lambda: dist.Beta(1.5, 1.5).expand([k]).to_event(1))
    with m.plate("flips", n):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z, p: dist.Bernoulli(p[..., z]))
    return m.to(dtype=F64)


def _coins_evidence(x: torch.Tensor, k: int) -> float:
    """log p(x): every assignment, the Dirichlet and Beta integrals in closed form."""
    terms = []
    for z in itertools.product(range(k), repeat=len(x)):
        zt = torch.tensor(z)
        counts = torch.bincount(zt, minlength=k).to(F64)
        term = _log_beta(1 + counts) - _log_beta(torch.ones(k, dtype=F64))
        for j in range(k):
            heads = float(x[zt == j].sum())
            tails = float((1 - x[zt == j]).sum())
            term = term + _log_beta(torch.tensor([1.5 + heads, 1.5 + tails], dtype=F64)) \
                - _log_beta(torch.tensor([1.5, 1.5], dtype=F64))
        terms.append(term)
    return float(torch.logsumexp(torch.stack(terms), 0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_elbo_is_monotone_and_below_the_exact_evidence(seed: int) -> None:
    x = torch.tensor([1.0, 1, 0, 1, 0, 0, 1, 1], dtype=F64)
    r = _fit(_mixture_of_coins(len(x), 2), {"x": x}, seed=seed)
    elbos = r.info["elbo"]
    assert _monotone(elbos) and len(elbos) > 2
    evidence = _coins_evidence(x, 2)
    assert elbos[-1] < evidence
    assert evidence - elbos[-1] < 1.5  # a mean-field gap, not a broken bound
    z = r.posterior.marginals["z"]
    assert z.shape == (8, 2) and torch.allclose(z.sum(-1), torch.ones(8, dtype=F64))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_local_inner_loop_keeps_the_elbo_monotone_and_below_the_evidence(seed: int) -> None:
    """``local=``: the weights updated with the assignments in an inner loop after each
    iteration (the E-step of variational EM): still coordinate ascent, still a bound."""
    x = torch.tensor([1.0, 1, 0, 1, 0, 0, 1, 1], dtype=F64)
    plain = _fit(_mixture_of_coins(len(x), 2), {"x": x}, seed=seed, tol=1e-12)
    inner = _fit(_mixture_of_coins(len(x), 2), {"x": x}, seed=seed, tol=1e-12, local=["w"],
                 local_steps=5, local_tol=0.0)
    elbos = inner.info["elbo"]
    assert _monotone(elbos) and elbos[-1] < _coins_evidence(x, 2)
    assert elbos[1] != plain.info["elbo"][1]  # the inner loop ran
    # No inner steps is the plain schedule, number for number.
    none = _fit(_mixture_of_coins(len(x), 2), {"x": x}, seed=seed, tol=1e-12, local=["w"],
                local_steps=0)
    assert none.info["elbo"] == plain.info["elbo"]


def test_local_latents_must_be_updated_continuous_latents() -> None:
    x = torch.tensor([1.0, 0, 1], dtype=F64)
    model = _mixture_of_coins(3, 2)
    with pytest.raises(ModelError, match=r"local= names 'z'.*Valid names"):
        _fit(model, {"x": x}, local=["z"])
    held = torch.distributions.Dirichlet(torch.ones(2, dtype=F64))
    with pytest.raises(ModelError, match=r"local= names 'w'"):
        _fit(model, {"x": x}, local=["w"], hold={"w": held})
    with pytest.raises(ModelError, match=r"local_steps must be >= 0"):
        _fit(model, {"x": x}, local=["w"], local_steps=-1)


def test_gaussian_mixture_separates_components_monotonically() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.randn(40, generator=g, dtype=F64) - 3,
                   0.5 * torch.randn(40, generator=g, dtype=F64) + 2])
    m = genppl.Model("gmm")
    m.latent("w", lambda: dist.Dirichlet(torch.ones(2)))
    m.latent("mu", lambda: dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    m.latent("tau", lambda: dist.Gamma(1.0, 1.0).expand([2]).to_event(1))
    with m.plate("data", 80):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("y", lambda z, mu, tau: dist.Normal(mu[..., z], tau[..., z].rsqrt()))
    m.to(dtype=F64)
    for seed in range(3):
        r = _fit(m, {"y": y}, seed=seed)
        assert _monotone(r.info["elbo"]) and r.info["converged"]
        loc = r.params["mu.loc"].sort().values
        assert torch.allclose(loc, torch.tensor([-3.0, 2.0], dtype=F64), atol=0.4)
        precision = r.info["q"]["tau"].mean[r.params["mu.loc"].argsort()]
        assert 0.4 < float(precision[0]) < 2.5 and float(precision[1]) > 2.0


def test_bayesian_hmm_is_structured_and_below_the_evidence() -> None:
    """Transition rows with Dirichlet priors: the local step is forward-backward over the
    whole state path (structured mean field), so q keeps the path's correlations."""
    t_len = 5
    m = genppl.Model("bayes_hmm")
    m.latent("trans", lambda: dist.Dirichlet(torch.ones(2)).expand([2]).to_event(1))
    m.latent("emit", lambda: dist.Beta(1.0, 1.0).expand([2]).to_event(1))
    with m.chain("t", t_len):
        m.latent("z", lambda z_prev, trans: dist.Categorical(trans[z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.5, 0.5])))
        m.observed("x", lambda z, emit: dist.Bernoulli(emit[z]))
    m.to(dtype=F64)
    x = torch.tensor([1.0, 1, 0, 0, 1], dtype=F64)
    r = _fit(m, {"x": x})
    assert _monotone(r.info["elbo"])
    terms = []
    for path in itertools.product(range(2), repeat=t_len):
        counts = torch.zeros(2, 2, dtype=F64)
        for a, b in itertools.pairwise(path):
            counts[a, b] += 1
        term = math.log(0.5) + (_log_beta(1 + counts) - _log_beta(torch.ones(2, dtype=F64))
                                ).sum()
        for j in range(2):
            heads = sum(float(x[i]) for i in range(t_len) if path[i] == j)
            tails = sum(1 - float(x[i]) for i in range(t_len) if path[i] == j)
            term = term + _log_beta(torch.tensor([1 + heads, 1 + tails], dtype=F64))
        terms.append(term)
    evidence = float(torch.logsumexp(torch.stack(terms), 0))
    assert r.info["elbo"][-1] < evidence < r.info["elbo"][-1] + 1.5
    assert r.posterior.marginals["z"].shape == (t_len, 2)


# ----------------------------------------------------------------------- errors
def test_a_non_conjugate_prior_is_refused_by_name() -> None:
    m = genppl.Model("bad")
    m.latent("p", lambda: dist.Uniform(0.0, 1.0))
    with m.plate("flips", 3):
        m.observed("x", lambda p: dist.Bernoulli(p))
    with pytest.raises(ModelError, match=r"'p'.*Uniform.*conjugate"):
        _fit(m, {"x": torch.ones(3)})


def test_a_transformed_read_is_refused_by_name() -> None:
    m = genppl.Model("bad")
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    with m.plate("data", 3):
        m.observed("y", lambda mu: dist.Normal(2 * mu, 1.0))
    with pytest.raises(ModelError, match=r"'y'.*'mu'.*loc is not an element"):
        _fit(m, {"y": torch.ones(3)})


def test_a_prior_read_through_the_wrong_attribute_is_refused() -> None:
    m = genppl.Model("bad")
    m.latent("s", lambda: dist.Normal(1.0, 0.1))
    with m.plate("data", 3):
        m.observed("y", lambda s: dist.Normal(0.0, s))
    with pytest.raises(ModelError, match=r"'y'.*'s'.*Normal prior is conjugate to a Normal "
                                         r"only as its loc"):
        _fit(m, {"y": torch.ones(3)})


def test_a_continuous_latent_in_a_plate_is_refused_with_the_batch_alternative() -> None:
    m = genppl.Model("bad")
    with m.plate("items", 3):
        m.latent("mu", lambda: dist.Normal(0.0, 1.0))
        m.observed("y", lambda mu: dist.Normal(mu, 1.0))
    with pytest.raises(ModelError, match=r"'mu'.*plate.*expand"):
        _fit(m, {"y": torch.ones(3)})


# ----------------------------------------------------------------------- options
def test_a_held_factor_stays_and_its_kl_counts() -> None:
    """hold=: the factor is not updated, and the ELBO is E_q[log p(y | mu)] - KL(q || p)."""
    m = genppl.Model("mean")
    m.latent("mu", lambda: dist.Normal(1.0, 2.0))
    with m.plate("data", 4):
        m.observed("y", lambda mu: dist.Normal(mu, 0.5))
    m.to(dtype=F64)
    y = torch.tensor([0.2, 1.1, 0.7, 1.6], dtype=F64)
    q = dist.Normal(torch.tensor(0.3, dtype=F64), torch.tensor(0.4, dtype=F64))
    r = _fit(m, {"y": y}, hold={"mu": q})
    assert float(r.params["mu.loc"]) == 0.3 and float(r.params["mu.scale"]) == 0.4
    loc, noise = torch.tensor(0.3, dtype=F64), torch.tensor(0.5, dtype=F64)
    expected_loglik = (dist.Normal(loc, noise).log_prob(y) - 0.5 * 0.4 ** 2 / 0.5 ** 2).sum()
    kl = torch.distributions.kl_divergence(q, dist.Normal(torch.tensor(1.0, dtype=F64), 2.0))
    assert r.info["elbo"][-1] == pytest.approx(float(expected_loglik - kl), abs=1e-12)
    with pytest.raises(ModelError, match=r"hold= names 'nu'.*Valid names: mu"):
        _fit(m, {"y": y}, hold={"nu": q})
    with pytest.raises(ModelError, match=r"'mu'.*must be a Normal"):
        _fit(m, {"y": y}, hold={"mu": dist.Gamma(1.0, 1.0)})


def test_the_callback_sees_every_iteration_and_can_stop() -> None:
    x = torch.tensor([1.0, 1, 0, 1, 0, 0, 1, 1], dtype=F64)
    seen: list[tuple[int, float]] = []

    def callback(iteration: int, elbo: float, q: dict) -> bool:
        seen.append((iteration, elbo))
        assert set(q) == {"w", "p"} and isinstance(q["p"], torch.distributions.Beta)
        return iteration == 4

    r = _fit(_mixture_of_coins(len(x), 2), {"x": x}, callback=callback, tol=0.0)
    assert [i for i, _ in seen] == [1, 2, 3, 4]
    assert [e for _, e in seen] == r.info["elbo"]


# ----------------------------------------------------------------------- count vectors
def _documents() -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.tensor([[3.0, 0, 1, 0], [2, 1, 0, 0], [0, 0, 2, 3], [0, 1, 1, 4],
                           [1, 0, 0, 1], [4, 1, 0, 0]], dtype=F64)
    return counts, counts.sum(-1)


def _log_coefficients(counts: torch.Tensor) -> torch.Tensor:
    return (torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)).sum()


def test_naive_bayes_with_labels_is_exact() -> None:
    """Word counts (``WordCounts``) read Dirichlet word distributions: with every class given,
    q is the exact posterior and the ELBO the closed-form evidence."""
    counts, length = _documents()
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    model = naive_bayes_counts.build(4, 2).to(dtype=F64)
    r = _fit(model, {"counts": counts, "length": length, "c": labels}, init="prior")
    per_class = torch.stack([counts[labels == k].sum(0) for k in range(2)])
    sizes = torch.bincount(labels, minlength=2).to(F64)
    torch.testing.assert_close(r.params["words.concentration"], 2 + per_class, rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(r.params["prior.concentration"], 1 + sizes, rtol=0, atol=1e-12)
    evidence = ((_log_beta(2 + per_class) - _log_beta(torch.full((4,), 2.0, dtype=F64))).sum()
                + _log_beta(1 + sizes) - _log_beta(torch.ones(2, dtype=F64))
                + _log_coefficients(counts))
    assert r.info["elbo"][-1] == pytest.approx(float(evidence), abs=1e-10)


def test_naive_bayes_without_labels_is_below_the_evidence() -> None:
    counts, length = _documents()
    model = naive_bayes_counts.build(4, 2).to(dtype=F64)
    r = _fit(model, {"counts": counts, "length": length}, seed=0)
    assert _monotone(r.info["elbo"])
    terms = []
    for z in itertools.product(range(2), repeat=len(counts)):
        labels = torch.tensor(z)
        per_class = torch.stack([counts[labels == k].sum(0) for k in range(2)])
        sizes = torch.bincount(labels, minlength=2).to(F64)
        terms.append((_log_beta(2 + per_class)
                      - _log_beta(torch.full((4,), 2.0, dtype=F64))).sum()
                     + _log_beta(1 + sizes) - _log_beta(torch.ones(2, dtype=F64)))
    evidence = float(torch.logsumexp(torch.stack(terms), 0) + _log_coefficients(counts))
    assert r.info["elbo"][-1] < evidence < r.info["elbo"][-1] + 2.0


def test_a_latent_read_through_a_deterministic_node_is_refused() -> None:
    m = genppl.Model("bad")
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    m.deterministic("twice", lambda mu: 2 * mu)
    with m.plate("data", 3):
        m.observed("y", lambda twice: dist.Normal(twice, 1.0))
    with pytest.raises(ModelError, match=r"deterministic node 'twice'.*reads latent 'mu'"):
        _fit(m, {"y": torch.ones(3)})


def test_a_latent_nothing_reads_is_refused() -> None:
    m = genppl.Model("bad")
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    m.latent("unused", lambda: dist.Gamma(1.0, 1.0))
    with m.plate("data", 3):
        m.observed("y", lambda mu: dist.Normal(mu, 1.0))
    with pytest.raises(ModelError, match=r"no random node reads latent 'unused'"):
        _fit(m, {"y": torch.ones(3)})


def test_infer_draws_from_q_beside_the_marginals() -> None:
    x = torch.tensor([1.0, 1, 0, 1, 0, 0, 1, 1], dtype=F64)
    post = genppl.infer(_mixture_of_coins(len(x), 2), {"x": x}, engine="cavi",
                        num_samples=4000, seed=0, progress=False)
    assert post.samples["p"].shape == (1, 4000, 2) and post.marginals["z"].shape == (8, 2)
    q = post.info["q"]["p"]
    # The draws are q's: their mean within 5 Monte Carlo standard errors of q's mean.
    error = (post["p"].mean(0) - q.mean).abs() / (q.stddev / math.sqrt(4000))
    assert float(error.max()) < 5 and post.elbo == post.info["elbo"][-1]

"""Pearson's crabs: MAP by SVI equals the maximum-likelihood estimate found independently
(L-BFGS on the hand-written mixture likelihood) and matches scikit-learn's EM; NUTS with the
assignments summed out gives a posterior around it and recovers the assignments."""

from __future__ import annotations

import itertools
import math

import pyro.distributions as dist
import pytest
import torch

from genppl.data import crabs
from genppl.gallery import RunConfig
from models_gallery import pearson_crabs

pytestmark = pytest.mark.gallery


def _mle_by_lbfgs(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Oracle: maximise the mixture log-likelihood directly, from the quartiles."""
    q = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=x.dtype))
    u = torch.tensor([0.0, float(q[0]), float(q[1]), math.log(x.std() / 2),
                      math.log(x.std() / 2)], dtype=x.dtype, requires_grad=True)

    def unpack(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = torch.softmax(torch.cat([u[:1], u.new_zeros(1)]), 0)
        return w, u[1:3], u[3:5].exp()

    opt = torch.optim.LBFGS([u], max_iter=5000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w, locs, scales = unpack(u)
        loss = -torch.logsumexp(dist.Normal(locs, scales).log_prob(x[:, None]) + w.log(), -1).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, locs, scales = (t.detach() for t in unpack(u))
    return {"weights": w, "locs": locs, "scales": scales}


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return crabs.ratios(torch.float64)


@pytest.fixture(scope="module")
def svi_params() -> dict[str, torch.Tensor]:
    params, _ = pearson_crabs.fit_params(RunConfig("svi", progress=False))
    return params


def test_embedded_table_matches_the_published_counts() -> None:
    assert sum(crabs.COUNTS) == 1000 and len(crabs.COUNTS) == 29
    assert crabs.UPPER_BOUNDS[0] == 0.5835 and crabs.UPPER_BOUNDS[-1] == 0.6915


# The likelihood is flat along a ridge trading weight for spread: SVI's decayed gradient steps
# stop within 1e-3 nats of the optimum, EM run to a tight tolerance within 1e-6 -- both far
# below anything visible in the parameters at the precision they are reported.
@pytest.mark.parametrize(("engine", "nats", "weights", "others"), [
    ("svi", 1e-3, 5e-3, 2e-4), ("em", 1e-6, 1e-3, 5e-5)])
def test_point_estimate_is_the_maximum_likelihood_estimate(
        x: torch.Tensor, svi_params: dict[str, torch.Tensor], engine: str, nats: float,
        weights: float, others: float) -> None:
    params = svi_params if engine == "svi" else \
        pearson_crabs.fit_params(RunConfig(engine, progress=False))[0]
    oracle = _mle_by_lbfgs(x)
    ll_oracle = pearson_crabs.mixture_log_likelihood(x, *oracle.values())
    ll = pearson_crabs.mixture_log_likelihood(x, *(params[k] for k in oracle))
    assert ll == pytest.approx(ll_oracle, abs=nats)
    torch.testing.assert_close(params["weights"], oracle["weights"], atol=weights, rtol=0)
    torch.testing.assert_close(params["locs"], oracle["locs"], atol=others, rtol=0)
    torch.testing.assert_close(params["scales"], oracle["scales"], atol=others, rtol=0)


def test_svi_matches_scikit_learn_em(x: torch.Tensor,
                                     svi_params: dict[str, torch.Tensor]) -> None:
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(2, tol=1e-10, max_iter=10_000, n_init=3, random_state=0)
    gm.fit(x.numpy()[:, None])
    order = gm.means_.ravel().argsort()
    em = {"weights": torch.tensor(gm.weights_[order]),
          "locs": torch.tensor(gm.means_.ravel()[order]),
          "scales": torch.tensor(gm.covariances_.ravel()[order]).sqrt()}
    ll_em = pearson_crabs.mixture_log_likelihood(x, *em.values())
    ll_svi = pearson_crabs.mixture_log_likelihood(x, *(svi_params[k] for k in em))
    # EM creeps along the flat ridge and stops early; genppl must reach at least its
    # likelihood, and the parameters must agree within how far EM is from converged.
    assert ll_svi >= ll_em - 1e-6
    torch.testing.assert_close(svi_params["weights"], em["weights"], atol=0.04, rtol=0)
    torch.testing.assert_close(svi_params["locs"], em["locs"], atol=2e-3, rtol=0)
    torch.testing.assert_close(svi_params["scales"], em["scales"], atol=1e-3, rtol=0)


@pytest.mark.parametrize("engine", ["nuts", "hmc_gibbs"])
def test_posterior_surrounds_the_mle_and_recovers_assignments(x: torch.Tensor,
                                                              engine: str) -> None:
    """nuts sums the assignments out and draws them afterwards; hmc_gibbs draws them by
    Gibbs sweeps between NUTS steps. Either way each draw's assignments follow the exact
    responsibilities under that draw's parameters."""
    params, posterior = pearson_crabs.fit_params(RunConfig(engine, steps=60, progress=False))
    assert posterior is not None
    oracle = _mle_by_lbfgs(x)
    for name in ("locs", "scales"):
        sd = posterior.std(name)
        # The MLE lies within a few posterior standard deviations of the posterior mean.
        assert bool(((params[name] - oracle[name]).abs() < 4 * sd + 1e-4).all()), name
    z = posterior.samples["z"]
    assert z.shape == (1, 60, 1000)
    # Given each draw of the parameters, z_n is Bernoulli(p_n) with p_n the exact
    # responsibility of component 2, independently over n and draws: a z-test on the total.
    w, locs, scales = (posterior[k] for k in ("weights", "locs", "scales"))
    logits = (dist.Normal(locs[:, None, :], scales[:, None, :]).log_prob(x[None, :, None])
              + w[:, None, :].log())
    p = torch.softmax(logits, -1)[..., 1]
    draws = z.reshape(p.shape).to(p.dtype)
    excess = float((draws - p).sum())
    assert abs(excess) < 4 * math.sqrt(float((p * (1 - p)).sum()))


def test_run_reports_fit_beside_pearson_and_writes_pictures(tmp_path) -> None:
    report = pearson_crabs.ENTRY.run(RunConfig("svi", steps=300, out=tmp_path, progress=False))
    assert "Pearson 1894" in report.table
    assert len(report.files) == 2
    for f in report.files:
        assert (tmp_path / f.split("/")[-1]).stat().st_size > 500


def test_variational_bayes_lands_on_the_likelihood_ridge(x: torch.Tensor) -> None:
    """cavi on the conjugate declaration: q's means lie on the MLE's ridge (weak priors), the
    ELBO never decreases, and the assignments' marginals follow the sorted components."""
    params, posterior = pearson_crabs.fit_params(RunConfig("cavi", steps=400, progress=False))
    oracle = _mle_by_lbfgs(x)
    ll_oracle = pearson_crabs.mixture_log_likelihood(x, *oracle.values())
    ll = pearson_crabs.mixture_log_likelihood(x, *(params[k] for k in oracle))
    assert ll_oracle - 0.5 < ll <= ll_oracle
    torch.testing.assert_close(params["locs"], oracle["locs"], atol=3e-3, rtol=0)
    torch.testing.assert_close(params["scales"], oracle["scales"], atol=1.5e-3, rtol=0)
    torch.testing.assert_close(params["weights"], oracle["weights"], atol=0.06, rtol=0)
    assert posterior is not None
    elbos = posterior.info["elbo"]
    assert len(elbos) > 10 and posterior.elbo == elbos[-1]
    assert all(b >= a - 1e-8 * abs(a) for a, b in itertools.pairwise(elbos))
    z = posterior.marginals["z"]
    assert float(z[x.argmin(), 0]) > 0.9 and float(z[x.argmax(), 1]) > 0.9

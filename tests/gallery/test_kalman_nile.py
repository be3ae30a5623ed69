"""The Nile local-level entry against statsmodels' ``UnobservedComponents("local level")``:
the exact log-likelihood and smoothed level at the same variances, the fitted variances
beside statsmodels' MLE, and a short NUTS run on the noise scales."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from genppl.gallery import RunConfig, RunReport
from models_gallery import kalman_nile

structural = pytest.importorskip("statsmodels.tsa.statespace.structural")

pytestmark = pytest.mark.gallery


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> RunReport:
    out = tmp_path_factory.mktemp("kalman_nile")
    return kalman_nile.ENTRY.run(RunConfig(engine="exact", out=out, progress=False))


def reference(burn: int) -> object:
    """statsmodels' model of the series (its default start is approximate-diffuse N(0, 10^6),
    the entry's ``level_0``); ``burn`` observations left out of its log-likelihood."""
    model = structural.UnobservedComponents(kalman_nile.load()[1].numpy().copy(),
                                            "local level")
    model.ssm.loglikelihood_burn = burn
    return model


def as_params(variances: dict[str, float]) -> np.ndarray:
    return np.array([variances["sigma2_obs"], variances["sigma2_level"]])  # its order


def test_log_likelihood_and_smoother_equal_statsmodels(report: RunReport) -> None:
    m = report.metrics
    params = as_params(m["mle"])
    ours = reference(burn=0)
    # 100 float64 terms of a few nats each: equal to rounding, far inside the 1e-6 asked.
    assert m["log_likelihood"] == pytest.approx(ours.loglike(params), abs=1e-9)
    assert m["statsmodels_log_likelihood"] == pytest.approx(m["log_likelihood"], abs=1e-9)
    smoothed = ours.smooth(params)
    np.testing.assert_allclose(m["smoothed_level"], smoothed.smoothed_state[0], rtol=1e-10)
    np.testing.assert_allclose(np.square(m["smoothed_level_sd"]),
                               smoothed.smoothed_state_cov[0, 0], rtol=1e-8)
    # statsmodels' default drops the first term: what is left is ours less log p(y_0).
    y0 = float(kalman_nile.load()[1][0])
    first = -0.5 * (math.log(2 * math.pi * (1e6 + m["mle"]["sigma2_obs"]))
                    + y0 ** 2 / (1e6 + m["mle"]["sigma2_obs"]))
    assert reference(burn=1).loglike(params) == pytest.approx(m["log_likelihood"] - first,
                                                              abs=1e-9)


def test_fitted_variances_are_statsmodels_mle(report: RunReport) -> None:
    m = report.metrics
    # Both maximise one objective (statsmodels' also drops the first observation's term,
    # whose dependence on sigma2_obs through 10^6 + sigma2_obs is negligible), but it is
    # flat at the top: 0.05 standard errors move the log-likelihood by ~1e-4, and
    # statsmodels' default quasi-Newton fit stops about 0.02 se (1%) from its optimum. So
    # the parameters agree to 0.05 se, and ours is at least as high on our objective.
    for key in ("sigma2_level", "sigma2_obs"):
        se = m["statsmodels_mle_se"][key]
        assert abs(m["mle"][key] - m["statsmodels_mle"][key]) < 0.05 * se, key
    ours = reference(burn=0)
    assert m["log_likelihood"] >= ours.loglike(as_params(m["statsmodels_mle"])) - 1e-9
    # and no nearby point is higher: the maximum, not merely a better point
    for key in ("sigma2_level", "sigma2_obs"):
        for step in (0.99, 1.01):
            moved = dict(m["mle"], **{key: m["mle"][key] * step})
            assert ours.loglike(as_params(moved)) < m["log_likelihood"]


def test_report_writes_its_files(report: RunReport) -> None:
    assert report.engine == "exact" and "statsmodels" in report.table
    assert len(report.files) == 2
    for f in report.files:
        assert Path(f).is_file() and Path(f).stat().st_size > 0


def test_short_nuts_run_gives_plausible_noise_scales() -> None:
    # 30 warm-up and 30 draws: a smoke run, so the bounds are wide -- several posterior sds
    # (about 11 for sigma_obs, 15 for sigma_level) around the MLE (123 and 38).
    draws = 30
    report = kalman_nile.ENTRY.run(RunConfig(engine="nuts", steps=draws, progress=False))
    post = report.metrics["posterior"]
    assert all(math.isfinite(v) for p in post.values() for v in p.values())
    assert 80 < post["sigma_obs"]["mean"] < 170
    assert 5 < post["sigma_level"]["mean"] < 110
    for p in post.values():
        assert 0 < p["q05"] < p["mean"] < p["q95"] and p["sd"] > 0
    level = np.array(report.metrics["posterior_level_mean"])
    assert level.shape == (100,) and np.isfinite(level).all()
    # the level drawn per posterior sample (FFBS) follows the smoothed level at the MLE
    assert np.abs(level - np.array(report.metrics["smoothed_level"])).max() < 100

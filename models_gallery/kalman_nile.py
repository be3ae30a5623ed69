"""The Nile's annual flow at Aswan, 1871-1970, as a local-level model: a Kalman filter.

A random walk ``level`` observed with noise (Durbin & Koopman 2012, ch. 2)::

    level_0 ~ N(0, 1000^2),  level_t ~ N(level_t-1, sigma_level),  volume_t ~ N(level_t, sigma_obs)

declared in the DSL as one chain. The chain is linear-Gaussian, so the engines marginalise
it exactly (``genppl.exact.gaussian``): ``exact`` gives log p(volume) by the Kalman filter
and the smoothed level (RTS) with its variance; ``nuts`` puts priors on the two noise scales
and samples them with the chain summed out by the filter, then draws the level per posterior
sample (FFBS). The start ``N(0, 10^6)`` is statsmodels' approximate-diffuse one, so the
log-likelihood is statsmodels' ``UnobservedComponents("local level")`` at the same
parameters -- once statsmodels is told to keep the first observation's term
(``loglikelihood_burn = 0``; it drops it by default under a diffuse start).

The noise variances are fitted by maximising that exact log-likelihood (L-BFGS on the log
variances, gradients through the filter) and compared with statsmodels' own MLE. The
smoothed level shows the series' known break: from about 1,100 before 1895 to about 850
after 1905 (the first Aswan dam was begun in 1899).
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import constraints

import genppl
from genppl.exact.gaussian import kalman_filter
from genppl.gallery import GalleryEntry, Report, engine_options
from genppl.tabulation.gaussian_chains import state_space

#: statsmodels' approximate-diffuse start: mean 0, variance 10^6.
INIT_SCALE = 1000.0
#: HalfNormal scale of both noise priors under nuts: weakly informative, above the series'
#: own spread (sd 169), so the data decide.
PRIOR_SCALE = 200.0
DRAWS = 300
SCALES = ("sigma_level", "sigma_obs")


def build(priors: bool = False) -> genppl.Model:
    """The local-level model; the noise scales are params (``exact``, fitted by maximum
    likelihood) or, with ``priors``, latents with HalfNormal priors (``nuts``)."""
    m = genppl.Model("kalman_nile")
    for name in SCALES:
        if priors:
            m.latent(name, lambda: dist.HalfNormal(PRIOR_SCALE))
        else:
            m.param(name, torch.tensor(100.0), constraint=constraints.positive)
    with m.chain("year"):
        m.latent("level", lambda level_prev, sigma_level: dist.Normal(level_prev, sigma_level),
                 init=lambda: dist.Normal(0.0, INIT_SCALE))
        m.observed("volume", lambda level, sigma_obs: dist.Normal(level, sigma_obs))
    return m


def load() -> tuple[torch.Tensor, torch.Tensor]:
    """``(years, volume)``: 1871..1970 and the annual flow (10^8 m^3), from statsmodels'
    datasets (shipped in its wheel; no network). The array is copied: statsmodels' is
    read-only, which torch warns about."""
    from statsmodels.datasets import nile

    frame = nile.load_pandas().data
    return (torch.tensor(frame["year"].to_numpy().copy()).long(),
            torch.tensor(frame["volume"].to_numpy().copy(), dtype=torch.float64))


def data() -> dict[str, Any]:
    return {"volume": load()[1]}


def log_likelihood(model: genppl.Model, volume: torch.Tensor, scales: dict[str, torch.Tensor]
                   ) -> torch.Tensor:
    """log p(volume) at the given noise scales, differentiable in them: the model's chain
    read as a state-space model (``state_space``) and run through the Kalman filter."""
    volume = volume.to(model.device, model.dtype)
    space = state_space(model, "year", scales, {"volume": volume}, len(volume))
    return kalman_filter(space.chain, space.y).log_likelihood


def fit_variances(model: genppl.Model, volume: torch.Tensor) -> dict[str, float]:
    """The maximum-likelihood noise variances ``sigma2_level``, ``sigma2_obs``: L-BFGS with a
    strong-Wolfe line search on the log variances (unconstrained, and of one scale, which
    the raw variances, 10^3 and 10^4, are not), from a third of the variance of the first
    differences each (which is 2 sigma2_obs + sigma2_level)."""
    start = torch.diff(volume).var() / 3
    log_var = start.log().repeat(2).to(model.device, model.dtype).requires_grad_()
    opt = torch.optim.LBFGS([log_var], max_iter=200, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        scales = dict(zip(SCALES, (0.5 * log_var).exp(), strict=True))
        loss = -log_likelihood(model, volume, scales)
        loss.backward()
        return loss

    opt.step(closure)
    variances = log_var.detach().exp().tolist()
    return {"sigma2_level": variances[0], "sigma2_obs": variances[1]}


def statsmodels_reference(volume: torch.Tensor, variances: dict[str, float]
                          ) -> dict[str, Any]:
    """statsmodels' local-level model on the same series: its log-likelihood at
    ``variances`` with every observation's term kept, and its own MLE with standard errors
    (default fit; its parameters are ordered observation noise, then level noise)."""
    import numpy as np
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    y = volume.cpu().numpy().copy()
    reference = UnobservedComponents(y, "local level")
    fitted = reference.fit(disp=False)
    reference.ssm.loglikelihood_burn = 0
    at_ours = reference.loglike(np.array([variances["sigma2_obs"], variances["sigma2_level"]]))
    return {"log_likelihood": float(at_ours),
            "mle": {"sigma2_obs": float(fitted.params[0]),
                    "sigma2_level": float(fitted.params[1])},
            "mle_se": {"sigma2_obs": float(fitted.bse[0]), "sigma2_level": float(fitted.bse[1])}}


def experiment(report: Report) -> None:
    config, engine = report.config, report.engine
    years, volume = load()
    model = report.build()
    variances = fit_variances(model, volume)
    fitted = {"sigma_level": math.sqrt(variances["sigma2_level"]),
              "sigma_obs": math.sqrt(variances["sigma2_obs"])}
    exact = genppl.infer(model, {"volume": volume}, engine="exact", params=fitted)
    smoothed_mean = exact.info["smoothed_mean"]["level"].cpu()
    smoothed_sd = exact.info["smoothed_var"]["level"].cpu().sqrt()
    ref = statsmodels_reference(volume, variances)
    log_lik = float(exact.log_evidence)  # type: ignore[arg-type]
    report.line(f"Nile, {years[0]}-{years[-1]} ({len(volume)} years), local level; "
                f"engine {engine}")
    report.row("log p(volume) at the MLE   genppl {log_likelihood:.10f}   statsmodels "
               "{statsmodels_log_likelihood:.10f}   "
               f"difference {log_lik - ref['log_likelihood']:.1e}",
               log_likelihood=log_lik, statsmodels_log_likelihood=ref["log_likelihood"])
    report.line("MLE            genppl       statsmodels  (se)       difference / se")
    for key in ("sigma2_level", "sigma2_obs"):
        ours, theirs, se = variances[key], ref["mle"][key], ref["mle_se"][key]
        report.line(f"  {key:<12} {ours:10.1f}   {theirs:10.1f}  ({se:6.1f})   "
                    f"{(ours - theirs) / se:+.4f}")
    for key, value in {"mle": variances, "statsmodels_mle": ref["mle"],
                       "statsmodels_mle_se": ref["mle_se"],
                       "smoothed_level": smoothed_mean.tolist(),
                       "smoothed_level_sd": smoothed_sd.tolist()}.items():
        report.metric(key, value)
    band = (smoothed_mean - 1.645 * smoothed_sd, smoothed_mean + 1.645 * smoothed_sd)
    if engine == "nuts":
        draws = config.steps or DRAWS
        posterior = genppl.infer(report.build(priors=True), {"volume": volume}, engine="nuts",
                                 warmup_steps=draws, checkpoint=config.checkpoint,
                                 **engine_options(engine, config, draws))
        level = posterior["level"].cpu()
        quantiles = torch.tensor([0.05, 0.95], dtype=level.dtype)
        band = tuple(torch.quantile(level, quantiles, dim=0))  # type: ignore[assignment]
        report.metric("posterior_level_mean", level.mean(0).tolist())
        report.line("posterior (nuts, the level summed out by the Kalman filter)")
        for name in SCALES:
            p = report.metric(("posterior", name), _describe(posterior[name].cpu()))
            report.line(f"  {name:<12} mean {p['mean']:7.2f}  sd {p['sd']:6.2f}  90% "
                        f"[{p['q05']:.2f}, {p['q95']:.2f}]   MLE {fitted[name]:.2f}")
        report.line(posterior.summary(max_rows=2))
    if config.out is not None:
        _plot(report, years, volume, smoothed_mean, band)


def _describe(draws: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(draws, torch.tensor([0.05, 0.95], dtype=draws.dtype))
    return {"mean": float(draws.mean()), "sd": float(draws.std()), "q05": float(q[0]),
            "q95": float(q[1])}


def _plot(report: Report, years: torch.Tensor, volume: torch.Tensor,
          smoothed: torch.Tensor, band: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The flow, the smoothed level at the MLE, and a 90% band: the smoothed level's own
    (exact) or the posterior draws' of the level (nuts, noise scales uncertain too)."""
    x = years.tolist()
    with report.figure("kalman_nile.png", figsize=(8, 4)) as (_, ax):
        ax.plot(x, volume.tolist(), "o", ms=3, color="0.4", label="annual flow")
        ax.plot(x, smoothed.tolist(), color="C0", label="smoothed level (MLE)")
        label = "90% band, smoothed" if report.engine == "exact" else "90% band, posterior draws"
        ax.fill_between(x, band[0].tolist(), band[1].tolist(), color="C0", alpha=0.25,
                        label=label)
        ax.set_xlabel("year")
        ax.set_ylabel("volume (10^8 m^3)")
        ax.set_title("Nile at Aswan: local-level model, Kalman smoother")
        ax.legend(fontsize=8)


ENTRY = GalleryEntry(
    name="kalman_nile",
    title="Nile flow 1871-1970: local-level model, Kalman filter and smoother, NUTS on the "
          "noise scales with the level summed out",
    build=build,
    data=data,
    engines=("exact", "nuts"),
    experiment=experiment,
    checkpoints=("nuts",),
)

"""Kalman filter and RTS smoother on a 10^5-step local-level series: genppl vs statsmodels.

The model is ``models_gallery/kalman_nile.py``'s, declared in the DSL (random-walk level,
noisy observations, start N(0, 10^6)), at Nile-like noise variances (level 1,600,
observation 14,400) on a series simulated from it. genppl's chain is read from the DSL once
(``state_space``, setup, not timed); timed are ``kalman_filter`` (log-likelihood) and
``kalman_filter`` + ``rts_smoother`` (smoothed means and variances of every step), float64,
on ``--device``. statsmodels (the baseline) runs ``UnobservedComponents("local level")``'s
``loglike`` and ``smooth`` at the same variances, with the same start (its default,
approximate-diffuse N(0, 10^6)) and every observation's term kept (``loglikelihood_burn =
0``). Answers are checked: the log-likelihood and the smoothed level must agree with
statsmodels' to 1e-6 relative (the case raises otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from genppl.exact.gaussian import kalman_filter, rts_smoother
from genppl.tabulation.gaussian_chains import state_space
from models_gallery import kalman_nile

STEPS, QUICK_STEPS = 100_000, 1_000
VARIANCES = {"sigma2_level": 1600.0, "sigma2_obs": 14400.0}
TASKS = ("log-likelihood", "smoother")
GENPPL, STATSMODELS = "genppl", "statsmodels"
F64 = torch.float64


def _label(task: str, impl: str) -> str:
    return f"{task} | {impl}"


def series(steps: int, seed: int) -> torch.Tensor:
    """A draw of the local-level model: level from 1,000, noise at ``VARIANCES``."""
    gen = torch.Generator().manual_seed(seed)
    walk = 1000 + torch.cumsum(VARIANCES["sigma2_level"] ** 0.5
                               * torch.randn(steps, generator=gen, dtype=F64), 0)
    return walk + VARIANCES["sigma2_obs"] ** 0.5 * torch.randn(steps, generator=gen, dtype=F64)


def _timed(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """The contender's run, also reporting its own seconds (for the per-task ratio)."""
    def run() -> dict[str, Any]:
        start = time.perf_counter()
        out = fn()
        return out | {"seconds": time.perf_counter() - start}
    return run


def contenders(config: BenchConfig) -> list[Contender]:
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    steps = QUICK_STEPS if config.quick else STEPS
    y = series(steps, config.seed)
    model = kalman_nile.build().to(config.device, F64)
    scales = {"sigma_level": VARIANCES["sigma2_level"] ** 0.5,
              "sigma_obs": VARIANCES["sigma2_obs"] ** 0.5}
    scales = {k: torch.tensor(v, dtype=F64, device=config.device) for k, v in scales.items()}
    space = state_space(model, "year", scales, {"volume": y.to(config.device)}, steps)
    reference = UnobservedComponents(y.numpy().copy(), "local level")
    reference.ssm.loglikelihood_burn = 0
    params = np.array([VARIANCES["sigma2_obs"], VARIANCES["sigma2_level"]])  # its order

    def genppl_loglik() -> dict[str, Any]:
        return {"log_likelihood": float(kalman_filter(space.chain, space.y).log_likelihood)}

    def genppl_smoother() -> dict[str, Any]:
        filtered = kalman_filter(space.chain, space.y)
        smoothed = rts_smoother(space.chain, filtered)
        return {"log_likelihood": float(filtered.log_likelihood),
                "level": smoothed.mean[:, 0].cpu().numpy(),
                "level_var": smoothed.cov[:, 0, 0].cpu().numpy()}

    def statsmodels_loglik() -> dict[str, Any]:
        return {"log_likelihood": float(reference.loglike(params))}

    def statsmodels_smoother() -> dict[str, Any]:
        result = reference.smooth(params)
        return {"log_likelihood": float(result.llf), "level": result.smoothed_state[0],
                "level_var": result.smoothed_state_cov[0, 0]}

    runs = {(TASKS[0], STATSMODELS): statsmodels_loglik, (TASKS[0], GENPPL): genppl_loglik,
            (TASKS[1], STATSMODELS): statsmodels_smoother, (TASKS[1], GENPPL): genppl_smoother}
    return [Contender(_label(*key), _timed(fn)) for key, fn in runs.items()]


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per row: speed-up over statsmodels on the same task, relative error of the
    log-likelihood and (smoother) largest relative error of the smoothed level and its
    variance, each against statsmodels'; past 1e-6 the case fails."""
    out = {}
    for name, r in results.items():
        task, _ = name.split(" | ")
        ref = results[_label(task, STATSMODELS)]
        row: dict[str, Any] = {"x_statsmodels": ref["seconds"] / r["seconds"]}
        errors = {"rel_error": abs(r["log_likelihood"] - ref["log_likelihood"])
                  / abs(ref["log_likelihood"])}
        if "level" in r:
            errors["level_rel_error"] = float(np.max(np.abs(r["level"] - ref["level"])
                                                     / np.abs(ref["level"])))
            errors["level_var_rel_error"] = float(np.max(np.abs(r["level_var"]
                                                                - ref["level_var"])
                                                         / ref["level_var"]))
        for key, value in errors.items():
            if not value < 1e-6:
                raise AssertionError(f"{name}: {key} = {value:.2e} against statsmodels, "
                                     "past 1e-6")
        out[name] = row | errors
    return out


def notes(results: dict[str, Any]) -> list[str]:
    steps = len(results[_label(TASKS[1], STATSMODELS)]["level"])
    return [f"{steps:,} steps, float64; noise variances level {VARIANCES['sigma2_level']:g}, "
            f"observation {VARIANCES['sigma2_obs']:g}; start N(0, 10^6) for both.",
            "genppl: kalman_filter and rts_smoother (parallel associative scans, scalar "
            "state by elementwise arithmetic) on the DSL model's chain, read once (not timed).",
            "statsmodels: UnobservedComponents('local level').loglike / .smooth (Cython "
            "filter; smooth also filters, and computes more than the smoothed moments: "
            "disturbances, their covariances), loglikelihood_burn = 0.",
            "x faster than statsmodels: statsmodels' seconds / the row's, same task."]


CASE = register(Case(
    name="kalman",
    description=f"Kalman filter log-likelihood and RTS smoother, local level, {STEPS:,} steps: "
                "genppl vs statsmodels",
    baseline=_label(TASKS[0], STATSMODELS),
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("x_statsmodels", "x faster than statsmodels", ".2f"),
             Column("rel_error", "log-lik rel. error", ".1e"),
             Column("level_rel_error", "level rel. error", ".1e"),
             Column("level_var_rel_error", "level var rel. error", ".1e")),
    notes=notes,
))

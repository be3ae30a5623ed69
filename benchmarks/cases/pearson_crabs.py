"""Pearson's crabs: genppl's ``em``, ``svi`` (MAP) and ``nuts`` against scikit-learn's EM.

All fit a two-component normal mixture to the same 1,000 crabs, in one run. EM run to
convergence (tolerance 1e-14) with five restarts is the reference maximum-likelihood estimate
(MLE): its time is the baseline and its parameters the yardstick for the others' errors.
genppl ``em`` runs once, from the quartiles, to the same tolerance (so its time is one
restart's against scikit-learn's five; the answer is the same optimum). The gallery
entry's priors are flat, so ``svi`` with a delta guide targets the same MLE; ``nuts``
reports posterior means, which differ from the MLE by the posterior's own asymmetry, so its
error measures that distance as much as any inaccuracy.
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.mixture import GaussianMixture

from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from genppl.data import crabs
from genppl.gallery import RunConfig
from models_gallery import pearson_crabs

SKLEARN = "sklearn GaussianMixture EM"
SVI = "genppl svi (MAP)"
GENPPL_EM = "genppl em"
NUTS = "genppl nuts (posterior mean)"
PARAMS = ("weights", "locs", "scales")
Params = dict[str, torch.Tensor]


def _sorted(params: Params) -> Params:
    """Components in increasing order of mean, so that the label order of a fit is moot."""
    order = torch.argsort(params["locs"])
    return {k: params[k].detach().to("cpu", torch.float64)[order] for k in PARAMS}


def contenders(config: BenchConfig) -> list[Contender]:
    x = crabs.ratios(torch.float64)  # the same 1,000 points for every contender
    x_np = x.numpy().reshape(-1, 1)
    # --quick is a smoke run of the case: short chains and few steps, numbers not to quote.
    svi_steps = 300 if config.quick else None  # None: the entry's own default
    nuts_draws = 20 if config.quick else None

    def em() -> Params:
        # tol is on the change of the mean log-likelihood per point. EM crawls along the flat
        # ridge between the weights and the spreads: at 1e-10 it stops ~5e-4 short in the
        # weights (log-likelihood 1e-5 below the optimum); at 1e-14 it converges (~1,600
        # iterations), so its answer is a yardstick for the others' errors.
        gm = GaussianMixture(n_components=2, covariance_type="full", tol=1e-14,
                             max_iter=100_000, n_init=5, reg_covar=1e-10,
                             random_state=config.seed).fit(x_np)
        return {"weights": torch.from_numpy(gm.weights_),
                "locs": torch.from_numpy(gm.means_[:, 0]),
                "scales": torch.from_numpy(gm.covariances_[:, 0, 0]).sqrt()}

    def run_config(engine: str, steps: int | None) -> RunConfig:
        return RunConfig(engine=engine, steps=steps, device=config.device,
                         dtype=torch.float64, seed=config.seed, progress=False)

    def genppl_em() -> Params:
        params, _ = pearson_crabs.fit_params(run_config("em", None))
        return _sorted(params)

    def svi() -> Params:
        params, _ = pearson_crabs.fit_params(run_config("svi", svi_steps))
        return _sorted(params)

    def nuts() -> Params:
        params, _ = pearson_crabs.fit_params(run_config("nuts", nuts_draws))
        return _sorted(params)

    # One NUTS chain already takes many times the others' repeats; it is timed once.
    return [Contender(SKLEARN, em), Contender(GENPPL_EM, genppl_em), Contender(SVI, svi),
            Contender(NUTS, nuts, repeats=1)]


def _loglik(params: Params) -> float:
    return pearson_crabs.mixture_log_likelihood(crabs.ratios(torch.float64),
                                                *(params[k] for k in PARAMS))


def _errors(params: Params, reference: Params) -> dict[str, float]:
    by_group = {k: float((params[k] - reference[k]).abs().max()) for k in PARAMS}
    return {"max_abs_param_error": max(by_group.values())} | {
        f"max_abs_error_{k}": v for k, v in by_group.items()}


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    mle = _sorted(results[SKLEARN])
    out = {}
    for name, params in results.items():
        params = _sorted(params)
        out[name] = {"log_likelihood": _loglik(params), **_errors(params, mle),
                     **{k: params[k].tolist() for k in PARAMS}}
    return out


def notes(results: dict[str, Any]) -> list[str]:
    mle = _sorted(results[SKLEARN])
    pearson = _sorted({k: torch.tensor(v, dtype=torch.float64)
                       for k, v in crabs.PEARSON_1894.items()})
    err = _errors(pearson, mle)["max_abs_param_error"]
    fmt = ", ".join(f"{k} {[round(v, 5) for v in mle[k].tolist()]}" for k in PARAMS)
    return [
        f"MLE (sklearn EM): {fmt}; log-likelihood {_loglik(mle):.3f}.",
        f"Pearson's 1894 moments, for reference: log-likelihood {_loglik(pearson):.3f}, "
        f"max abs error vs the MLE {err:.4f}.",
        "max abs error: largest absolute difference over the 6 parameters (weights, means, sds; "
        "components sorted by mean) from the sklearn MLE; per-group errors in the JSON.",
        "genppl nuts: posterior means, not an MLE; timed once (one chain of "
        "warm-up + draws, finite z summed out and recovered per draw).",
    ]


CASE = register(Case(
    name="pearson_crabs",
    description="two-component normal mixture of Weldon's 1,000 crabs: genppl em, svi and "
                "nuts vs scikit-learn EM",
    baseline=SKLEARN,
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("log_likelihood", "log-lik", ".3f"),
             Column("max_abs_param_error", "max abs error vs MLE", ".2e")),
    notes=notes,
))

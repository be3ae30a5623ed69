"""Pearson (1894): the first mixture model, fitted to Weldon's 1,000 Naples crabs.

Two normal components with unknown weights, means and standard deviations; each crab's
component ``z`` is a finite latent that every engine sums out exactly. Flat priors make the
one declaration serve maximum-likelihood fitting (``em``, which point-estimates the global
latents, and ``svi`` with a delta guide: the MAP is the MLE) and full Bayesian inference
(``nuts``). All start from the quartiles, so component 1 is the one with the smaller mean.

Variational Bayes (``cavi``) needs conjugate priors, so it runs on ``build(conjugate=True)``:
the same mixture with Normal priors on the means and Gamma priors on the precisions (each
spread is ``precision ** -0.5``), weak next to the data (prior sd 0.1 for the means, prior
spread about 0.02 worth two observations). It starts at random and orders the components by
their means; its table shows the means of ``q`` (spreads at the mean precision).
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch

import genppl
from genppl.data import crabs
from genppl.gallery import GalleryEntry, Report, RunConfig

#: Conjugate priors for ``cavi``: means ~ Normal(PRIOR_LOC, PRIOR_SD), precisions ~
#: Gamma(PRECISION_SHAPE, PRECISION_SHAPE * PRIOR_SPREAD ** 2) (prior mean 1 / PRIOR_SPREAD**2).
PRIOR_LOC, PRIOR_SD = 0.64, 0.1
PRIOR_SPREAD, PRECISION_SHAPE = 0.02, 2.0


def build(conjugate: bool = False) -> genppl.Model:
    if conjugate:
        return _conjugate()
    m = genppl.Model("pearson_crabs")
    # Flat priors on a box wide enough to hold every plausible value: the posterior is proper
    # (so NUTS is well posed) and its mode is the maximum-likelihood estimate, so MAP fitting
    # reproduces EM. The lower bound on the spreads, half a bin width, keeps a component from
    # collapsing onto one bin of this grouped data (where the likelihood is unbounded).
    m.latent("weights", lambda: dist.Dirichlet(torch.ones(2)))
    m.latent("locs", lambda: dist.Uniform(0.5, 0.8).expand([2]).to_event(1))
    m.latent("scales", lambda: dist.Uniform(crabs.BIN_WIDTH / 2, 0.1).expand([2]).to_event(1))
    with m.plate("crabs"):
        m.latent("z", lambda weights: dist.Categorical(weights))
        m.observed("ratio", lambda z, locs, scales: dist.Normal(locs[z], scales[z]))
    return m


def _conjugate() -> genppl.Model:
    m = genppl.Model("pearson_crabs")
    m.latent("weights", lambda: dist.Dirichlet(torch.ones(2)))
    m.latent("locs", lambda: dist.Normal(PRIOR_LOC, PRIOR_SD).expand([2]).to_event(1))
    m.latent("precisions", lambda: dist.Gamma(PRECISION_SHAPE, PRECISION_SHAPE
                                              * PRIOR_SPREAD ** 2).expand([2]).to_event(1))
    with m.plate("crabs"):
        m.latent("z", lambda weights: dist.Categorical(weights))
        m.observed("ratio", lambda z, locs, precisions: dist.Normal(locs[z],
                                                                     precisions[z].rsqrt()))
    return m


def data() -> dict[str, torch.Tensor]:
    return {"ratio": crabs.ratios()}


def initial_values(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Start where EM implementations start: components at the lower and upper quartiles,
    equal weights, a common spread. (Gradient methods started at the prior median can
    strand one component outside the data, a poor local optimum.)"""
    q = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=x.dtype))
    return {"weights": torch.full((2,), 0.5, dtype=x.dtype), "locs": q,
            "scales": x.std().expand(2) / 2}


def mixture_log_likelihood(x: torch.Tensor, weights: torch.Tensor, locs: torch.Tensor,
                           scales: torch.Tensor) -> float:
    """log p(x | θ) with the assignments summed out, for comparing fits on one scale."""
    comp = dist.Normal(locs, scales).log_prob(x[:, None]) + weights.log()
    return float(torch.logsumexp(comp, -1).sum())


def fit_params(config: RunConfig) -> tuple[dict[str, torch.Tensor], genppl.Posterior | None]:
    """Point estimates (em, svi: MAP) or posterior means (nuts with the assignments summed
    out; hmc_gibbs with them drawn by Gibbs sweeps) of weights, locs and scales."""
    model = build().to(config.device, config.dtype)
    observed = data()
    engine = ENTRY.check(config)
    if engine == "em":
        # Pearson's problem solved as Dempster, Laird & Rubin would: exact responsibilities,
        # closed-form updates; the flat priors make the MAP the MLE. EM crawls along the flat
        # ridge between weights and spreads, so it runs to a tight tolerance.
        steps = config.steps or 5000
        result = genppl.fit(model, observed, engine="em", steps=steps, tol=1e-14,
                            init=initial_values(observed["ratio"]), progress=config.progress,
                            **checkpointing(config, engine, steps))
        return result.params, None
    if engine == "svi":
        steps = config.steps or 2000
        # Full-batch MAP with the assignments summed out is a deterministic objective: a large
        # first step, decayed a thousandfold, walks the flat ridge between the weights and the
        # spreads to the same optimum as EM.
        result = genppl.fit(model, observed, engine="svi", guide="delta", steps=steps, lr=0.05,
                            lrd=0.001 ** (1 / steps), seed=config.seed, progress=config.progress,
                            init=initial_values(observed["ratio"]),
                            **checkpointing(config, engine, steps))
        guide = result.info["guide"]
        return {k: v.detach() for k, v in guide.median(**observed).items()}, None
    if engine == "cavi":  # (no checkpoints: it converges in seconds)
        model = build(conjugate=True).to(config.device, config.dtype)
        result = genppl.fit(model, observed, engine="cavi", steps=config.steps or 5000,
                            tol=1e-12, seed=config.seed, progress=config.progress)
        q = result.info["q"]
        order = q["locs"].mean.argsort()
        posterior = result.posterior
        assert posterior is not None
        posterior.marginals["z"] = posterior.marginals["z"][..., order]
        return {"weights": q["weights"].mean[order], "locs": q["locs"].mean[order],
                "scales": q["precisions"].mean[order].rsqrt()}, posterior
    draws = config.steps or 300
    posterior = genppl.infer(model, observed, engine=engine, num_samples=draws,
                             warmup_steps=draws, seed=config.seed, progress=config.progress,
                             init=initial_values(observed["ratio"]),
                             **checkpointing(config, engine, 2 * draws))
    return {k: posterior.mean(k) for k in ("weights", "locs", "scales")}, posterior


def checkpointing(config: RunConfig, engine: str, steps: int) -> dict[str, Any]:
    """The checkpoint options of a run of ``steps`` steps (none without ``--checkpoint``):
    about ten saves a run, and at least one every 10 EM iterations, 100 SVI steps or 20
    sampler steps (an EM iteration here costs tens of milliseconds, an SVI step a little
    more, a NUTS step up to a second), so that a killed run loses little and saving costs
    little next to the work."""
    if config.checkpoint is None:
        return {}
    most = {"em": 10, "svi": 100}.get(engine, 20)
    return {"checkpoint": config.checkpoint, "checkpoint_every": max(1, min(most, steps // 10))}


def experiment(report: Report) -> None:
    params, posterior = fit_params(report.config)
    x = crabs.ratios(report.config.dtype)
    loglik = mixture_log_likelihood(x, *(params[k].to(x) for k in ("weights", "locs", "scales")))
    pearson = {k: torch.tensor(v, dtype=x.dtype) for k, v in crabs.PEARSON_1894.items()}
    for k, v in params.items():
        report.metric(k, v.tolist())
    report.line("component   weight    mean      sd      | Pearson 1894: weight  mean     sd")
    for j in range(2):
        report.line(f"    {j + 1}       {float(params['weights'][j]):.4f}   "
                    f"{float(params['locs'][j]):.5f}  {float(params['scales'][j]):.5f} |"
                    f"               {float(pearson['weights'][j]):.4f}  "
                    f"{float(pearson['locs'][j]):.5f}  {float(pearson['scales'][j]):.5f}")
    report.row(f"log-likelihood: genppl {report.engine} "
               "{log_likelihood:.3f}   Pearson's moments {pearson_log_likelihood:.3f}",
               log_likelihood=loglik,
               pearson_log_likelihood=mixture_log_likelihood(x, pearson["weights"],
                                                             pearson["locs"], pearson["scales"]))
    if report.config.out is not None:
        with report.figure("pearson_crabs_fit.png", figsize=(7, 4)) as (_, ax):
            _draw_fit(ax, x, params, pearson)
    if posterior is not None:
        report.line(posterior.summary(max_rows=2))


def _draw_fit(ax: Any, x: torch.Tensor, params: dict[str, torch.Tensor],
              pearson: dict[str, torch.Tensor]) -> None:
    """The grouped data as a density histogram, each fit's mixture and its components."""
    mids = crabs.midpoints()
    density = [c / (len(x) * crabs.BIN_WIDTH) for c in crabs.COUNTS]
    grid = torch.linspace(0.57, 0.71, 400, dtype=x.dtype)
    ax.bar(mids, density, width=crabs.BIN_WIDTH,
           color="0.85", edgecolor="0.6", label="Weldon's 1,000 crabs")
    for label, p, style in (("genppl fit", params, "-"), ("Pearson 1894", pearson, "--")):
        comps = p["weights"][:, None] * dist.Normal(p["locs"][:, None], p["scales"][:, None]
                                                     ).log_prob(grid).exp()
        color = "C0" if style == "-" else "C3"
        ax.plot(grid.numpy(), comps.sum(0).numpy(), style, color=color, label=label)
        for c in comps:
            ax.plot(grid.numpy(), c.numpy(), style, color=color, alpha=0.4, lw=0.8)
    ax.set_xlabel("forehead breadth / body length")
    ax.set_ylabel("density")
    ax.set_title("Pearson's crabs: two-component normal mixture")
    ax.legend()


ENTRY = GalleryEntry(
    name="pearson_crabs",
    title="Pearson (1894): two-component normal mixture of Weldon's Naples crabs",
    build=build,
    data=data,
    engines=("em", "svi", "nuts", "hmc_gibbs", "cavi"),
    experiment=experiment,
    checkpoints=("em", "svi", "nuts", "hmc_gibbs"),
)

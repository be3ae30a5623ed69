"""genppl's AIS (``engine="ais"``, ``per="images"``) on a VAE's decoder against the same
annealing written by hand in torch, in the same run.

The model is ``models_gallery/vae_mnist.py``'s VAE (a 16-d latent per image, the 784-256
MLP decoder at its seeded initial weights: annealing costs the same for any weights), the
data the entry's 1,000 binarised MNIST test images (float32, on ``--device``). Both
contenders anneal ``CHAINS`` chains per image through the same sigmoid schedule of
``TEMPERATURES`` temperatures (``genppl.ais.temperatures``), from exact prior draws, with one
HMC transition of ``LEAPFROG`` leapfrog steps per intermediate temperature (unit mass, the
initial step size 0.1 per chain and image, adapted after each transition by Wu et al.'s
rule: running acceptance rate 0.9 old + 0.1 new, step times 1.02 above 0.65 and 0.98 below,
within [1e-4, 10]). The hand-written loop evaluates the tempered density and its gradient
at the start of every transition and after each leapfrog step, as genppl does; it keeps the
latents as one ``(chains, images, 16)`` tensor, where genppl runs the compiled model in a
plate of chains. Columns: each contender's total log-likelihood estimate over the images
(log mean w per image, summed) and its delta-method standard error; the two are independent
runs of one estimator, so they agree within their errors, not exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

import genppl
from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from genppl.ais import summarise, temperatures
from models_gallery import vae_mnist

TEMPERATURES, QUICK_TEMPERATURES = 20, 4
CHAINS = 4
LEAPFROG = 5
QUICK_IMAGES = 100
STEP_SIZE = 0.1
TARGET_ACCEPT, SLOWNESS, INCREASE, DECREASE = 0.65, 0.9, 1.02, 0.98
SMALLEST, LARGEST = 1e-4, 10.0
TORCH = "torch AIS loop (hand-written)"
GENPPL = "genppl.infer engine='ais', per='images'"


def torch_ais(decoder: nn.Module, pixels: torch.Tensor, betas: tuple[float, ...],
              chains: int, leapfrog: int) -> torch.Tensor:
    """AIS by hand: the ``(chains, images)`` log weights."""
    images, dim = len(pixels), vae_mnist.LATENT_DIM
    prior = dist.Normal(torch.zeros(dim, device=pixels.device), 1.0).to_event(1)

    def densities(z: torch.Tensor, beta: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p(x | z), the tempered log density and its gradient, each ``(chains,
        images)`` (the gradient ``(chains, images, dim)``)."""
        z = z.detach().requires_grad_()
        with torch.enable_grad():
            likelihood = dist.Bernoulli(logits=decoder(z)).to_event(1).log_prob(pixels)
            tempered = prior.log_prob(z) + beta * likelihood
            (gradient,) = torch.autograd.grad(tempered.sum(), z)
        return likelihood.detach(), tempered.detach(), gradient

    z = prior.sample((chains, images))
    likelihood = densities(z, 0.0)[0]
    log_weight = torch.zeros_like(likelihood)
    step = torch.full_like(likelihood, STEP_SIZE)
    rate = torch.full_like(likelihood, TARGET_ACCEPT)
    for t in range(1, len(betas)):
        log_weight = log_weight + (betas[t] - betas[t - 1]) * likelihood
        if t == len(betas) - 1:
            break
        beta, eps = betas[t], step[..., None]
        _, start_log_density, gradient = densities(z, beta)
        momentum = torch.randn_like(z)
        start_energy = -start_log_density + 0.5 * momentum.square().sum(-1)
        moved, p = z, momentum + 0.5 * eps * gradient
        for s in range(leapfrog):
            moved = moved + eps * p
            moved_likelihood, moved_log_density, gradient = densities(moved, beta)
            p = p + (0.5 if s == leapfrog - 1 else 1.0) * eps * gradient
        end_energy = -moved_log_density + 0.5 * p.square().sum(-1)
        accept = (start_energy - end_energy).nan_to_num(nan=-math.inf).clamp(max=0.0).exp()
        take = torch.rand_like(accept) < accept
        z = torch.where(take[..., None], moved, z)
        likelihood = torch.where(take, moved_likelihood, likelihood)
        rate = SLOWNESS * rate + (1.0 - SLOWNESS) * accept
        step = torch.where(rate > TARGET_ACCEPT, step * INCREASE, step * DECREASE).clamp(
            SMALLEST, LARGEST)
    return log_weight


def contenders(config: BenchConfig) -> list[Contender]:
    pixels = vae_mnist.load_mnist(torch.float32)[2].to(config.device)
    if config.quick:
        pixels = pixels[:QUICK_IMAGES]
    steps = QUICK_TEMPERATURES if config.quick else TEMPERATURES
    model = vae_mnist.build(subsample_size=None, seed=config.seed).to(config.device,
                                                                     torch.float32)
    decoder = model["decoder"].value
    betas = temperatures("sigmoid", steps)

    def by_hand() -> dict[str, Any]:
        torch.manual_seed(config.seed)
        summary = summarise(torch_ais(decoder, pixels, betas, CHAINS, LEAPFROG))
        return {"log_likelihood": float(summary.log_mean.sum()),
                "stderr": float(summary.stderr.square().sum().sqrt()), "images": len(pixels),
                "temperatures": steps}

    def by_genppl() -> dict[str, Any]:
        post = genppl.infer(model, {"pixels": pixels}, engine="ais", per="images",
                            num_temperatures=steps, num_chains=CHAINS, leapfrog_steps=LEAPFROG,
                            step_size=STEP_SIZE, seed=config.seed, progress=False)
        return {"log_likelihood": post.log_evidence, "stderr": post.info["stderr"],
                "images": len(pixels), "temperatures": steps}

    def long_run(name: str, run: Callable[[], dict[str, Any]]) -> Contender:
        """Runs of seconds: at most two timed, no traced run."""
        return Contender(name, run, repeats=min(config.repeats, 2), trace_memory=False)

    return [long_run(TORCH, by_hand), long_run(GENPPL, by_genppl)]


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"log_likelihood": r["log_likelihood"], "stderr": r["stderr"]}
            for name, r in results.items()}


def notes(results: dict[str, Any]) -> list[str]:
    first = next(iter(results.values()))
    return [f"one timed call = AIS over {first['images']:,} binarised MNIST test images, "
            f"{CHAINS} chains each, {first['temperatures']} sigmoid temperatures, one HMC "
            f"transition of {LEAPFROG} leapfrog steps per intermediate temperature, step "
            f"sizes from {STEP_SIZE} adapted per chain and image (Wu et al. 2017).",
            "model: models_gallery/vae_mnist.py's VAE decoder (16-d latent, 784-256 MLP) at "
            "its seeded initial weights, float32; log-lik = the sum over images of log mean "
            "w, stderr its delta-method standard error (independent runs: they agree within "
            "their errors, not exactly).",
            "time ratio = genppl's run relative to the hand-written loop, the same number of "
            "density-and-gradient evaluations in both."]


CASE = register(Case(
    name="ais",
    description="AIS on a VAE decoder, 1,000 MNIST test images: genppl vs a hand-written "
                "torch loop",
    baseline=TORCH,
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("log_likelihood", "log-lik (sum over images)", ".1f"),
             Column("stderr", "stderr", ".2f")),
    notes=notes,
))

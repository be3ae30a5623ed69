"""A mixture of product-Bernoulli distributions on binarised MNIST: Pearson's mixture on images.

Each digit picks one of ``K`` components (``weights``), then every one of its 784 binary
pixels is an independent Bernoulli with that component's probability (``probs``, one column
per component). It is the simplest image model with a latent: the component is a finite
latent, so ``em`` fits it in closed form (the E-step's responsibilities, the M-step's
weighted pixel means) and the exact engine sums it out of every held-out digit, so its row
on the images scale is an *exact* log-likelihood, not a bound.

The fit adds ``PSEUDO_COUNTS`` to every category (a Dirichlet/Beta(2, 2) MAP instead of the
MLE). Without them a pixel that is never on in a component's training digits (the border)
gets probability exactly 0, and one held-out digit with that pixel on has log-likelihood
minus infinity: the whole board's number would be infinite. One pseudo-count keeps every
probability in ``[1 / (n_k + 2), 1 - 1 / (n_k + 2)]``.

``probs`` is laid out ``(pixels, components)``: inside the pixel plate the component's
states are the last axis, so ``probs[:, z]`` *is* the param broadcast over them, which is
what lets ``em`` recognise its closed-form role. That is the tabulating engines' layout
(plates leading, a latent's states trailing); the compiled Pyro program lays enumerated
states left of the plates, where the same expression has a batch axis no plate explains
and is refused by name (``genppl/pyro/program.py``), so this entry runs ``em`` and
``exact`` only, and ``draw_images`` draws ancestrally by hand rather than by
``engine="prior"``. Data: ``genppl.data.digits`` (4,000
training and 1,000 test digits, binarised once at 127.5).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pyro.distributions as dist
import torch

import genppl
from genppl.data import digits
from genppl.evaluate import sample_quality
from genppl.evaluate.rows import Row
from genppl.gallery import GalleryEntry, Report

COMPONENTS = 20
ITERATIONS = 100  # most EM iterations (RunConfig.steps overrides)
TOL = 1e-7  # EM stops when its objective improves by less than this, relative
PSEUDO_COUNTS = 1.0  # added to every category: no probability is exactly 0 or 1 (docstring)
NUM_SAMPLES = 1000  # images drawn for samples.npz (the convention of issue 15 §2)
UNIT = "nats/image"


@dataclass(frozen=True)
class Setting:
    """How large a fit: ``components`` and the most EM ``iterations``."""

    components: int
    iterations: int


FULL = Setting(COMPONENTS, ITERATIONS)
QUICK = Setting(5, 10)


def build(components: int = COMPONENTS, seed: int = 0) -> genppl.Model:
    """The mixture with equal weights and pixel probabilities uniform in [0.25, 0.75]
    (``seed``): a declaration to draw and sample; ``fit`` starts EM from the data instead."""
    gen = torch.Generator().manual_seed(seed)
    m = genppl.Model("bernoulli_mixture_mnist")
    m.param("weights", torch.full((components,), 1.0 / components),
            constraint=dist.constraints.simplex)
    m.param("probs", 0.25 + 0.5 * torch.rand(digits.NUM_PIXELS, components, generator=gen),
            constraint=dist.constraints.unit_interval)
    with m.plate("images"):
        m.latent("z", lambda weights: dist.Categorical(weights))
        with m.plate("pixel_grid", digits.NUM_PIXELS):
            m.observed("pixels", lambda z, probs: dist.Bernoulli(probs[:, z]))
    return m


def data() -> dict[str, torch.Tensor]:
    return {"pixels": digits.binarised().train_images}


def initial_probs(images: torch.Tensor, components: int, seed: int) -> torch.Tensor:
    """Each component starts halfway between the mean digit and a distinct training digit
    drawn with ``seed``, ``(pixels, components)``. Random probabilities in [0.25, 0.75] (the
    declaration's) are far from every digit: on 784 pixels some of them lose every digit by
    tens of nats in the first E-step and stay empty (half of K = 20 did)."""
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(images), generator=gen)[:components].to(images.device)
    return (0.5 * images.mean(0, keepdim=True) + 0.5 * images[chosen]).T


def fit(images: torch.Tensor, setting: Setting, seed: int = 0, progress: bool = False
        ) -> tuple[genppl.Model, genppl.results.FitResult]:
    """The model (on ``images``' device and dtype) and its EM fit with the pseudo-counts,
    started by ``initial_probs``; ``losses`` are minus EM's objective (log-likelihood plus
    the pseudo-counts' log prior)."""
    model = build(setting.components, seed).to(images.device, images.dtype)
    init = {"probs": initial_probs(images, setting.components, seed)}
    result = genppl.fit(model, {"pixels": images}, engine="em", steps=setting.iterations,
                        tol=TOL, pseudo_counts=PSEUDO_COUNTS, init=init, progress=progress)
    return model, result


def held_out_log_likelihood(model: genppl.Model, params: dict[str, torch.Tensor],
                            images: torch.Tensor) -> torch.Tensor:
    """``log p(x)`` of each image, the component summed out exactly by the exact engine."""
    post = genppl.infer(model, {"pixels": images}, engine="exact", evidence_per="images",
                        params=params)
    return post.info["log_evidence_per"].reshape(-1)


def draw_images(params: dict[str, torch.Tensor], count: int, seed: int) -> torch.Tensor:
    """``count`` ancestral draws, ``(count, 28, 28)`` in {0, 1}: a component, then pixels."""
    weights, probs = params["weights"], params["probs"]
    gen = torch.Generator(device=weights.device).manual_seed(seed)
    z = torch.multinomial(weights, count, replacement=True, generator=gen)
    pixels = torch.bernoulli(probs.T[z], generator=gen)
    return pixels.reshape(count, digits.SIDE, digits.SIDE)


@dataclass(frozen=True)
class Evaluation:
    """A fitted mixture and its held-out numbers."""

    params: dict[str, torch.Tensor]
    objective: list[float]
    per_image: torch.Tensor
    seconds: float

    @property
    def nats(self) -> float:
        """Mean negative log-likelihood of a test image, nats."""
        return -float(self.per_image.mean())

    @property
    def bits_per_pixel(self) -> float:
        return self.nats / (digits.NUM_PIXELS * math.log(2))


def evaluate(setting: Setting, dtype: torch.dtype = torch.float64, device: str = "cpu",
             seed: int = 0, progress: bool = False) -> Evaluation:
    """Fit on the 4,000 training digits, score the 1,000 test digits exactly."""
    split = digits.binarised(dtype, device)
    start = time.perf_counter()
    model, result = fit(split.train_images, setting, seed, progress)
    per_image = held_out_log_likelihood(model, result.params, split.test_images)
    return Evaluation(result.params, [-loss for loss in result.losses], per_image,
                      time.perf_counter() - start)


#: This entry's row on the images scale (``genppl.evaluate.image_board``), with its family.
LEADERBOARD = {"bernoulli_mixture_mnist": "mixture"}


def leaderboard_rows(quick: bool) -> dict[str, Row]:
    """This model's row on the images scale: exact held-out nats per test image; in the
    full setting, the sample quality of ``NUM_SAMPLES`` draws in its diagnostics (``--quick``
    leaves the feature network untrained)."""
    setting = QUICK if quick else FULL
    result = evaluate(setting)
    quality = {} if quick else sample_quality.diagnostics(
        draw_images(result.params, NUM_SAMPLES, seed=0))
    row = Row(model=f"mixture of {setting.components} product-Bernoullis (EM)",
              entry="bernoulli_mixture_mnist", estimator="exact", bound="exact",
              value=result.nats, stderr=None, unit=UNIT,
              command="genppl leaderboard images --only bernoulli_mixture_mnist"
              + (" --quick" if quick else ""),
              settings={"components": setting.components, "iterations": setting.iterations,
                        "pseudo_counts": PSEUDO_COUNTS, "tol": TOL},
              diagnostics={"iterations_run": len(result.objective),
                           "seconds": result.seconds, **quality})
    return {"bernoulli_mixture_mnist": row}


def experiment(report: Report) -> None:
    config = report.config
    setting = Setting(COMPONENTS, config.steps or ITERATIONS)
    result = evaluate(setting, report.dtype, config.device, config.seed, config.progress)
    report.row("K = {components} components, EM on 4,000 digits: {iterations} iterations, "
               "{seconds:.1f} s", components=setting.components,
               iterations=len(result.objective), seconds=result.seconds)
    report.row("EM objective (log-likelihood + pseudo-count prior): {objective_first:.1f} -> "
               "{objective_last:.1f}", objective_first=result.objective[0],
               objective_last=result.objective[-1])
    report.metric("objective", result.objective)
    report.row("held-out exact log-likelihood: {test_nats:.2f} nats/image, "
               "{test_bits_per_pixel:.4f} bits/pixel", test_nats=result.nats,
               test_bits_per_pixel=result.bits_per_pixel)
    if config.out is None:
        return
    means = result.params["probs"].T.reshape(-1, digits.SIDE, digits.SIDE)
    order = result.params["weights"].argsort(descending=True)
    columns = 10
    rows = -(-setting.components // columns)
    with report.figure("bernoulli_mixture_means.png", nrows=rows, ncols=columns,
                       figsize=(columns, 1.1 * rows), squeeze=False) as (_, axes):
        for n, ax in enumerate(axes.flat):
            ax.axis("off")
            if n < len(order):
                k = int(order[n])
                ax.imshow(means[k].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
                ax.set_title(f"{float(result.params['weights'][k]):.3f}", fontsize=8)
    report.samples(draw_images(result.params, NUM_SAMPLES, config.seed))


ENTRY = GalleryEntry(
    name="bernoulli_mixture_mnist",
    title="Mixture of product-Bernoullis on binarised MNIST digits, fitted by EM",
    build=build,
    data=data,
    engines=("em",),
    experiment=experiment,
)

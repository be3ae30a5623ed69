"""Ho, Jain & Abbeel (2020): a denoising diffusion probabilistic model of a 2-D toy density.

The data are points from eight Gaussians on a ring, generated here with a fixed
``torch.Generator`` (so the exact data density is known and printed as a reference). The
model is the *reverse* process, declared as a chain that runs backwards in time; the guide
is the *fixed forward* (noising) process, declared as the same chain run forwards. SVI with
``Trace_ELBO`` then optimises exactly the variational bound of Ho et al. (their eq. 3),
estimated by sampling rather than by their closed-form KLs, so its gradient is noisier but
the objective is the same.

Diffusion time and chain steps
------------------------------
Diffusion times are ``s = 0..T`` with ``x_0`` the data and ``x_T`` pure noise. The chain
``t`` has ``T`` steps, ``0..T-1``, and **step ``t`` holds ``x_{t+1}``** (Pyro site ``x[t]``):

* model (``reverse=True``, steps ``T-1 .. 0``): step ``T-1`` is ``x_T ~ N(0, I)`` (the
  ``init``); step ``t < T-1`` draws ``x_{t+1} ~ p_θ(x_{t+1} | x_{t+2})``, so its factory
  reads ``x_prev`` = ``x_{t+2}`` and denoises from diffusion time ``s = t + 2``; the observed
  ``data`` outside the chain reads the chain's last step ``x[0]`` = ``x_1`` and is
  ``x_0 ~ p_θ(x_0 | x_1)`` (denoising from ``s = 1``);
* guide (``reverse=False``, steps ``0 .. T-1``): step ``0`` is ``x_1 ~ q(x_1 | x_0)`` (the
  ``init``, reading ``data``); step ``t > 0`` is ``x_{t+1} ~ q(x_{t+1} | x_t)``, time
  ``s = t + 1``.

Both use one noise schedule indexed by diffusion time (``NoiseSchedule.beta(s)``,
``s = 1..T``). The reverse variances are ``sigma_s² = β_s`` by default, Ho et al.'s first
choice. Their other choice, the forward posterior's ``β̃_s``, is zero at ``s = 1`` (so
``p(x_0 | x_1)`` keeps ``β_1`` under ``reverse_variance="posterior"``) and, measured here
after 1,500 steps, gave a much looser bound (4.7 against 1.6 nats per point).

Precision: the entry trains in float32 whatever ``RunConfig.dtype`` says (small MLPs gain
nothing from float64 and run about twice as slowly in it); the tests check the compiled log
joint in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch import nn

import genppl
from genppl.gallery import GalleryEntry, Report

#: Dimension of a data point.
DIM = 2
#: Number of diffusion steps T: small, so that the chain (one MLP call per step) is cheap on CPU.
NUM_STEPS = 40
#: Minibatch of points per SVI step (the plate is subsampled; Pyro rescales by N / batch).
BATCH = 512
#: Ring of eight modes: radius √2 makes each coordinate's variance about 1, as DDPMs assume.
RING_RADIUS = math.sqrt(2.0)
MODE_SD = 0.1
NUM_MODES = 8
NUM_TRAIN = 4096
NUM_TEST = 1024
#: Particles for evaluating the bound (the SVI step uses one).
EVAL_PARTICLES = 16
#: Training precision (see the module docstring).
DTYPE = torch.float32


# --------------------------------------------------------------------------- noise schedule
@dataclass(frozen=True)
class NoiseSchedule:
    """β_1..β_T of the forward process ``q(x_s | x_{s-1}) = N(√(1-β_s) x_{s-1}, β_s I)``.

    A small value object so that the schedule can be swapped (``linear``, ``cosine``) without
    touching the model; everything is indexed by diffusion time ``s = 1..T``
    (``betas[s - 1]``), never by chain step, so the chain-step bookkeeping lives in one place
    (the factories in ``build``). Per-step quantities are Python floats: they broadcast into
    tensors of whatever dtype and device the model runs in.
    """

    betas: torch.Tensor  # float64, shape (T,)
    #: sigma_s² of the reverse steps: "beta" (β_s) or "posterior" (β̃_s, and β_1 at s = 1).
    reverse_variance: Literal["beta", "posterior"] = "beta"

    def __post_init__(self) -> None:
        if self.reverse_variance not in ("beta", "posterior"):
            raise ValueError(f"reverse_variance must be 'beta' or 'posterior', not "
                             f"{self.reverse_variance!r}")
        if self.betas.dim() != 1 or not bool(((self.betas > 0) & (self.betas < 1)).all()):
            raise ValueError("a noise schedule needs 0 < beta_s < 1 for every step s; got "
                             f"{self.betas.min():.4g}..{self.betas.max():.4g} (for a short "
                             "chain pass a smaller beta_end).")

    @classmethod
    def linear(cls, num_steps: int, beta_start: float | None = None,
               beta_end: float | None = None) -> NoiseSchedule:
        """Linearly spaced betas (Ho et al. 2020; diffusers' ``"linear"``).

        Ho et al. use 1e-4..0.02 for T = 1000. By default both ends are scaled by 1000 / T
        (Nichol & Dhariwal 2021's rule for other T), so a short chain still ends near N(0, I).
        """
        scale = 1000.0 / num_steps
        start = beta_start if beta_start is not None else 1e-4 * scale
        end = beta_end if beta_end is not None else 0.02 * scale
        return cls(torch.linspace(start, end, num_steps, dtype=torch.float64))

    @classmethod
    def cosine(cls, num_steps: int, offset: float = 0.008, max_beta: float = 0.999
               ) -> NoiseSchedule:
        """The cosine schedule of Nichol & Dhariwal (2021) (diffusers' ``"squaredcos_cap_v2"``)."""
        s = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2
        return cls((1 - f[1:] / f[:-1]).clamp(max=max_beta))

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    def beta(self, s: int) -> float:
        if not 1 <= s <= self.num_steps:  # betas[-1] would silently be β_T
            raise IndexError(f"diffusion time {s} outside 1..{self.num_steps}")
        return float(self.betas[s - 1])

    def alpha_bar(self, s: int) -> float:
        """ᾱ_s = ∏_{r ≤ s} (1 - β_r); ᾱ_0 = 1."""
        return float(torch.prod(1 - self.betas[:s]))

    def forward_mean_scale(self, x_prev: torch.Tensor, s: int) -> tuple[torch.Tensor, float]:
        """Mean and sd of ``q(x_s | x_{s-1})``."""
        beta = self.beta(s)
        return math.sqrt(1 - beta) * x_prev, math.sqrt(beta)

    def reverse_mean_scale(self, x_s: torch.Tensor, s: int, eps: torch.Tensor
                           ) -> tuple[torch.Tensor, float]:
        """Mean and sd of ``p_θ(x_{s-1} | x_s)`` from the predicted noise ``eps`` (Ho et al.
        eq. 11): ``(x_s - β_s / √(1 - ᾱ_s) ε) / √(1 - β_s)`` and ``sigma_s = √β_s``."""
        beta = self.beta(s)
        mean = (x_s - beta / math.sqrt(1 - self.alpha_bar(s)) * eps) / math.sqrt(1 - beta)
        var = beta
        if self.reverse_variance == "posterior" and s > 1:
            var = (1 - self.alpha_bar(s - 1)) / (1 - self.alpha_bar(s)) * beta
        return mean, math.sqrt(var)


# --------------------------------------------------------------------------- the network
class Denoiser(nn.Module):
    """ε_θ(x_s, s): the noise in ``x_s``, from an MLP on ``x_s`` and Fourier features of s / T.

    One network serves every step (the time features tell the steps apart), as in Ho et al.;
    ``s`` is a Python int because the chain hands each factory its step index.
    """

    def __init__(self, num_steps: int, dim: int = DIM, hidden: int = 128,
                 num_freqs: int = 8) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_freqs),
                             persistent=False)
        self.net = nn.Sequential(
            nn.Linear(dim + 2 * num_freqs, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, s: int) -> torch.Tensor:
        angles = (s / self.num_steps) * self.freqs.to(x)
        features = torch.cat([angles.sin(), angles.cos()]).expand(*x.shape[:-1], -1)
        return self.net(torch.cat([x, features], dim=-1))


def _seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a module with its own seed, leaving the global RNG alone: ``build()`` is then
    reproducible whatever ran before it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


# --------------------------------------------------------------------------- model and guide
def build(schedule: NoiseSchedule | None = None, *, num_points: int | None = None,
          subsample_size: int | None = BATCH, denoiser: nn.Module | None = None,
          seed: int = 0) -> genppl.Model:
    """The reverse process ``p_θ(x_{0:T})`` (see the module docstring for the indexing).

    ``num_points`` fixes the plate size, which sampling without data needs; ``None`` reads it
    from the data. ``subsample_size=None`` evaluates every point (exact plate, no rescaling).
    Pass ``denoiser`` to share a trained network between models of different plate sizes.
    """
    schedule = schedule or NoiseSchedule.linear(NUM_STEPS)
    T = schedule.num_steps
    net = denoiser if denoiser is not None else _seeded(lambda: Denoiser(T), seed)

    def reverse(x_s: torch.Tensor, s: int, denoiser: nn.Module) -> dist.Distribution:
        loc, scale = schedule.reverse_mean_scale(x_s, s, denoiser(x_s, s))
        return dist.Normal(loc, scale).to_event(1)

    m = genppl.Model("ddpm_toy")
    m.module("denoiser", net)
    with m.plate("points", num_points, subsample_size=subsample_size):
        with m.chain("t", length=T, reverse=True):
            # Step t holds x_{t+1}; x_prev is x_{t+2}, denoised from diffusion time t + 2.
            m.latent("x", lambda x_prev, t, denoiser: reverse(x_prev, t + 2, denoiser),
                     init=lambda: dist.Normal(0.0, 1.0).expand([DIM]).to_event(1))
        # The chain's last step is x[0] = x_1; the data are x_0 ~ p_θ(x_0 | x_1).
        m.observed("data", lambda x, denoiser: reverse(x, 1, denoiser))
    return m


def build_guide(model: genppl.Model, schedule: NoiseSchedule | None = None) -> genppl.Guide:
    """The forward process ``q(x_{1:T} | x_0)``: fixed, no params; it reads the data by name."""
    schedule = schedule or NoiseSchedule.linear(NUM_STEPS)

    def forward(x_prev: torch.Tensor, s: int) -> dist.Distribution:
        loc, scale = schedule.forward_mean_scale(x_prev, s)
        return dist.Normal(loc, scale).to_event(1)

    g = model.guide()
    with g.chain("t", reverse=False):
        # Step t holds x_{t+1}; x_prev is x_t (and x_0 is the data at step 0).
        g.latent("x", lambda x_prev, t: forward(x_prev, t + 1),
                 init=lambda data: forward(data, 1))
    return g


# --------------------------------------------------------------------------- data
def ring_modes(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    angle = 2 * math.pi * torch.arange(NUM_MODES, dtype=dtype) / NUM_MODES
    return RING_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=-1)


def eight_gaussians(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` points from an equal mixture of isotropic Gaussians (sd ``MODE_SD``) on a ring."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(NUM_MODES, (n,), generator=g)
    noise = torch.randn(n, DIM, generator=g, dtype=torch.float64)
    return (ring_modes(torch.float64)[k] + MODE_SD * noise).to(dtype)


def true_log_density(x: torch.Tensor) -> torch.Tensor:
    """log q(x_0) of the generating mixture: the best any model can do, for reference."""
    comp = dist.Normal(ring_modes(x.dtype), MODE_SD).to_event(1).log_prob(x[..., None, :])
    return torch.logsumexp(comp, -1) - math.log(NUM_MODES)


def data() -> dict[str, torch.Tensor]:
    return {"data": eight_gaussians(NUM_TRAIN, seed=0)}


# --------------------------------------------------------------------------- evaluation
def bound_per_point(model: genppl.Model, schedule: NoiseSchedule, points: torch.Tensor,
                    num_particles: int = EVAL_PARTICLES) -> float:
    """-ELBO per point in nats (an upper bound on -log p_θ(x_0)), on every point at once.

    A copy of the model without subsampling shares the trained denoiser, so the plate does
    not rescale a minibatch and the number is exact up to the particles' Monte Carlo error.
    """
    full = build(schedule, subsample_size=None, denoiser=model["denoiser"].value)
    full.to(model.device, model.dtype)
    guide = build_guide(full, schedule)
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True,
                      max_plate_nesting=full.pyro_model.max_plate_nesting)
    with torch.no_grad():  # Trace_ELBO.loss would otherwise record a graph it never uses
        loss = elbo.loss(full.pyro_model, guide.pyro_guide, data=points)
    return float(loss) / len(points)


def bits_per_dim(nats_per_point: float) -> float:
    return nats_per_point / (DIM * math.log(2))


def sample(model: genppl.Model, schedule: NoiseSchedule, num_points: int,
           seed: int = 0) -> torch.Tensor:
    """Ancestral samples x_0 of the reverse process via the ``prior`` engine, shape (n, 2).

    The prior engine reads plate sizes off the data or the declaration; with no data the
    plate needs a declared size, so sampling uses a copy of the model with ``num_points``
    (sharing the trained denoiser).
    """
    sampler = build(schedule, num_points=num_points, subsample_size=None,
                    denoiser=model["denoiser"].value).to(model.device, model.dtype)
    prior = genppl.infer(sampler, {}, engine="prior", num_samples=1, seed=seed, progress=False)
    return prior["data"][0]


def mode_coverage(points: torch.Tensor) -> tuple[float, int]:
    """(fraction of points within 3 sd of a mode, number of modes with at least 1% of them)."""
    d = torch.cdist(points.detach().double().cpu(), ring_modes())
    nearest = d.min(-1)
    near = nearest.values < 3 * MODE_SD
    counts = torch.bincount(nearest.indices[near], minlength=NUM_MODES)
    return float(near.double().mean()), int((counts >= 0.01 * len(points)).sum())


# --------------------------------------------------------------------------- run
def experiment(report: Report) -> None:
    config = report.config
    steps = config.steps or 3000
    schedule = NoiseSchedule.linear(NUM_STEPS)
    train = eight_gaussians(NUM_TRAIN, seed=0, dtype=DTYPE)
    test = eight_gaussians(NUM_TEST, seed=1, dtype=DTYPE)
    model = report.build(schedule, seed=config.seed)
    guide = build_guide(model, schedule)
    torch.manual_seed(config.seed)
    bound_start = bound_per_point(model, schedule, test)
    # The sampled bound's gradient is noisy (see the module docstring): measured over 1,500
    # steps, lr 1e-2 and minibatches of 512 reached 1.25 nats per point, lr 2e-3 with 256
    # only 2.6, so a large step that decays tenfold over the run.
    result = genppl.fit(model, {"data": train}, engine="svi", guide=guide, steps=steps,
                        lr=1e-2, lrd=0.1 ** (1 / steps), seed=config.seed,
                        progress=config.progress, checkpoint=config.checkpoint)
    torch.manual_seed(config.seed)
    bound_end = bound_per_point(model, schedule, test)
    train_end = bound_per_point(model, schedule, train[:NUM_TEST])  # same size as test
    samples = sample(model, schedule, NUM_TEST, seed=config.seed)
    data_near, _ = mode_coverage(test)
    for key, value in {"num_steps": schedule.num_steps, "svi_steps": steps, "dtype": str(DTYPE),
                       "first_loss": result.losses[0], "last_loss": result.losses[-1]}.items():
        report.metric(key, value)
    fit_seconds = report.metric("fit_seconds", result.seconds)
    report.line(f"DDPM, T = {schedule.num_steps} steps, linear betas "
                f"{schedule.beta(1):.4g}..{schedule.beta(schedule.num_steps):.4g}, "
                f"{steps} SVI steps of {BATCH} points ({fit_seconds:.1f} s)")
    report.line("held-out bound -ELBO      nats/point   bits/dim")
    report.row("  at initialisation       {bound_start_nats:9.3f}   "
               "{bound_start_bits_per_dim:8.3f}", bound_start_nats=bound_start,
               bound_start_bits_per_dim=bits_per_dim(bound_start))
    report.row("  after training          {bound_end_nats:9.3f}   {bound_end_bits_per_dim:8.3f}",
               bound_end_nats=bound_end, bound_end_bits_per_dim=bits_per_dim(bound_end))
    report.row(f"  ({NUM_TEST} training points)  " "{bound_train_end_nats:9.3f}   "
               f"{bits_per_dim(train_end):8.3f}", bound_train_end_nats=train_end)
    reference = -float(true_log_density(test.double()).mean())
    report.row("  true density -log q(x)  {true_nll_nats:9.3f}   "
               f"{bits_per_dim(reference):8.3f}", true_nll_nats=reference)
    near, modes = mode_coverage(samples)
    report.row("samples within 3 sd of a mode: {near_mode_fraction:.1%} "
               f"(data {data_near:.1%}); " "modes hit: {modes_hit} " f"of {NUM_MODES}",
               near_mode_fraction=near, modes_hit=modes)
    if config.out is not None:
        with report.figure("ddpm_toy_samples.png", ncols=2, figsize=(8, 4), sharex=True,
                           sharey=True) as (_, axes):
            for ax, xy, title in ((axes[0], test, "data (held out)"),
                                  (axes[1], samples, "DDPM ancestral samples")):
                xy = xy.detach().cpu().double().numpy()
                ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.5)
                ax.set_title(title)
                ax.set_aspect("equal")
            axes[0].set_xlim(-2.5, 2.5)
            axes[0].set_ylim(-2.5, 2.5)


ENTRY = GalleryEntry(
    name="ddpm_toy",
    title="Ho et al. (2020): a denoising diffusion model of eight Gaussians on a ring",
    build=build,
    data=data,
    engines=("svi",),
    experiment=experiment,
    dtype=DTYPE,
    checkpoints=("svi",),
)

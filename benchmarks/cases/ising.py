"""Ising model on a 128 x 128 grid: Gibbs sweeps per second, checkerboard vs single-site.

The model is the denoising posterior of ``models_gallery/ising_denoise.py`` (coupling J
between grid neighbours, an observation field per pixel) for a noisy blob image, declared
per node in the DSL and grounded once (setup, not timed). genppl's sweep is the engine's
own (``genppl.gibbs.kernel.sweep``): two colours, each drawn from all of its full
conditionals at once. The peers run the textbook single-site scan, pixel by pixel in raster
order, from the same energy: written with torch operations per pixel (the naive way in a
torch code base; the baseline) and in plain Python floats (the fastest a pure-Python loop
gets). Optional peers, when installed (``pip install 'genppl[peers]'``): PyMC's
``BinaryGibbsMetropolis`` (its default step for binary variables) and NumPyro's
``DiscreteGibbs`` kernel, each on the same posterior written as a model of that library, one
call of the step method being one sweep over every pixel. All start from the noisy image;
each reports how many pixels its current state shares with the clean image (they sample one
posterior, which concentrates near the clean image within a few sweeps, so the column agrees
to Monte Carlo error).

Every contender is also run on a 4 x 4 grid for :data:`CHECK_SWEEPS` sweeps, and its
per-pixel P(spin up) and mean neighbour product are z-tested against brute-force enumeration
of the 2^16 states (:func:`exact_check`): the largest |z| is a column, so that a sampler of
another distribution cannot hide behind its speed.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from models_gallery import ising_denoise

NAIVE = "single-site loop, torch ops per pixel"
PYTHON = "single-site loop, plain Python floats"
CHECKERBOARD = "genppl gibbs checkerboard sweep"
PYMC = "PyMC BinaryGibbsMetropolis"
NUMPYRO = "NumPyro DiscreteGibbs"
SIZE = 128
QUICK_SIZE = 24
COUPLING = ising_denoise.COUPLING
ETA = 0.5 * math.log((1 - ising_denoise.FLIP) / ising_denoise.FLIP)
CHECK_SWEEPS = 10_000  # per contender, on the 4 x 4 grid
QUICK_CHECK_SWEEPS = 2_000
CHECK_BATCHES = 40  # batch means for the Monte Carlo standard error

#: One sweep over every pixel (the timed work), and the current state as +-1 float64 spins
#: on the CPU (read after the timing).
Sweeper = tuple[Callable[[], None], Callable[[], torch.Tensor]]
#: ``(observed +-1 picture, coupling J, field scale eta, seed, device) -> Sweeper``.
SweeperFactory = Callable[[torch.Tensor, float, float, int, str], Sweeper]


def image(size: int) -> torch.Tensor:
    """A clean picture of blobs, +-1 per pixel."""
    axis = torch.arange(size, dtype=torch.float64)
    return torch.where(torch.sin(axis / 9)[:, None] * torch.sin(axis / 13)[None, :] >= 0,
                       1.0, -1.0)


# --------------------------------------------------------------------------- the samplers
# Each targets p(s | y) ∝ exp(J sum_{i~j} s_i s_j + eta sum_i y_i s_i), s in {-1, +1}.
def naive_sweeper(observed: torch.Tensor, coupling: float, eta: float, seed: int,
                  device: str) -> Sweeper:
    rows, cols = observed.shape
    torch.manual_seed(seed)
    spins = torch.zeros(rows + 2, cols + 2, dtype=torch.float64)  # a border of zeros
    spins[1:-1, 1:-1] = observed
    h = torch.zeros(rows + 2, cols + 2, dtype=torch.float64)
    h[1:-1, 1:-1] = eta * observed

    def sweep() -> None:
        for i in range(1, rows + 1):
            for j in range(1, cols + 1):
                local = coupling * (spins[i - 1, j] + spins[i + 1, j] + spins[i, j - 1]
                                    + spins[i, j + 1]) + h[i, j]
                up = torch.rand(()) < torch.sigmoid(2 * local)
                spins[i, j] = torch.where(up, 1.0, -1.0)

    return sweep, lambda: spins[1:-1, 1:-1].clone()


def plain_sweeper(observed: torch.Tensor, coupling: float, eta: float, seed: int,
                  device: str) -> Sweeper:
    rows, cols = observed.shape
    field = (eta * observed).tolist()
    grid = [[0.0] * (cols + 2)] + [[0.0, *row, 0.0] for row in observed.tolist()] \
        + [[0.0] * (cols + 2)]
    rng = random.Random(seed)

    def sweep() -> None:
        for i in range(1, rows + 1):
            above, row, below, hrow = grid[i - 1], grid[i], grid[i + 1], field[i - 1]
            for j in range(1, cols + 1):
                local = coupling * (above[j] + below[j] + row[j - 1] + row[j + 1]) + hrow[j - 1]
                row[j] = 1.0 if rng.random() < 1.0 / (1.0 + math.exp(-2.0 * local)) else -1.0

    return sweep, lambda: torch.tensor([r[1:-1] for r in grid[1:-1]], dtype=torch.float64)


def checkerboard_sweeper(observed: torch.Tensor, coupling: float, eta: float, seed: int,
                         device: str) -> Sweeper:
    from genppl.gibbs.grounding import ground
    from genppl.gibbs.kernel import colouring, sweep
    from genppl.tabulation.tabulation import model_factors

    flip = 1.0 / (1.0 + math.exp(2.0 * eta))  # eta = log((1 - flip) / flip) / 2
    model = ising_denoise.build_posterior(observed, coupling, flip).to(device, torch.float64)
    graph = ground(model_factors(model, {}))
    colours = colouring(graph)
    torch.manual_seed(seed)
    state = [(observed.reshape(-1) > 0).long().to(device)]  # spin_{i}_{j}, raster order

    def one() -> None:
        state[0] = sweep(graph, colours, state[0])

    return one, lambda: 2.0 * state[0].reshape(observed.shape).cpu().double() - 1


def pymc_sweeper(observed: torch.Tensor, coupling: float, eta: float, seed: int,
                 device: str) -> Sweeper:
    """The posterior as a PyMC model: binary latents ``x`` (spin 2x - 1) whose Bernoulli
    logits carry the observation term (log-odds 2 eta y), the coupling as a
    ``pm.Potential``; one ``BinaryGibbsMetropolis.step`` is one sweep over every pixel, in a
    random order, each a flip proposed with probability ``transit_p`` (0.8) and accepted by
    Metropolis, the model's whole log density evaluated per proposal."""
    import numpy as np
    import pymc as pm

    y = observed.numpy()
    with pm.Model():
        x = pm.Bernoulli("x", logit_p=2.0 * eta * y, shape=y.shape)
        s = 2 * x - 1
        pm.Potential("coupling", coupling * ((s[1:, :] * s[:-1, :]).sum()
                                             + (s[:, 1:] * s[:, :-1]).sum()))
        step = pm.BinaryGibbsMetropolis([x], rng=np.random.default_rng(seed))
    point = [{"x": (y > 0).astype(np.int64)}]

    def sweep() -> None:
        point[0], _ = step.step(point[0])

    return sweep, lambda: torch.from_numpy(2.0 * point[0]["x"] - 1)


def numpyro_sweeper(observed: torch.Tensor, coupling: float, eta: float, seed: int,
                    device: str) -> Sweeper:
    """The posterior as a NumPyro model (Bernoulli latents with logits 2 eta y, the coupling
    as ``numpyro.factor``) under ``numpyro.infer.DiscreteGibbs``: one jitted ``sample`` of
    the kernel is one sweep over every pixel in a random order, each drawn from its exact
    conditional, the model's whole log density evaluated per pixel. float64 (JAX's x64
    mode, switched on for the process), as genppl's."""
    import jax
    import numpyro

    numpyro.enable_x64()
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.infer import DiscreteGibbs

    def model(y: jax.Array) -> None:
        x = numpyro.sample("x", dist.Bernoulli(logits=2.0 * eta * y))
        s = 2.0 * x - 1.0
        numpyro.factor("coupling", coupling * ((s[1:, :] * s[:-1, :]).sum()
                                               + (s[:, 1:] * s[:, :-1]).sum()))

    y = jnp.asarray(observed.numpy())
    kernel = DiscreteGibbs(model)
    start = {"x": jnp.asarray((observed > 0).long().numpy())}
    state = [kernel.init(jax.random.key(seed), 0, start, (y,), {})]
    step = jax.jit(lambda st: kernel.sample(st, (y,), {}))

    def sweep() -> None:
        state[0] = jax.block_until_ready(step(state[0]))

    return sweep, lambda: torch.from_numpy(2.0 * jax.device_get(state[0].z["x"]) - 1)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


#: name -> (sampler factory, the module it needs: None for genppl's and the loops).
SAMPLERS: dict[str, tuple[SweeperFactory, str | None]] = {
    NAIVE: (naive_sweeper, None),
    PYTHON: (plain_sweeper, None),
    CHECKERBOARD: (checkerboard_sweeper, None),
    PYMC: (pymc_sweeper, "pymc"),
    NUMPYRO: (numpyro_sweeper, "numpyro"),
}
PEER_PACKAGES = {PYMC: "PyMC", NUMPYRO: "NumPyro"}


# --------------------------------------------------------------------------- the exact check
def check_picture() -> torch.Tensor:
    """The 4 x 4 observation of the check: left half +1, right half -1, two pixels flipped,
    so that P(spin up) varies over the grid."""
    y = torch.ones(4, 4, dtype=torch.float64)
    y[:, 2:] = -1.0
    y[1, 1], y[2, 3] = -1.0, 1.0
    return y


def statistics_of(spins: torch.Tensor) -> torch.Tensor:
    """Per state (``(..., rows, cols)`` of +-1): 1{spin up} per pixel, raster order, then the
    mean product of neighbouring spins."""
    bonds = torch.cat([(spins[..., 1:, :] * spins[..., :-1, :]).flatten(-2),
                       (spins[..., :, 1:] * spins[..., :, :-1]).flatten(-2)], -1)
    return torch.cat([(spins > 0).double().flatten(-2), bonds.mean(-1, keepdim=True)], -1)


def exact_statistics(observed: torch.Tensor, coupling: float = COUPLING,
                     eta: float = ETA) -> torch.Tensor:
    """E[:func:`statistics_of`] under the posterior, by enumerating every state (brute
    force; 2^16 states on the 4 x 4 grid)."""
    rows, cols = observed.shape
    states = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=rows * cols)),
                          dtype=torch.float64).reshape(-1, rows, cols)
    log_p = (coupling * ((states[:, 1:, :] * states[:, :-1, :]).sum((1, 2))
                         + (states[:, :, 1:] * states[:, :, :-1]).sum((1, 2)))
             + eta * (observed * states).sum((1, 2)))
    weights = torch.softmax(log_p, 0)
    return weights @ statistics_of(states)


def z_scores(draws: torch.Tensor, exact: torch.Tensor, batches: int = CHECK_BATCHES
             ) -> torch.Tensor:
    """(mean of the draws - exact) / Monte Carlo standard error, per statistic; the standard
    error from ``batches`` batch means (autocorrelation included). A statistic that the
    chain never varied has no spread: it is 0 when the exact value agrees to 1e-12, else inf."""
    n = draws.shape[0] // batches * batches
    means = draws[:n].reshape(batches, -1, draws.shape[-1]).mean(1)
    error = means.mean(0) - exact
    se = means.std(0) / math.sqrt(batches)
    return torch.where(se > 0, error / se.clamp(min=1e-300),
                       torch.where(error.abs() < 1e-12, 0.0, math.inf))


def check_draws(factory: SweeperFactory, *, sweeps: int = CHECK_SWEEPS, seed: int = 0,
                coupling: float = COUPLING, eta: float = ETA, device: str = "cpu"
                ) -> torch.Tensor:
    """:func:`statistics_of` each state of ``sweeps`` sweeps of the sampler on the 4 x 4
    posterior of :func:`check_picture`, from the observation; the first tenth dropped as
    burn-in."""
    sweep, spins = factory(check_picture(), coupling, eta, seed, device)
    draws = []
    for _ in range(sweeps):
        sweep()
        draws.append(spins())
    return statistics_of(torch.stack(draws[sweeps // 10:]))


def exact_check(factory: SweeperFactory, *, sweeps: int = CHECK_SWEEPS, seed: int = 0,
                device: str = "cpu") -> float:
    """Largest |z| of the 4 x 4 check: :func:`check_draws` against
    :func:`exact_statistics` of the same posterior."""
    draws = check_draws(factory, sweeps=sweeps, seed=seed, device=device)
    return float(z_scores(draws, exact_statistics(check_picture())).abs().max())


# --------------------------------------------------------------------------- the case
def contenders(config: BenchConfig) -> list[Contender]:
    size = QUICK_SIZE if config.quick else SIZE
    clean = image(size)
    observed = ising_denoise.noisy(clean, seed=config.seed)
    out = []
    for name, (factory, module) in SAMPLERS.items():
        # --quick leaves the peers out: their compilation would be most of a smoke run.
        if module is not None and (config.quick or not _installed(module)):
            continue
        device = config.device if name == CHECKERBOARD else "cpu"
        sweep, spins = factory(observed, COUPLING, ETA, config.seed, device)
        seconds: list[float] = []

        def run(sweep: Callable[[], None] = sweep, spins: Callable[[], torch.Tensor] = spins,
                seconds: list[float] = seconds, name: str = name, device: str = device
                ) -> dict[str, Any]:
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            sweep()
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
            return {"spins": spins, "seconds": seconds, "clean": clean, "device": device,
                    "quick": config.quick, "untimed": config.warmup + 1,
                    "repeats": config.repeats}

        out.append(Contender(name, run))
    return out


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    metrics = {}
    for name, r in results.items():
        pixels = r["clean"].numel()
        # Each contender's own clock around the sweep alone, grouped as the harness groups
        # its calls: past the warm-ups and the traced run, the timed runs of equally many
        # calls each, the median of their means per call.
        timed = r["seconds"][r["untimed"]:]
        calls = max(len(timed) // r["repeats"], 1)
        per_sweep = statistics.median(statistics.fmean(timed[k:k + calls])
                                      for k in range(0, len(timed), calls))
        factory, _ = SAMPLERS[name]
        metrics[name] = {
            "agreement": float((r["spins"]() == r["clean"]).double().mean()),
            "sweeps_per_s": 1.0 / per_sweep,
            "site_updates_per_s": pixels / per_sweep,
            "check_max_abs_z": exact_check(
                factory, device=r["device"],
                sweeps=QUICK_CHECK_SWEEPS if r["quick"] else CHECK_SWEEPS),
        }
    base = metrics[NAIVE]["sweeps_per_s"]
    for m in metrics.values():
        m["speedup"] = m["sweeps_per_s"] / base
    return metrics


def notes(results: dict[str, Any]) -> list[str]:
    first = next(iter(results.values()))
    pixels = first["clean"].numel()
    sweeps = QUICK_CHECK_SWEEPS if first["quick"] else CHECK_SWEEPS
    lines = [f"one sweep updates all {pixels:,} pixels once; time ratio = seconds per sweep "
             f"/ the baseline's, so sweeps per second scale as its inverse; sweeps/s and site "
             f"updates/s (= {pixels:,} x sweeps/s) come from each contender's own clock "
             f"around the sweep alone, per call, the median over the timed runs as the "
             f"harness's (so they are 1 / median s but for the harness's call overhead)",
             "agreement: the share of pixels of the contender's last state equal to the clean "
             "image (the noisy image, where all start, agrees on about 85%)",
             f"4x4 check: each sampler run {sweeps:,} sweeps on a 4x4 posterior (same J "
             f"and eta), its 16 P(spin up) and mean neighbour product z-tested against brute "
             f"force over 2^16 states (batch-means standard error, {CHECK_BATCHES} batches); "
             "the column is the largest |z| of the 17 (above ~4.5 means another distribution)",
             "the single-site loops and the peers run on the CPU whatever --device says",
             "PyMC and NumPyro evaluate the model's whole log density for each site update, "
             "so their cost per site grows with the grid (a sweep is quadratic in the pixels)"]
    missing = [package for name, package in PEER_PACKAGES.items() if name not in results]
    if missing and first["quick"]:
        lines.append("--quick: the PyMC and NumPyro peers are left out (their compilation "
                     "would be most of a smoke run)")
    else:
        lines += [f"{package} not installed (pip install 'genppl[peers]')"
                  for package in missing]
    return lines


CASE = register(Case(
    name="ising",
    description=f"Ising {SIZE}x{SIZE} (denoising posterior): Gibbs sweeps, genppl "
                "checkerboard vs single-site loops, PyMC and NumPyro",
    baseline=NAIVE,
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("sweeps_per_s", "sweeps/s", ".3g"),
             Column("site_updates_per_s", "site updates/s", ".3g"),
             Column("speedup", "sweeps/s ratio to the torch loop", ".3g"),
             Column("agreement", "agreement with the clean image", ".3f"),
             Column("check_max_abs_z", "4x4 max abs z vs exact", ".2f")),
    notes=notes,
))

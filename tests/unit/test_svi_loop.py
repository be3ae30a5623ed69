"""The SVI training loop (``engine="svi"``): optimisers and schedules, plate minibatches
(unbiased: the mean over an epoch's batches equals the full-data ELBO exactly), held-out ELBO
and IWAE-k against the analytic evidence of a conjugate model, early stopping, and resume
from a checkpoint giving the trajectory of an uninterrupted run."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

import genppl
from genppl.engines import svi as svi_engine
from genppl.engines.svi import build_guide
from genppl.tabulation.prepared import prepare
from genppl.variational import evaluate, log_weights
from genppl.variational.minibatch import PlateLoader, on_indices, subsampled
from genppl.variational.optim import make_optimiser

F64 = torch.float64
X = torch.tensor([0.3, 1.1, -0.4, 0.9, 1.6, 0.2], dtype=F64)
X_VAL = torch.tensor([0.5, 1.4, -0.2, 0.8], dtype=F64)


def normal_model(size: int | None = None) -> tuple[genppl.Model, genppl.Guide]:
    """mu ~ N(0, 1), x_i ~ N(mu, 1), with a DSL guide q(mu) = N(m, s)."""
    m = genppl.Model("normal_normal")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with m.plate("data", size):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    m.to(dtype=F64)
    g = m.guide()
    g.param("m", torch.tensor(0.0, dtype=F64))
    g.param("s", torch.tensor(1.0, dtype=F64), constraint=dist.constraints.positive)
    g.latent("mu", lambda m, s: dist.Normal(m, s))
    return m, g


def log_evidence(x: torch.Tensor) -> float:
    n = len(x)
    cov = torch.eye(n, dtype=F64) + torch.ones(n, n, dtype=F64)
    return float(dist.MultivariateNormal(torch.zeros(n, dtype=F64), cov).log_prob(x))


def posterior(x: torch.Tensor) -> tuple[float, float]:
    n = len(x)
    return float(x.sum()) / (n + 1), (1.0 / (n + 1)) ** 0.5


# ----------------------------------------------------------------------- optimisers
@pytest.mark.parametrize("optimizer", ["adam", "clipped_adam", "sgd", "adagrad", "rmsprop"])
def test_every_optimiser_fits_the_conjugate_posterior(optimizer: str) -> None:
    m, g = normal_model()
    lr = {"sgd": 0.01, "adagrad": 0.3}.get(optimizer, 0.05)
    result = genppl.fit(m, {"x": X}, engine="svi", guide=g, steps=600, lr=lr, seed=0,
                        optimizer=optimizer, num_particles=8, progress=False)
    mean, _ = posterior(X)
    assert result.params["m"].item() == pytest.approx(mean, abs=0.12)
    assert result.info["optimizer"] == optimizer


def test_gradient_clipping_bounds_each_step_of_sgd() -> None:
    """With SGD and lr=1, one step moves a param by at most clip_norm (not by the raw
    gradient, which is far larger here)."""
    m, g = normal_model()
    far = {"x": X + 50.0}
    for clip, bounded in ((0.5, True), (None, False)):
        result = genppl.fit(m, far, engine="svi", guide=g, steps=1, lr=1.0, seed=0,
                            optimizer="sgd", clip_norm=clip, progress=False)
        moved = abs(result.params["m"].item())
        assert (moved <= 0.5 + 1e-12) == bounded, (clip, moved)


@pytest.mark.parametrize(("schedule", "options", "expected"), [
    ("exponential", {"gamma": 0.9}, 0.1 * 0.9 ** 10),
    ("step", {"step_size": 4, "gamma": 0.5}, 0.1 * 0.5 ** 2),
    ("cosine", {}, 0.0),  # T_max = steps: annealed to eta_min at the end
])
def test_schedules_set_the_learning_rate_each_step(schedule: str, options: dict[str, Any],
                                                   expected: float) -> None:
    m, g = normal_model()
    opt = make_optimiser("adam", lr=0.1, schedule=schedule, schedule_options=options, steps=10)
    genppl.fit(m, {"x": X}, engine="svi", guide=g, steps=10, optimizer=opt.optim, seed=0,
               progress=False)
    # a pyro.optim object is used as given; its scheduler is stepped once per step
    assert opt.learning_rates() == pytest.approx([expected] * 2, abs=1e-12)


def test_lrd_keeps_meaning_an_exponential_decay_for_any_optimiser() -> None:
    a = make_optimiser("sgd", lr=0.1, lrd=0.5)
    assert a.name == "sgd+exponential" and a.scheduled
    with pytest.raises(genppl.ModelError, match="cannot be combined"):
        make_optimiser("adam", lrd=0.5, schedule="cosine")
    with pytest.raises(genppl.ModelError, match="unknown optimizer"):
        make_optimiser("adamw")


def test_plateau_schedule_halves_the_rate_when_the_monitored_elbo_stalls() -> None:
    m, g = normal_model()
    opt = make_optimiser("adam", lr=0.1, schedule="plateau",
                         schedule_options={"patience": 0, "factor": 0.5}, steps=400)
    result = genppl.fit(m, {"x": X}, engine="svi", guide=g, steps=400, optimizer=opt.optim,
                        eval_every=20, seed=0, progress=False)
    assert len(result.info["history"]) == 20
    assert max(opt.learning_rates()) < 0.1


# ----------------------------------------------------------------------- minibatches
def test_minibatch_elbo_is_unbiased_exactly_over_an_epoch() -> None:
    """With the same draw of mu (same seed), the mean of the batch ELBOs over one epoch of
    3 batches of 2 equals the full-data ELBO: the size/batch scale is right. A scale of 1
    (or the wrong size) would make the mean three times too small in the likelihood."""
    m, g = normal_model()
    prep = prepare(m, {"x": X})
    guide = build_guide(prep, g)
    pyro.clear_param_store()
    elbo = Trace_ELBO()
    pyro.set_rng_seed(3)
    full = elbo.loss(prep.program, guide, **prep.data)
    indices: dict[str, torch.Tensor] = {}
    loader = PlateLoader({"data": 6}, {"data": 2}, seed=1)
    batch_losses, seen = [], []
    with subsampled(m, {"data": 2}):
        for _ in range(3):
            indices.update(loader.next())
            seen.append(indices["data"])
            pyro.set_rng_seed(3)
            batch_losses.append(elbo.loss(on_indices(prep.program, indices),
                                          on_indices(guide, indices), **prep.data))
    assert sorted(torch.cat(seen).tolist()) == list(range(6))  # one epoch: each item once
    assert sum(batch_losses) / 3 == pytest.approx(full, rel=1e-12)
    assert m.plates["data"].subsample_size is None  # the declaration is put back
    assert len(set(batch_losses)) == 3  # the batches do differ


def test_loader_reshuffles_each_epoch_and_drops_the_incomplete_batch() -> None:
    loader = PlateLoader({"p": 7}, {"p": 3}, seed=0)
    epochs = [torch.cat([loader.next()["p"] for _ in range(2)]) for _ in range(3)]
    assert all(len(set(e.tolist())) == 6 for e in epochs)
    assert loader.epochs == {"p": 3}
    assert not all(torch.equal(epochs[0], e) for e in epochs[1:])


def test_fit_with_batch_size_recovers_the_full_data_posterior() -> None:
    x = torch.linspace(-1.0, 3.0, 40, dtype=F64)
    m, g = normal_model()
    result = genppl.fit(m, {"x": x}, engine="svi", guide=g, steps=1500, lr=0.05, seed=0,
                        optimizer="adam", schedule="cosine", batch_size=8, num_particles=4,
                        progress=False)  # the annealed rate averages the minibatch noise
    mean, sd = posterior(x)
    assert result.params["m"].item() == pytest.approx(mean, abs=0.05)
    assert result.params["s"].item() == pytest.approx(sd, rel=0.3)
    assert result.info["epochs"]["data"] == pytest.approx(1500 * 8 / 40, abs=1)


def test_batch_size_with_local_latents_and_an_autoguide() -> None:
    """Local latents in the batched plate: AutoNormal's per-item params are indexed by the
    batch; the global mean is still recovered."""
    m = genppl.Model("local")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0, dtype=F64), 3.0))
    with m.plate("items"):
        m.latent("z", lambda mu: dist.Normal(mu, 1.0))
        m.observed("y", lambda z: dist.Normal(z, 0.5))
    m.to(dtype=F64)
    y = torch.linspace(1.0, 3.0, 24, dtype=F64)
    result = genppl.fit(m, {"y": y}, engine="svi", guide="normal", steps=1500, lr=0.03,
                        seed=0, batch_size={"items": 6}, progress=False)
    assert result.params["AutoNormal.locs.mu"].item() == pytest.approx(2.0, abs=0.25)
    assert result.params["AutoNormal.locs.z"].shape == (24,)
    with pytest.raises(genppl.ModelError, match="built for one batch"):  # not a silent 6
        genppl.infer(m, {"y": y}, engine="svi", guide="normal", steps=1, batch_size=6,
                     num_samples=2, progress=False)


# ----------------------------------------------------------------------- evaluation
def test_iwae_lies_between_the_elbo_and_the_log_evidence_and_increases_with_k() -> None:
    m, g = normal_model()
    mean, sd = posterior(X)
    log_p = log_evidence(X)
    pyro.clear_param_store()
    pyro.param("m", torch.tensor(mean + 0.4, dtype=F64))
    pyro.param("s", torch.tensor(sd * 1.6, dtype=F64), constraint=dist.constraints.positive)
    ev = evaluate(m, g, {"x": X}, num_particles=4000, iwae=5000, batch=700, seed=0)
    assert ev.iwae_se is not None and ev.iwae_se < 0.02
    assert ev.elbo + 4 * ev.elbo_se < ev.iwae < log_p + 4 * ev.iwae_se
    # E[IWAE-k] from disjoint groups of k weights: increasing in k, towards log p
    prep = prepare(m, {"x": X})
    pyro.set_rng_seed(1)
    w = log_weights(prep.program, g.pyro_guide, prep.data, 60_000, max_plate_nesting=1)
    estimates = []
    for k in (1, 3, 10, 30):  # E[IWAE-k] ~ log p - var(w / E w) / 2k: steps resolvable here
        groups = torch.logsumexp(w.reshape(-1, k), 1) - math.log(k)
        estimates.append((groups.mean().item(), groups.std().item() / len(groups) ** 0.5))
    for (lo, lo_se), (hi, hi_se) in itertools.pairwise(estimates):
        assert hi - lo > 3 * (lo_se ** 2 + hi_se ** 2) ** 0.5
    last, last_se = estimates[-1]
    assert last - 3 * last_se < log_p < last + 0.05
    assert estimates[0][0] == pytest.approx(ev.elbo, abs=5 * ev.elbo_se)


def test_the_exact_posterior_makes_elbo_and_iwae_equal_the_log_evidence() -> None:
    m, g = normal_model()
    mean, sd = posterior(X)
    pyro.clear_param_store()
    pyro.param("m", torch.tensor(mean, dtype=F64))
    pyro.param("s", torch.tensor(sd, dtype=F64), constraint=dist.constraints.positive)
    ev = evaluate(m, g, {"x": X}, num_particles=50, iwae=5000, seed=0)
    assert ev.elbo == pytest.approx(log_evidence(X), abs=1e-10)
    assert ev.iwae == pytest.approx(log_evidence(X), abs=1e-10)
    assert ev.iwae_se == pytest.approx(0.0, abs=1e-6)


def test_evaluate_a_fit_on_held_out_data_uses_the_fits_params() -> None:
    m, g = normal_model()
    result = genppl.fit(m, {"x": X}, engine="svi", guide=g, steps=400, lr=0.05, seed=0,
                        num_particles=8, progress=False)
    pyro.clear_param_store()  # the fit's params travel with the result
    ev = evaluate(m, result, {"x": X_VAL}, num_particles=2000, iwae=2000, seed=0)
    # the guide fitted to X proposes mu for X_VAL: IWAE-2000 reaches log p(X_VAL), while
    # the ELBO stays below it by KL(q || p(mu | X_VAL))
    assert ev.iwae == pytest.approx(log_evidence(X_VAL), abs=4 * ev.iwae_se)
    assert ev.elbo <= ev.iwae


# ----------------------------------------------------------------------- early stopping
def test_early_stopping_restores_the_best_params_when_validation_stops_improving() -> None:
    """Validation data from another mean than the training data: the held-out ELBO peaks
    early, while mu moves on towards the training mean, then falls; the run stops after
    `patience` worse evaluations and returns the params of the best one."""
    m, g = normal_model()
    train = torch.full((30,), 4.0, dtype=F64)
    val = torch.full((10,), 1.0, dtype=F64)
    result = genppl.fit(m, {"x": train}, engine="svi", guide=g, steps=2000, lr=0.05,
                        optimizer="adam", seed=0, validation={"x": val}, eval_every=10,
                        patience=3, progress=False)
    history = result.info["history"]
    assert result.info["stopped_early"]
    assert len(result.losses) == result.info["steps_done"] < 2000
    best_step, _ = max(history, key=lambda h: h[1])
    assert result.info["best_step"] == best_step
    assert [s for s, _ in history][-1] == best_step + 30  # three worse evaluations
    # the restored params are those of the best evaluation: its held-out ELBO again
    ev = genppl.fit(m, {"x": train}, engine="svi", guide=g, steps=best_step, lr=0.05,
                    optimizer="adam", seed=0, progress=False)
    assert torch.equal(ev.params["m"], result.params["m"])


# ----------------------------------------------------------------------- checkpoints
def _stopped(monkeypatch: pytest.MonkeyPatch, after: int) -> list[int]:
    """Make the run raise KeyboardInterrupt right after its ``after``-th save."""
    saves: list[int] = []
    original = svi_engine.SVICheckpoint.save

    def save_then_stop(self: svi_engine.SVICheckpoint, record: dict[str, Any]) -> None:
        original(self, record)
        saves.append(record["done"])
        if len(saves) == after:
            raise KeyboardInterrupt
    monkeypatch.setattr(svi_engine.SVICheckpoint, "save", save_then_stop)
    return saves


@pytest.mark.parametrize("options", [
    {},
    {"optimizer": "adam", "schedule": "cosine", "batch_size": 2, "num_particles": 2},
    {"optimizer": "rmsprop", "schedule": "plateau", "validation": {"x": X_VAL},
     "eval_every": 5, "patience": 50, "batch_size": 3},
])
def test_a_killed_run_resumes_with_the_trajectory_of_an_uninterrupted_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]) -> None:
    m, g = normal_model()
    run = {"engine": "svi", "guide": g, "steps": 40, "lr": 0.05, "seed": 7, "progress": False,
           **options}
    whole = genppl.fit(m, {"x": X}, **run)
    saves = _stopped(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        genppl.fit(m, {"x": X}, checkpoint=tmp_path, checkpoint_every=15, **run)
    assert saves == [15, 30]
    monkeypatch.undo()
    pyro.clear_param_store()
    resumed = genppl.fit(m, {"x": X}, checkpoint=tmp_path, checkpoint_every=15, **run)
    assert resumed.losses == whole.losses
    for name, value in whole.params.items():
        assert torch.equal(resumed.params[name], value), name
    with pytest.raises(genppl.ModelError, match="belongs to another run"):
        genppl.fit(m, {"x": X}, checkpoint=tmp_path, checkpoint_every=15,
                   **{**run, "lr": 0.02})


def test_a_finished_checkpoint_returns_its_result_without_training(tmp_path: Path) -> None:
    m, g = normal_model()
    run = {"engine": "svi", "guide": g, "steps": 20, "seed": 1, "progress": False,
           "checkpoint": tmp_path, "checkpoint_every": 10}
    first = genppl.fit(m, {"x": X}, **run)
    again = genppl.fit(m, {"x": X}, **run)
    assert again.losses == first.losses and again.info["steps_done"] == 20
    assert torch.equal(again.params["m"], first.params["m"])
    with pytest.raises(genppl.ModelError, match="needs seed"):
        genppl.fit(m, {"x": X}, **{**run, "seed": None})

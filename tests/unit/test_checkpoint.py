"""Checkpoints. The Hamiltonian samplers: a run stopped part-way -- during warm-up, with
the step size and mass matrix half adapted, or while drawing -- and started again resumes
from its last save and gives exactly the draws of the uninterrupted run. EM: the same, bit
for bit, for params, CPTs and point-estimated latents. Damaged files: a partial write, a
truncated or bit-flipped checkpoint never loses the progress saved before it. (The ``gibbs``
engine's resume is tested in test_gibbs.py, SVI's in test_svi_loop.py, and a SIGKILL of
``genppl run`` in test_kill_resume.py.)"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

import genppl
from genppl.engines import em
from genppl.runtime import checkpoint as ckpt
from genppl.runtime.kernel_state import kernel_state

pytestmark = pytest.mark.unit
F64 = torch.float64
Y = torch.tensor([-0.4, 0.3, 2.6, 1.9, 3.1], dtype=F64)


def _model() -> genppl.Model:
    """A continuous location and a constrained scale (so draws pass through transforms),
    and a finite latent per item (summed out by nuts, sampled by hmc_gibbs)."""
    m = genppl.Model("shifted")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    m.latent("s", lambda: dist.LogNormal(torch.tensor(0.0, dtype=F64), 0.5))
    with m.plate("items", len(Y)):
        m.latent("z", lambda: dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
        m.observed("y", lambda mu, s, z: dist.Normal(mu + 2.0 * z, s))
    return m.to(dtype=F64)


@pytest.mark.parametrize(("engine", "options", "after"), [
    ("nuts", {}, 2),  # stopped at step 20 of 30 warm-up steps
    ("nuts", {}, 4),  # stopped at draw 10 of 25
    ("nuts", {"marginalise": "exact"}, 2),
    ("hmc", {"num_steps": 4}, 2),
    ("hmc_gibbs", {}, 2),
    ("hmc_gibbs", {"discrete": "exact"}, 4),
])
def test_a_stopped_run_resumes_with_the_draws_of_an_uninterrupted_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_after_saves: Any, engine: str,
        options: dict[str, Any], after: int) -> None:
    model, data = _model(), {"y": Y}
    run = {"engine": engine, "num_samples": 25, "warmup_steps": 30, "seed": 5,
           "progress": False, "executor": "serial", **options}
    whole = genppl.infer(model, data, **run)
    saves = stop_after_saves(after)
    with pytest.raises(KeyboardInterrupt):
        genppl.infer(model, data, checkpoint=tmp_path, checkpoint_every=10, **run)
    assert saves == [10, 20, 30, 40][:after]
    monkeypatch.undo()
    resumed = genppl.infer(model, data, checkpoint=tmp_path, checkpoint_every=10, **run)
    assert set(resumed.samples) == set(whole.samples) >= {"mu", "s", "z"}
    for name, draws in whole.samples.items():
        assert torch.equal(resumed.samples[name], draws), name
    for changed in ({"num_samples": 26}, {"target_accept_prob": 0.9}, {"step_size": 0.5}):
        with pytest.raises(genppl.ModelError, match="belongs to another run"):
            genppl.infer(model, data, checkpoint=tmp_path, checkpoint_every=10,
                         **{**run, **changed})
    with pytest.raises(genppl.ModelError, match="belongs to another run"):  # other values
        genppl.infer(model, {"y": Y + 1}, checkpoint=tmp_path, checkpoint_every=10, **run)


def test_checkpointing_needs_a_seed_and_a_known_kernel(tmp_path: Path) -> None:
    with pytest.raises(genppl.ModelError, match="needs seed="):
        genppl.infer(_model(), {"y": Y}, engine="nuts", num_samples=5, checkpoint=tmp_path,
                     progress=False)
    with pytest.raises(genppl.ModelError, match="checkpoint_every must be >= 1"):
        genppl.infer(_model(), {"y": Y}, engine="hmc_gibbs", num_samples=5, seed=1,
                     checkpoint=tmp_path, checkpoint_every=0, progress=False)

    class Opaque(MCMCKernel):
        def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return params
    with pytest.raises(genppl.ModelError, match="cannot checkpoint a Opaque kernel"):
        kernel_state(Opaque())


def test_the_driver_draws_what_pyros_mcmc_draws() -> None:
    """``drive`` replaces ``pyro.infer.MCMC.run`` in the engines: same kernel, same seed,
    the same draws (constrained by the kernel's transforms)."""
    import pyro
    from pyro.infer import MCMC, NUTS

    from genppl.runtime.driver import drive

    def model() -> None:
        scale = pyro.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
        with pyro.plate("items", len(Y)):
            pyro.sample("y", dist.Normal(0.0, scale), obs=Y)

    pyro.set_rng_seed(3)
    mcmc = MCMC(NUTS(model), num_samples=15, warmup_steps=10, disable_progbar=True)
    mcmc.run()
    pyro.set_rng_seed(3)
    steps: list[int] = []
    draws = drive(NUTS(model), warmup=10, num_samples=15, advance=steps.append,
                  device=torch.device("cpu"))
    assert torch.equal(draws["scale"], mcmc.get_samples()["scale"])
    assert sum(steps) == 25


# --------------------------------------------------------------------------------- EM
def _x() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(60, generator=g, dtype=F64) * 0.5 - 1,
                      torch.randn(40, generator=g, dtype=F64) + 2])


def _em_params() -> tuple[genppl.Model, dict[str, Any], dict[str, Any]]:
    """Params behind the three kinds of transform (simplex, none, positive)."""
    m = genppl.Model("gmm")
    m.param("w", torch.tensor([0.3, 0.7]), constraint=constraints.simplex)
    m.param("mu", torch.tensor([-0.5, 0.5]))
    m.param("sigma", torch.tensor([1.0, 2.0]), constraint=constraints.positive)
    with m.plate("data"):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z, mu, sigma: dist.Normal(mu[z], sigma[z]))
    return m.to(dtype=F64), {"x": _x()}, {}


def _em_cpts() -> tuple[genppl.Model, dict[str, Any], dict[str, Any]]:
    """CPTs re-estimated in place, with a hidden parent."""
    m = genppl.Model("abc")
    m.cpt("a", [], torch.tensor([0.4, 0.6]))
    m.cpt("b", ["a"], torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]))
    g = torch.Generator().manual_seed(1)
    return m.to(dtype=F64), {"b": torch.randint(0, 3, (50,), generator=g)}, {}


def _em_latents() -> tuple[genppl.Model, dict[str, Any], dict[str, Any]]:
    """Global latents point-estimated under Dirichlet and Uniform priors."""
    m = genppl.Model("mixture")
    m.latent("weights", lambda: dist.Dirichlet(torch.ones(2, dtype=F64)))
    m.latent("locs", lambda: dist.Uniform(-5.0, 5.0).expand([2]).to_event(1))
    m.latent("scales", lambda: dist.Uniform(0.05, 5.0).expand([2]).to_event(1))
    with m.plate("data"):
        m.latent("z", lambda weights: dist.Categorical(weights))
        m.observed("x", lambda z, locs, scales: dist.Normal(locs[z], scales[z]))
    init = {"weights": [0.5, 0.5], "locs": [-0.5, 0.5], "scales": [1.0, 1.0]}
    return m.to(dtype=F64), {"x": _x()}, {"init": init}


EM_RUN = {"engine": "em", "steps": 12, "tol": 0, "progress": False}


def _stop_runs_after_saves(monkeypatch: pytest.MonkeyPatch, after: int) -> list[int]:
    """Make EM raise KeyboardInterrupt right after its ``after``-th save (a run killed
    part-way); returns the iterations saved. ``monkeypatch.undo()`` lets the next finish."""
    saves: list[int] = []
    original = ckpt.RunCheckpoint.save

    def save_then_stop(self: ckpt.RunCheckpoint, record: dict[str, Any]) -> None:
        original(self, record)
        saves.append(len(record["log_likelihood"]))
        if len(saves) == after:
            raise KeyboardInterrupt
    monkeypatch.setattr(ckpt.RunCheckpoint, "save", save_then_stop)
    return saves


def _stopped_em(directory: Path, monkeypatch: pytest.MonkeyPatch,
                build: Any = _em_params) -> Any:
    """An EM run stopped after its saves at iterations 4 and 8 (em.pt, em.pt.prev), and
    the same run uninterrupted, to compare a resumed one with."""
    model, data, options = build()
    whole = genppl.fit(model, data, **EM_RUN, **options)
    saves = _stop_runs_after_saves(monkeypatch, 2)
    model, data, options = build()
    with pytest.raises(KeyboardInterrupt):
        genppl.fit(model, data, checkpoint=directory, checkpoint_every=4, **EM_RUN, **options)
    assert saves == [4, 8]
    monkeypatch.undo()
    return whole


def _resume_em(directory: Path, build: Any = _em_params) -> Any:
    model, data, options = build()  # a fresh model, as a new process would build
    return genppl.fit(model, data, checkpoint=directory, checkpoint_every=4, **EM_RUN,
                      **options)


def _assert_same_fit(resumed: Any, whole: Any) -> None:
    assert resumed.losses == whole.losses
    assert resumed.info["log_likelihood"] == whole.info["log_likelihood"]
    assert set(resumed.params) == set(whole.params)
    for name, value in whole.params.items():
        assert torch.equal(resumed.params[name], value), name


@pytest.mark.parametrize("build", [_em_params, _em_cpts, _em_latents])
def test_an_em_run_stopped_part_way_resumes_bit_for_bit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Any) -> None:
    whole = _stopped_em(tmp_path, monkeypatch, build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["em.pt", "em.pt.prev"]
    _assert_same_fit(_resume_em(tmp_path, build), whole)
    model, data, options = build()
    for other in ({"tol": 1e-3}, {"steps": 13}, {"pseudo_counts": 1.0}):
        with pytest.raises(genppl.ModelError, match="belongs to another run"):
            genppl.fit(model, data, checkpoint=tmp_path, **{**EM_RUN, **options, **other})
    smaller = {k: v[:-1] for k, v in data.items()}
    with pytest.raises(genppl.ModelError, match="belongs to another run"):
        genppl.fit(model, smaller, checkpoint=tmp_path, **EM_RUN, **options)


def test_a_finished_em_checkpoint_answers_without_iterating(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, data, _ = _em_params()
    run = {"engine": "em", "steps": 500, "tol": 1e-6, "progress": False,
           "checkpoint": tmp_path, "checkpoint_every": 7}
    first = genppl.fit(model, data, **run)
    assert first.info["converged"] and first.info["iterations"] < 500

    def no_e_step(*_: Any) -> None:
        raise AssertionError("a finished run iterated again")
    monkeypatch.setattr(em, "_expected_statistics", no_e_step)
    again = genppl.fit(_em_params()[0], data, **run)
    _assert_same_fit(again, first)
    assert again.info["converged"]
    with pytest.raises(genppl.ModelError, match="belongs to another run"):
        genppl.fit(model, data, **{**run, "init": {"mu": [0.0, 1.0]}})


# ------------------------------------------------------------------- damaged files
def _truncate(path: Path) -> None:
    """A file cut short: a partial write, a full disk, a copy interrupted."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_bit_of_a_value(path: Path) -> None:
    """Change one bit of a saved tensor's value in place: the file still loads (torch does
    not check its zip records' CRCs), it just says something else -- only the checksum can
    tell."""
    envelope = torch.load(path, weights_only=True)
    record = torch.load(io.BytesIO(envelope["payload"].numpy().tobytes()),
                        weights_only=True)
    value = float(record["targets"]["params"]["mu"][0])
    raw = bytearray(path.read_bytes())
    at = raw.find(struct.pack("<d", value))
    assert at >= 0 and raw.find(struct.pack("<d", value), at + 1) < 0
    raw[at] ^= 1
    path.write_bytes(bytes(raw))
    payload = torch.load(path, weights_only=True)["payload"].numpy().tobytes()
    changed = torch.load(io.BytesIO(payload), weights_only=True)["targets"]["params"]["mu"][0]
    assert float(changed) != value  # loads, and is wrong


def _kill_between_renames(path: Path) -> None:
    """A kill after a save moved the latest file to .prev and before it renamed the new one
    in: no em.pt, a complete .prev and a .tmp."""
    path.rename(path.with_name("em.pt.tmp"))


def test_a_partial_write_left_by_a_kill_is_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed while writing a checkpoint leaves its .tmp half written; the saved
    progress is untouched, and resumes without a warning (warnings fail the tests)."""
    whole = _stopped_em(tmp_path, monkeypatch)
    latest = (tmp_path / "em.pt").read_bytes()
    (tmp_path / "em.pt.tmp").write_bytes(latest[: len(latest) // 3])
    _assert_same_fit(_resume_em(tmp_path), whole)


@pytest.mark.parametrize(("damage", "reason"), [
    (_truncate, "cannot be read"),
    (_flip_a_bit_of_a_value, "do not match their SHA-256 checksum"),
    (_kill_between_renames, "is missing"),
])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Any, reason: str) -> None:
    whole = _stopped_em(tmp_path, monkeypatch)
    latest = tmp_path / "em.pt"
    damage(latest)
    with pytest.warns(ckpt.CheckpointWarning, match=f"{latest}.*{reason}.*previous"):
        resumed = _resume_em(tmp_path)
    _assert_same_fit(resumed, whole)  # from iteration 4 instead of 8: the same fit
    names = {p.name for p in tmp_path.iterdir()}
    assert {"em.pt", "em.pt.prev"} <= names
    assert ("em.pt.damaged" in names) == (damage is not _kill_between_renames)


def test_a_damaged_checkpoint_without_a_good_previous_one_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stopped_em(tmp_path, monkeypatch)
    latest, previous = tmp_path / "em.pt", tmp_path / "em.pt.prev"
    _truncate(latest)
    _flip_a_bit_of_a_value(previous)
    with pytest.raises(genppl.ModelError, match=r"em\.pt cannot be read.*em\.pt\.prev is "
                                                "damaged.*delete both"):
        _resume_em(tmp_path)
    previous.unlink()
    with pytest.raises(genppl.ModelError, match=r"em\.pt cannot be read.*no earlier "
                                                r"checkpoint em\.pt\.prev.*delete"):
        _resume_em(tmp_path)
    ckpt.atomic_save(latest, {"run": "anything"})
    with pytest.raises(genppl.ModelError, match="belongs to another run"):
        _resume_em(tmp_path)  # another run's file: refused, never fallen back from


def test_a_file_of_another_layout_is_refused(tmp_path: Path) -> None:
    """A checkpoint of an earlier genppl (no checksum) or any other torch file."""
    model, data, _ = _em_params()
    torch.save({"run": {"engine": "em"}, "targets": {}}, tmp_path / "em.pt")
    with pytest.raises(genppl.ModelError, match=r"em\.pt is not a checkpoint of this genppl "
                                                "version"):
        genppl.fit(model, data, checkpoint=tmp_path, **EM_RUN)


def test_a_save_keeps_the_previous_checkpoint_beside_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    run = {"engine": "test"}
    for step in range(3):
        ckpt.atomic_save(path, {"run": run, "step": step})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.pt.prev"]
    assert ckpt.safe_load(path, run)["step"] == 2  # type: ignore[index]
    path.unlink()
    with pytest.warns(ckpt.CheckpointWarning, match="is missing"):
        assert ckpt.safe_load(path, run)["step"] == 1  # type: ignore[index]

"""Checkpoints of the Hamiltonian samplers: a run stopped part-way -- during warm-up, with
the step size and mass matrix half adapted, or while drawing -- and started again resumes
from its last save and gives exactly the draws of the uninterrupted run. (The ``gibbs``
engine's resume is tested in test_gibbs.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

import genppl
from genppl.engines.kernel_state import kernel_state

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
    with pytest.raises(genppl.ModelError, match="belongs to another run"):
        genppl.infer(model, data, checkpoint=tmp_path, checkpoint_every=10,
                     **{**run, "num_samples": 26})


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

    from genppl.engines.driver import drive

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

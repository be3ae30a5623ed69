"""rbm_mnist: on a 12 x 8 RBM small enough to enumerate (2^20 joint states), the held-out
log-likelihood formula -F(v) - log Z is exact when log Z is, the entry's annealing (from the
data's marginals) lands within 3 standard errors of the exact log Z, and its estimate errs
on the side the row's ``bound`` says: log Ẑ low, the log-likelihood high ("upper"). A tiny
run makes finite rows in nats/image from both sides (RAISE's "lower"; its engine path is
tested against enumeration in tests/unit/test_ais_partition.py), and ``--quick`` runs."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from genppl.gallery import RunConfig
from models_gallery import rbm_digits, rbm_mnist
from models_gallery.rbm_digits import rbm

pytestmark = pytest.mark.gallery

F64, F32 = torch.float64, torch.float32
VISIBLE, HIDDEN = 12, 8
TINY = replace(rbm_mnist.QUICK, hidden=6, updates=20, fine_updates=5, temperatures=20,
               check_temperatures=5, chains=10, raise_temperatures=5, raise_chains=2,
               sample_sweeps=2)


def tiny_params(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Weights N(0, 2^2) (strongly coupled: a hard case for annealing), biases N(0, 1)."""
    gen = torch.Generator().manual_seed(0)
    return {"W": 2.0 * torch.randn(VISIBLE, HIDDEN, generator=gen, dtype=F64).to(dtype),
            "b": torch.randn(VISIBLE, generator=gen, dtype=F64).to(dtype),
            "c": torch.randn(HIDDEN, generator=gen, dtype=F64).to(dtype)}


def tiny_images(count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(count, VISIBLE, generator=gen) < 0.3).to(F64)


def joint_energies(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(2^12, 2^8)``: b.v + c.h + v.W.h at every joint state, v by rows, h by columns."""
    p = {k: v.double() for k, v in params.items()}
    v = torch.tensor(list(itertools.product((0.0, 1.0), repeat=VISIBLE)), dtype=F64)
    h = torch.tensor(list(itertools.product((0.0, 1.0), repeat=HIDDEN)), dtype=F64)
    return (v @ p["b"])[:, None] + (h @ p["c"])[None, :] + (v @ p["W"]) @ h.T


def exact_log_likelihood(params: dict[str, torch.Tensor], images: torch.Tensor
                         ) -> torch.Tensor:
    """log p(v) of each image by enumeration: its row of the joint, summed, less log Z."""
    energies = joint_energies(params)
    log_z = torch.logsumexp(energies.reshape(-1), 0)
    rows = (images.long() * 2 ** torch.arange(VISIBLE - 1, -1, -1)).sum(1)
    return torch.logsumexp(energies[rows], 1) - log_z


def test_free_energy_less_an_exact_log_partition_is_the_exact_log_likelihood() -> None:
    params = tiny_params(F64)
    images = tiny_images(50, 1)
    log_z = float(torch.logsumexp(joint_energies(params).reshape(-1), 0))
    formula = -rbm_digits.free_energy(params, images) - log_z
    assert torch.allclose(formula, exact_log_likelihood(params, images), rtol=0, atol=1e-8)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_the_entrys_annealing_finds_log_partition_and_each_free_energy(
        dtype: torch.dtype) -> None:
    """From the training images' marginals, 1,000 temperatures x 200 chains: log Z within
    3 standard errors of the enumeration, and each test case's free term -F(v) exact."""
    params = tiny_params(dtype)
    model = rbm(VISIBLE, HIDDEN).to(dtype=dtype)
    train, test = tiny_images(200, 2).to(dtype), tiny_images(20, 3).to(dtype)
    post = rbm_digits.annealed(model, params, train, 1000, 200, seed=0, test=test)
    info = post.info
    truth = float(torch.logsumexp(joint_energies(params).reshape(-1), 0))
    assert abs(info["log_partition"] - truth) < 3 * info["log_partition_stderr"]
    assert info["bound"] == "upper"
    free = (info["log_evidence_per"] + info["log_partition"]).double()
    tol = 1e-8 if dtype == F64 else 1e-3
    assert torch.allclose(free, -rbm_digits.free_energy(params, test).double(), rtol=0,
                          atol=tol)


def test_the_estimated_log_likelihood_errs_high_as_the_row_says() -> None:
    """AIS's Ẑ is unbiased, so log Ẑ is low on average (Jensen): with few temperatures the
    gap is large, and over 20 seeds the estimated mean log-likelihood lies above the exact
    one by many of its standard errors -- an upper bound, the cost optimistic."""
    params = tiny_params(F64)
    train, test = tiny_images(200, 2), tiny_images(20, 3)
    exact = float(exact_log_likelihood(params, test).mean())
    excess = torch.tensor([
        float(rbm_digits.annealed(rbm(VISIBLE, HIDDEN).to(dtype=F64), params, train, 5, 5,
                                 seed=s, test=test).info["log_evidence_per"].mean()) - exact
        for s in range(20)])
    assert float(excess.mean()) > 5 * float(excess.std()) / math.sqrt(len(excess))


def test_a_tiny_run_makes_both_sides_rows_in_nats_per_image() -> None:
    """The forward row is an upper bound on the log-likelihood, RAISE's a lower one, both
    finite costs in nats/image with standard errors, each reproduced by its own command."""
    result = rbm_mnist.evaluate(TINY)
    rows = rbm_mnist.rows_of(result, quick=True)
    assert list(rows) == list(rbm_mnist.LEADERBOARD) == ["rbm-ais", "rbm-raise"]
    forward, back = rows["rbm-ais"], rows["rbm-raise"]
    assert (forward.bound, back.bound) == ("upper", "lower")
    for row_id, row in rows.items():
        assert row.unit == "nats/image" and row.entry == "rbm_mnist"
        assert math.isfinite(row.value) and 0 < row.value < 784 * math.log(2)
        assert row.stderr is not None and row.stderr > 0
        assert row.command == f"genppl leaderboard images --only {row_id} --quick"
        assert row.settings["temperatures"] == TINY.temperatures
    assert forward.stderr == result.log_partition_stderr
    diagnostics = forward.diagnostics
    assert diagnostics["sandwich_width"] == pytest.approx(back.value - forward.value)
    assert math.isfinite(diagnostics["check_log_partition"]) and diagnostics["ess"] >= 1
    assert result.samples.shape == (rbm_mnist.NUM_SAMPLES, 28, 28)
    assert bool(((result.samples >= 0) & (result.samples <= 1)).all())


def test_quick_leaderboard_rows_run() -> None:
    rows = rbm_mnist.leaderboard_rows(quick=True)
    assert list(rows) == list(rbm_mnist.LEADERBOARD)
    assert rows["rbm-ais"].bound == "upper" and math.isfinite(rows["rbm-ais"].value)
    assert rows["rbm-raise"].bound == "lower" and math.isfinite(rows["rbm-raise"].value)


def test_a_short_run_writes_samples(tmp_path: Path) -> None:
    report = rbm_mnist.ENTRY.run(RunConfig(steps=20, progress=False, out=tmp_path))
    assert report.metrics["test_nats"] > 0 and report.metrics["raise_nats"] > 0
    with np.load(tmp_path / "samples.npz") as saved:
        assert saved["images"].shape == (rbm_mnist.NUM_SAMPLES, 28, 28)

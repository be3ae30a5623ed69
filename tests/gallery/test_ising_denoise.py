"""Ising denoising (Geman & Geman 1984): checkerboard Gibbs against the exact engine on a
small grid, against brute-force enumeration written here, and the denoising itself."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pyro.ops.stats import effective_sample_size

import genppl
from genppl.gallery import RunConfig
from models_gallery import ising_denoise
from models_gallery.ising_3x3 import spin_name

pytestmark = pytest.mark.gallery
F64 = torch.float64


def _brute_force(observed: torch.Tensor) -> tuple[float, torch.Tensor]:
    """log Z and P(spin up) per pixel by enumerating every configuration of the grid,
    from the energy written out here (not from the entry's factors)."""
    rows, cols = observed.shape
    eta = 0.5 * math.log((1 - ising_denoise.FLIP) / ising_denoise.FLIP)
    configs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=rows * cols)),
                           dtype=F64).reshape(-1, rows, cols)
    energy = (ising_denoise.COUPLING * ((configs[:, :, 1:] * configs[:, :, :-1]).sum((1, 2))
                                        + (configs[:, 1:, :] * configs[:, :-1, :]).sum((1, 2)))
              + eta * (configs * observed).sum((1, 2)))
    p = torch.softmax(energy, 0)
    return float(torch.logsumexp(energy, 0)), (p[:, None, None] * (configs > 0)).sum(0)


def test_a_4x4_grid_by_gibbs_exact_and_brute_force() -> None:
    clean = torch.tensor([[1.0, 1, -1, -1], [1, 1, -1, -1], [1, 1, 1, -1], [-1, 1, 1, 1]])
    observed = ising_denoise.noisy(clean, flip=0.25, seed=2)
    model = ising_denoise.build_posterior(observed).to(dtype=F64)
    log_z, p_up = _brute_force(observed)
    exact = genppl.infer(model, {}, engine="exact")
    assert exact.log_evidence == pytest.approx(log_z, abs=1e-10)
    post = genppl.infer(model, {}, engine="gibbs", num_samples=2000, num_chains=2, seed=0,
                        progress=False)
    assert post.info["colours"] == 2  # the checkerboard
    for i in range(4):
        for j in range(4):
            name = spin_name(i, j)
            assert float(exact.marginals[name][1]) == pytest.approx(float(p_up[i, j]),
                                                                    abs=1e-10)
            up = (post.samples[name] == 1).to(F64)  # (chains, draws)
            p = float(p_up[i, j])
            ess = float(effective_sample_size(up.unsqueeze(-1)))
            # 5 Monte Carlo standard errors: a chance failure below 6e-7 per pixel.
            assert abs(float(up.mean()) - p) <= 5 * math.sqrt(p * (1 - p) / ess) + 1e-12


def test_denoising_the_horse_removes_most_of_the_noise() -> None:
    report = ising_denoise.ENTRY.run(RunConfig(steps=60, progress=False))
    assert report.metrics["pixels"] == 82 * 100
    assert report.metrics["error_noisy"] == pytest.approx(ising_denoise.FLIP, abs=0.015)
    assert report.metrics["error_denoised"] < report.metrics["error_noisy"] / 4

"""Posterior draws of a model whose plate is declared with ``subsample_size`` cover every item
of the plate, in the data's order, in every draw: a fresh minibatch per draw would put a
different item at each index (and leave most out), and averages over draws would mix items.

Oracle: u_i ~ N(0, 1), x_i ~ N(u_i, 1) with the exact posterior as the guide,
q(u_i | x_i) = N(x_i / 2, 1 / sqrt 2), so each item's draws are checked by z-tests of their
mean and variance against that posterior.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

import genppl

pytestmark = pytest.mark.unit
F64 = torch.float64
X = torch.linspace(-3, 3, 12, dtype=F64)
DRAWS = 400


def _model(subsample_size: int | None) -> tuple[genppl.Model, genppl.Guide]:
    m = genppl.Model("local_normal")
    with m.plate("data", subsample_size=subsample_size):
        m.latent("u", lambda: dist.Normal(torch.tensor(0.0), 1.0))
        m.observed("x", lambda u: dist.Normal(u, 1.0))
    m.to(dtype=F64)
    g = m.guide()
    g.latent("u", lambda x: dist.Normal(x / 2, 0.5 ** 0.5))
    return m, g


def _check_exact_posterior(u: torch.Tensor) -> None:
    assert u.shape == (1, DRAWS, len(X))
    draws = u[0]
    # mean: N(x/2, 1/2) over DRAWS draws; variance: chi-square's sd is var * sqrt(2 / n)
    z_mean = (draws.mean(0) - X / 2) / math.sqrt(0.5 / DRAWS)
    z_var = (draws.var(0) - 0.5) / (0.5 * math.sqrt(2 / (DRAWS - 1)))
    assert bool((z_mean.abs() < 4.5).all()), z_mean
    assert bool((z_var.abs() < 4.5).all()), z_var


@pytest.mark.parametrize("how", ["fit", "infer"])
def test_draws_from_a_subsampled_plate_cover_every_item_in_order(how: str) -> None:
    m, g = _model(subsample_size=3)
    options = {"guide": g, "steps": 2, "num_samples": DRAWS, "seed": 0, "progress": False}
    if how == "fit":
        posterior = genppl.fit(m, {"x": X}, engine="svi", **options).posterior
    else:
        posterior = genppl.infer(m, {"x": X}, engine="svi", **options)
    assert posterior is not None
    _check_exact_posterior(posterior.samples["u"])
    assert m.plates["data"].subsample_size == 3  # the declaration is put back


def test_a_minibatched_fit_draws_every_item_too() -> None:
    m, g = _model(subsample_size=None)
    fit = genppl.fit(m, {"x": X}, engine="svi", guide=g, steps=2, batch_size=4,
                     num_samples=DRAWS, seed=0, progress=False)
    assert fit.posterior is not None
    _check_exact_posterior(fit.posterior.samples["u"])


@pytest.mark.parametrize("guide", ["normal", "delta"])
def test_an_autoguide_built_for_minibatches_refuses_to_draw_the_items(guide: str) -> None:
    m, _ = _model(subsample_size=3)
    with pytest.raises(genppl.ModelError, match="a draw must cover every item"):
        genppl.fit(m, {"x": X}, engine="svi", guide=guide, steps=2, num_samples=5, seed=0,
                   progress=False)

"""``engine="nuts", marginalise="exact"``: the finite latents summed out by the exact engine
give the same potential energy and gradient as Pyro's enumeration, and the finite draws per
posterior sample follow their exact conditional."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

import genppl
from genppl.engines.common import prepare
from genppl.engines.mcmc import _summed_out

pytestmark = pytest.mark.unit
F64 = torch.float64
X = torch.tensor([0.1, 2.3, -0.4, 1.9, 2.2, 0.3], dtype=F64)


def _mixture() -> genppl.Model:
    m = genppl.Model("mixture")
    m.latent("w", lambda: dist.Dirichlet(torch.ones(2, dtype=F64)))
    m.latent("loc", lambda: dist.Normal(torch.tensor([0.0, 2.0], dtype=F64), 1.0).to_event(1))
    with m.plate("items", len(X)):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z, loc: dist.Normal(loc[z], 0.7))
    return m.to(dtype=F64)


def test_exact_and_enumerated_potentials_are_equal() -> None:
    model = _mixture()
    prep = prepare(model, {"x": X})
    summed = _summed_out(prep, {"x": X})
    with pyro.get_param_store().scope():
        _, enum_pe, _, _ = initialize_model(prep.program, model_kwargs=prep.data,
                                            max_plate_nesting=prep.max_plate_nesting)
        params, exact_pe, _, _ = initialize_model(summed, model_kwargs=prep.data,
                                                  max_plate_nesting=prep.max_plate_nesting)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        z = {k: (v + torch.randn(v.shape, generator=gen, dtype=F64)).requires_grad_()
             for k, v in params.items()}
        a, b = enum_pe(z), exact_pe(z)
        assert float(a.detach()) == pytest.approx(float(b.detach()), abs=1e-10)
        ga = torch.autograd.grad(a, list(z.values()))
        gb = torch.autograd.grad(b, list(z.values()))
        for x, y in zip(ga, gb, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-10)


def test_nuts_with_exact_marginalisation_draws_the_assignments() -> None:
    model = _mixture()
    post = genppl.infer(model, {"x": X}, engine="nuts", marginalise="exact", num_samples=40,
                        warmup_steps=40, seed=0, progress=False)
    assert post.samples["z"].shape == (1, 40, len(X))
    # Given each draw's parameters, z_n is Categorical(responsibilities) independently:
    # a z-test on the total count of component 1 over draws and items.
    w, loc = post.samples["w"][0], post.samples["loc"][0]
    logits = dist.Normal(loc[:, None, :], 0.7).log_prob(X[None, :, None]) + w[:, None, :].log()
    p = torch.softmax(logits, -1)[..., 1]
    excess = float((post.samples["z"][0].to(F64) - p).sum())
    assert abs(excess) < 5 * math.sqrt(float((p * (1 - p)).sum()))


def test_a_continuous_latent_below_a_finite_one_is_refused() -> None:
    m = genppl.Model("switch")
    m.latent("k", lambda: dist.Bernoulli(torch.tensor(0.5, dtype=F64)))
    m.latent("mu", lambda k: dist.Normal(3.0 * k, 1.0))
    m.observed("y", lambda mu: dist.Normal(mu, 1.0))
    with pytest.raises(genppl.ModelError, match=r"'mu'.*depends on a finite latent"):
        genppl.infer(m.to(dtype=F64), {"y": torch.tensor(1.0, dtype=F64)}, engine="nuts",
                     marginalise="exact", num_samples=5)

"""``engine="nuts", marginalise="exact"``: the finite latents summed out by the exact engine
give the same potential energy and gradient as Pyro's enumeration, and the finite draws per
posterior sample follow their exact conditional."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

import genppl
from genppl.tabulation.prepared import prepare
from genppl.tabulation.summed_out import FiniteSummedOut

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


def _switching() -> genppl.Model:
    """A chain of finite states (run by the summed-out program not at all: skipped)."""
    trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=F64)
    m = genppl.Model("switching")
    m.latent("loc", lambda: dist.Normal(torch.tensor([0.0, 2.0], dtype=F64), 1.0).to_event(1))
    with m.chain("t"):
        m.latent("z", lambda z_prev: dist.Categorical(trans[z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.6, 0.4], dtype=F64)))
        m.observed("x", lambda z, loc: dist.Normal(loc[..., z], 0.7))
    return m.to(dtype=F64)


@pytest.mark.parametrize("build", [_mixture, _switching])
def test_exact_and_enumerated_potentials_are_equal(build: Any) -> None:
    model = build()
    prep = prepare(model, {"x": X})
    summed = FiniteSummedOut.of(prep)
    # Only the continuous latents run: the finite ones, the data below them and a chain of
    # them are skipped, not walked step by step.
    assert {b if isinstance(b, str) else b.name for b in summed.program.blocks} <= {"w", "loc"}
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
    data = {"y": torch.tensor(1.0, dtype=F64)}
    with pytest.raises(genppl.ModelError, match=r"'mu'.*depends on a finite latent"):
        genppl.infer(m.to(dtype=F64), data, engine="nuts", marginalise="exact", num_samples=5)
    # The default picks enumeration for such a model, and says so.
    post = genppl.infer(m.to(dtype=F64), data, engine="nuts", num_samples=5, progress=False)
    assert post.info["marginalise"] == "enum"


def _noisy_copy_of(parent: str) -> Any:
    """A factory whose one parent is ``parent`` (argument names are parents in the DSL)."""
    def emit(**values: torch.Tensor) -> dist.Distribution:
        return dist.Normal(values[parent].to(F64), 0.5)

    emit.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(parent, inspect.Parameter.KEYWORD_ONLY)])
    return emit


def test_more_finite_latents_than_pyro_can_enumerate() -> None:
    """80 separate binary latents sharing a continuous rate: Pyro's enumeration needs a
    tensor dimension each (it stops at 64); the exact engine sums them out, and NUTS's draws
    of the rate agree with a grid posterior within 5 Monte Carlo standard errors."""
    from genppl.results import diagnostics

    n = 80
    gen = torch.Generator().manual_seed(3)
    truth = (torch.rand(n, generator=gen) < 0.7).to(F64)
    y = truth + 0.5 * torch.randn(n, generator=gen, dtype=F64)
    m = genppl.Model("many_switches")
    m.latent("rate", lambda: dist.Beta(torch.tensor(2.0, dtype=F64), 2.0))
    for i in range(n):
        m.latent(f"s{i}", lambda rate: dist.Bernoulli(rate))
        m.observed(f"y{i}", _noisy_copy_of(f"s{i}"))
    data = {f"y{i}": y[i] for i in range(n)}
    with pytest.raises(genppl.ModelError, match="up to 64 dims"):
        genppl.infer(m.to(dtype=F64), data, engine="nuts", num_samples=2, warmup_steps=2,
                     marginalise="enum", progress=False)  # Pyro's enumeration
    post = genppl.infer(m.to(dtype=F64), data, engine="nuts",  # the default: exact
                        num_samples=120, warmup_steps=80, seed=0, progress=False)
    assert post.info["marginalise"] == "exact"
    grid = torch.linspace(1e-4, 1 - 1e-4, 4001, dtype=F64)
    normal = torch.distributions.Normal
    mix = torch.logaddexp(grid[:, None].log() + normal(1.0, 0.5).log_prob(y),
                          (1 - grid[:, None]).log() + normal(0.0, 0.5).log_prob(y)).sum(-1)
    w = torch.softmax(mix + torch.distributions.Beta(2.0, 2.0).log_prob(grid), 0)
    rate = post.samples["rate"]
    assert abs(float(rate.mean()) - float((w * grid).sum())) <= 5 * diagnostics(rate)[
        "mcse_mean"]
    assert post.samples["s0"].shape == (1, 120)


def test_the_default_sums_chains_out_exactly_and_enumerates_plates() -> None:
    """``marginalise="auto"``: finite latents along a chain go to the exact engine (Pyro
    would enumerate them site by site), a plate of them to Pyro's enumeration."""
    trans = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=F64)
    chain = genppl.Model("switching")
    chain.latent("mu", lambda: dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
    with chain.chain("t", 4):
        chain.latent("z", lambda z_prev: dist.Categorical(trans[z_prev]),
                     init=lambda: dist.Categorical(torch.full((2,), 0.5, dtype=F64)))
        chain.observed("y", lambda z, mu: dist.Normal(mu[..., z], 1.0))
    run = {"engine": "nuts", "num_samples": 3, "warmup_steps": 3, "progress": False}
    post = genppl.infer(chain.to(dtype=F64), {"y": torch.tensor([0.1, 1.2, 0.9, -0.3])},
                        **run)
    assert post.info["marginalise"] == "exact" and post.samples["z"].shape == (1, 3, 4)
    plated = genppl.Model("plated")
    plated.latent("mu", lambda: dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with plated.plate("items"):
        plated.latent("z", lambda: dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
        plated.observed("y", lambda mu, z: dist.Normal(mu + z, 1.0))
    post = genppl.infer(plated.to(dtype=F64), {"y": torch.tensor([0.1, 1.2, 0.9])}, **run)
    assert post.info["marginalise"] == "enum"

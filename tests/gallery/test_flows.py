"""The ``flows`` entry: exact change of variables, normalisation, maximum likelihood that beats
a Gaussian, and an IAF guide whose density of its own samples is right.

Oracles: the change-of-variables formula computed by hand (the inverse map and the
determinant of its Jacobian from ``torch.autograd.functional.jacobian``, never Pyro's
``log_abs_det_jacobian``), a numerical integral over a grid, and closed-form maximum
likelihood for the Gaussian reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.autograd.functional import jacobian

from genppl.gallery import RunConfig
from models_gallery import flows, vae_digits

pytestmark = pytest.mark.gallery


@pytest.fixture(autouse=True)
def _fresh_param_store() -> None:
    pyro.clear_param_store()


def _flow_model(dtype: torch.dtype, seed: int = 0) -> object:
    """A flow with random (untrained) layers whose splines are far from the identity."""
    model = flows.build(seed=seed).to("cpu", dtype)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 100)
        for name in ("layer_1", "layer_2", "layer_3", "layer_4"):
            for p in model[name].value.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model


def _inverse(model: object) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> u by hand: the layers undone last to first, the coordinates swapped back
    between them (the spline couplings' own inverses, uncached)."""
    layers = [model[f"layer_{k}"].value for k in range(1, flows.NUM_LAYERS + 1)]

    def inverse(x: torch.Tensor) -> torch.Tensor:
        for k, layer in reversed(list(enumerate(layers))):
            x = layer._inverse(x)
            if k:
                x = x.flip(-1)
        return x

    return inverse


def _forward(model: object) -> Callable[[torch.Tensor], torch.Tensor]:
    layers = [model[f"layer_{k}"].value for k in range(1, flows.NUM_LAYERS + 1)]

    def forward(u: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(layers):
            if k:
                u = u.flip(-1)
            u = layer._call(u)
        return u

    return forward


def test_flow_log_prob_is_the_change_of_variables_by_hand() -> None:
    model = _flow_model(torch.float64)
    # Points in the data's range, in the splines' tails, and outside their bound (identity).
    points = torch.tensor([[0.3, -0.2], [1.5, 0.4], [-0.9, 0.8], [2.5, -3.1], [4.5, 0.2],
                           [-5.0, 6.0]], dtype=torch.float64)
    compiled = flows.log_density(model, points)
    inverse, forward = _inverse(model), _forward(model)
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    for x, lp in zip(points, compiled, strict=True):
        with torch.no_grad():  # jacobian() turns gradients on for itself
            u = inverse(x)
            assert torch.allclose(forward(u), x, atol=1e-10, rtol=0)  # it is the inverse
            jac = jacobian(inverse, x)
            by_hand = base.log_prob(u) + torch.linalg.slogdet(jac).logabsdet
        assert abs(float(lp - by_hand)) < 1e-10, (x, float(lp), float(by_hand))
    # Each layer is a module of the model and a parent of x in the graph.
    g = model.graph
    assert all(g.has_edge(f"layer_{k}", "x") for k in range(1, flows.NUM_LAYERS + 1))
    assert g.nodes["layer_1"]["kind"] == "module"


def test_untrained_flow_is_nearly_its_base_distribution() -> None:
    """``start_at_identity``: equal bins, unit inner slopes; Pyro's end slopes are 1 - 1e-3,
    so each spline moves a point by at most 1.7e-4 (measured on a fine grid of [-4, 4]) and
    the log-density of the flow stays within 1e-2 of the base's (measured: 4e-3)."""
    model = flows.build(seed=3).to("cpu", torch.float64)
    x = 1.5 * torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    gap = (flows.log_density(model, x) - base.log_prob(x)).abs().max()
    assert float(gap) < 1e-2, float(gap)
    inverse = _inverse(model)
    with torch.no_grad():  # three swaps between four layers: the coordinates end swapped
        assert float((inverse(x) - x.flip(-1)).abs().max()) < flows.NUM_LAYERS * 2e-4


def _fitted(name: str, steps: int, seed: int = 0) -> tuple[object, torch.Tensor, torch.Tensor]:
    train = flows.TOYS[name](1000, seed, torch.float32)
    test = flows.TOYS[name](1000, seed + 1, torch.float32)
    model = flows.build(seed=seed).to("cpu", torch.float32)
    result = flows.fit_flow(model, train, steps, seed=seed)
    assert all(math.isfinite(v) for v in result.losses)
    return model, train, test


def test_short_fit_beats_the_gaussian_and_the_density_integrates_to_one() -> None:
    model, train, test = _fitted("two_moons", 150)  # the float32 path
    model.to("cpu", torch.float64)
    train64, test64 = train.double(), test.double()
    gauss = flows.gaussian_reference(train64)
    # The reference is the maximum-likelihood Gaussian: its score vanishes at the data.
    loc = gauss.loc.detach().clone().requires_grad_()
    dist.MultivariateNormal(loc, gauss.covariance_matrix).log_prob(train64).sum().backward()
    assert float(loc.grad.abs().max()) < 1e-9
    # Held-out log-likelihood per point: flow above the Gaussian by more than 4 standard
    # errors of the paired difference (measured: -1.08 against -1.90).
    diff = flows.log_density(model, test64) - gauss.log_prob(test64)
    assert float(diff.mean()) > 4 * float(diff.std()) / math.sqrt(len(diff)), float(diff.mean())

    # Each randomly shifted grid is an unbiased estimate of the integral over the square, so
    # 1 must be within 4 standard errors (t with 11 degrees of freedom: p = 0.002), and the
    # error must be small for the check to say anything.
    integral = flows.integrate(model, half_width=5.0, cells=120, shifts=12)
    assert integral.error < 2e-3, integral
    assert abs(integral.value - 1) < 4 * integral.error, integral
    # The check can fail: without the Jacobian term the same grids are far from 1.
    inverse = _inverse(model)
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    points, area = flows.midpoint_grid(5.0, 120, test64)
    with torch.no_grad():
        no_jacobian = float(base.log_prob(inverse(points)).exp().sum() * area)
    assert abs(no_jacobian - 1) > 0.1, no_jacobian


def _iaf_setup(dtype: torch.dtype) -> tuple[object, object, torch.Tensor]:
    model = vae_digits.build(None).to("cpu", dtype)
    guide = flows.build_iaf_guide(model)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a flow far from the identity
        torch.manual_seed(7)
        for name in ("iaf_1", "iaf_2"):
            for p in guide[name].value.parameters():
                p.add_(0.1 * torch.randn_like(p))
    pixels = vae_digits.load_images(dtype)[1][:5]
    return model, guide, pixels


def test_iaf_guide_density_of_its_own_samples_by_hand() -> None:
    _, guide, pixels = _iaf_setup(torch.float64)
    assert guide.uncovered == []
    assert guide.graph.has_edge("iaf_1", "z") and guide.graph.has_edge("encoder", "z")
    trace = poutine.trace(guide.pyro_guide).get_trace(pixels=pixels)
    site = trace.nodes["z"]
    z = site["value"].detach()
    compiled = site["fn"].log_prob(site["value"]).detach()  # the cached sampling pass
    # Through the IAF's inverse. Pyro 1.9.2's AffineAutoregressive._inverse starts from
    # zeros in torch's default dtype, so a float64 guide needs float64 as the default.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        uncached = site["fn"].log_prob(z.clone()).detach()
    finally:
        torch.set_default_dtype(default)

    loc, scale = (t.detach() for t in guide["encoder"].value(pixels))
    layers = [guide["iaf_1"].value, guide["iaf_2"].value]

    def forward(u: torch.Tensor) -> torch.Tensor:  # u -> z, uncached
        u = layers[0]._call(u)
        return layers[1]._call(u.flip(-1))

    for i in range(len(pixels)):
        with torch.no_grad():  # jacobian() turns gradients on for itself
            # u = forward⁻¹(z[i]) by Newton's method on the forward map alone.
            u = z[i].clone()
            for _ in range(30):
                u = u - torch.linalg.solve(jacobian(forward, u), forward(u) - z[i])
            assert torch.allclose(forward(u), z[i], atol=1e-12, rtol=0)
            logdet = torch.linalg.slogdet(jacobian(forward, u)).logabsdet
            by_hand = dist.Normal(loc[i], scale[i]).log_prob(u).sum() - logdet
        assert abs(float(compiled[i] - by_hand)) < 1e-10, (i, float(compiled[i]), float(by_hand))
        assert abs(float(uncached[i] - by_hand)) < 1e-10


def test_iaf_guide_trains_in_float32_and_is_evaluated_per_image() -> None:
    import genppl

    train, test = vae_digits.load_images(torch.float32)
    model = vae_digits.build().to("cpu", torch.float32)
    guide = flows.build_iaf_guide(model)
    result = genppl.fit(model, {"pixels": train}, engine="svi", guide=guide, steps=40,
                        lr=1e-3, seed=0, progress=False)
    ev = flows.held_out_bounds(model, result, test[:50], num_particles=32, iwae=100)
    assert ev.elbo_items is not None and ev.elbo_items.shape == (50,)
    assert abs(float(ev.elbo_items.sum()) - ev.elbo) < 1e-6 * abs(ev.elbo)
    assert ev.iwae is not None and ev.iwae_se is not None
    # IWAE-100 of each image is above its ELBO in expectation; on the sum of 50 images the
    # gap is well above both Monte Carlo errors (measured with 8 particles: 13 nats in all,
    # 0.26 per image, against standard errors of 2.8 and 0.5; 32 particles halve the first).
    assert ev.iwae - ev.elbo > 4 * math.hypot(ev.elbo_se, ev.iwae_se), (ev.elbo, ev.iwae)
    # A bound on log p of binary 64-pixel images: below 0, above fair coins by a margin.
    per_image = ev.elbo / 50
    assert vae_digits.NUM_PIXELS * math.log(0.5) < per_image < 0, per_image


def test_run_reports_both_parts_and_writes_pictures(tmp_path: Path) -> None:
    report = flows.ENTRY.run(RunConfig(steps=20, out=tmp_path, progress=False))
    assert report.entry == "flows" and report.engine == "svi"
    for key in ("two_moons_flow_test_ll", "rings_gaussian_test_ll", "rings_gmm_test_ll",
                "two_moons_integral", "diagonal_test_elbo", "iaf_test_elbo", "iaf_test_iwae",
                "iaf_gain_se"):
        assert math.isfinite(report.metrics[key]), key
    assert len(report.files) == 3
    for f in report.files:
        assert Path(f).is_file() and Path(f).stat().st_size > 0

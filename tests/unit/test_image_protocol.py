"""``genppl.evaluate.images`` and ``bdmc``: the images protocol against brute-force truths.

Oracles: a decoder of 8 binary pixels from a 2-d Gaussian latent, whose log p(x) is a 2-d
integral computed by Gauss-Hermite quadrature (60 x 60 nodes: exact to rounding for this
smooth integrand), with its conditional variant (a per-label bias, log p(x | y)); and a
mixture of product-Bernoullis, whose log p(x) is a logsumexp over its components. The
tolerances are the estimators' own standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl import ModelError
from genppl.evaluate import AISSettings, bdmc, images

pytestmark = pytest.mark.unit

F64, F32 = torch.float64, torch.float32
LATENT, PIXELS, CLASSES, N = 2, 8, 3, 40
AIS = AISSettings(num_temperatures=200, num_chains=32, leapfrog_steps=5)


def decoder_model(dtype: torch.dtype, conditional: bool = False
                  ) -> tuple[genppl.Model, genppl.Guide]:
    """z ~ N(0, I_2); x ~ Bernoulli(sigmoid(W z + b [+ c_y])), and an untrained amortised
    Gaussian guide (its ELBO is far from log p(x): a bound with room to tighten)."""
    torch.manual_seed(0)
    decoder = torch.nn.Linear(LATENT, PIXELS)
    with torch.no_grad():
        decoder.weight.mul_(3.0)
    m = genppl.Model("toy_decoder")
    m.module("decoder", decoder)
    m.param("label_bias", torch.linspace(-1.0, 1.0, CLASSES * PIXELS).reshape(CLASSES, PIXELS))
    with m.plate("images"):
        m.latent("z", lambda: dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
        if conditional:
            m.input("label")
            m.observed("pixels", lambda z, label, decoder, label_bias: dist.Bernoulli(
                logits=decoder(z) + label_bias[label]).to_event(1))
        else:
            m.observed("pixels", lambda z, decoder: dist.Bernoulli(
                logits=decoder(z)).to_event(1))
    m = m.to(dtype=dtype)
    g = m.guide()
    g.module("encoder", torch.nn.Linear(PIXELS, 2 * LATENT))

    def q(pixels: torch.Tensor, encoder: torch.nn.Module) -> dist.Distribution:
        loc, raw = encoder(pixels).chunk(2, -1)
        return dist.Normal(loc, torch.nn.functional.softplus(raw) + 0.3).to_event(1)

    g.latent("z", q)
    return m, g.to(m.device, m.dtype)


def logits_of(model: genppl.Model, z: torch.Tensor, labels: torch.Tensor | None
              ) -> torch.Tensor:
    net = model["decoder"].value
    out = z @ net.weight.detach().double().T + net.bias.detach().double()
    if labels is not None:
        out = out + model["label_bias"].value.double()[labels][:, None, :]
    return out


def log_evidence(model: genppl.Model, x: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """log p(x_i) (or log p(x_i | y_i)) of each image by 60 x 60 Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    z1, z2 = np.meshgrid(nodes, nodes, indexing="ij")
    z = torch.tensor(np.stack([z1.ravel(), z2.ravel()], -1), dtype=F64)
    log_w = torch.tensor(np.outer(weights, weights).ravel() / (2 * math.pi), dtype=F64).log()
    ll = dist.Bernoulli(logits=logits_of(model, z, labels)).log_prob(
        x.double()[:, None, :]).sum(-1)
    return torch.logsumexp(ll + log_w, -1)


def simulated(model: genppl.Model, labels: torch.Tensor | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(N, LATENT, generator=gen, dtype=F64)
    logits = logits_of(model, z[:, None, :], labels)[:, 0]
    return torch.bernoulli(torch.sigmoid(logits), generator=gen)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_elbo_iwae_and_ais_rows_bound_and_approach_the_quadrature_truth(dtype: torch.dtype
                                                                        ) -> None:
    """Costs (nats/image): truth <= AIS, IWAE <= ELBO, each within 3 standard errors of its
    expectation's side; IWAE-500 and AIS close to the truth, the ELBO far above it."""
    model, guide = decoder_model(dtype)
    x = simulated(model)
    truth = -float(log_evidence(model, x).mean())
    rows = {e: images(model, estimator=e, guide=guide if e != "ais" else None, test_images=x,
                      particles=100, k=500, ais=AIS) for e in ("elbo", "iwae", "ais")}
    for estimator, row in rows.items():
        assert row.bound == "lower" and row.unit == "nats/image"
        assert row.value > truth - 3 * row.stderr, estimator
        assert row.settings["images"] == N and row.settings["estimator"] == estimator
    assert rows["elbo"].value > truth + 1.0  # an untrained guide: a loose bound
    assert rows["iwae"].value < rows["elbo"].value - 1.0
    assert rows["iwae"].value < truth + 0.5
    assert abs(rows["ais"].value - truth) < 3 * rows["ais"].stderr
    assert rows["iwae"].estimator == "IWAE-500" and rows["iwae"].settings["k"] == 500
    assert rows["ais"].settings["num_temperatures"] == AIS.num_temperatures
    assert 1 <= rows["ais"].diagnostics["ess_min"] <= AIS.num_chains
    assert rows["ais"].settings["start"] == "prior"
    guided = images(model, estimator="ais", guide=guide, test_images=x, ais=AIS)
    assert guided.settings["start"] == "guide" and guided.bound == "lower"
    assert abs(guided.value - truth) < 3 * guided.stderr


def test_a_conditional_model_is_scored_on_log_p_of_x_given_its_labels() -> None:
    model, guide = decoder_model(F64, conditional=True)
    labels = torch.arange(N) % CLASSES
    x = simulated(model, labels)
    truth = -float(log_evidence(model, x, labels).mean())
    row = images(model, estimator="ais", labels="label", test_images=x, test_labels=labels,
                 ais=AIS)
    assert abs(row.value - truth) < 3 * row.stderr
    iwae = images(model, estimator="iwae", guide=guide, labels="label", test_images=x,
                  test_labels=labels, particles=2, k=500)
    assert iwae.value > truth - 3 * iwae.stderr
    # the labels are read: scored against other labels, the images cost more, as computed
    wrong = (labels + 1) % CLASSES
    truth_wrong = -float(log_evidence(model, x, wrong).mean())
    other = images(model, estimator="ais", labels="label", test_images=x, test_labels=wrong,
                   ais=AIS)
    assert truth_wrong > truth + 0.3
    assert abs(other.value - truth_wrong) < 3 * other.stderr


@pytest.mark.parametrize("dtype", [F64, F32])
def test_bdmc_brackets_the_log_likelihood_of_the_digits_it_simulates(dtype: torch.dtype
                                                                     ) -> None:
    """With few temperatures the forward cost lies above the truth and the reverse one
    below it (the sandwich); with 200 both are within 3 standard errors of it and the gap
    has shrunk."""
    model, _ = decoder_model(dtype)
    short = bdmc(model, num_images=N, ais=AISSettings(num_temperatures=10, num_chains=32,
                                                      leapfrog_steps=5))
    truth = -float(log_evidence(model, short.simulated["pixels"]).mean())
    assert short.simulated["pixels"].shape == (N, PIXELS)
    assert short.simulated["z"].shape == (N, LATENT)
    assert short.forward > truth > short.reverse
    long = bdmc(model, num_images=N, ais=AIS)
    assert torch.equal(long.simulated["pixels"], short.simulated["pixels"])  # same seed
    assert abs(long.forward - truth) < 3 * long.forward_stderr
    assert abs(long.reverse - truth) < 3 * long.reverse_stderr
    assert abs(long.gap) < short.gap / 5
    diagnostics = long.diagnostics()
    assert diagnostics["bdmc_images"] == N and diagnostics["bdmc_gap"] == long.gap


def mixture(dtype: torch.dtype) -> genppl.Model:
    """A mixture of 3 product-Bernoullis over 8 pixels."""
    gen = torch.Generator().manual_seed(2)
    probs = 0.1 + 0.8 * torch.rand(PIXELS, 3, generator=gen, dtype=F64)
    m = genppl.Model("bernoulli_mixture")
    m.param("weights", torch.tensor([0.2, 0.3, 0.5], dtype=F64),
            constraint=dist.constraints.simplex)
    m.param("probs", probs, constraint=dist.constraints.unit_interval)
    with m.plate("images"):
        m.latent("c", lambda weights: dist.Categorical(weights))
        with m.plate("pixel_grid", PIXELS):
            m.observed("pixels", lambda c, probs: dist.Bernoulli(probs[:, c]))
    return m.to(dtype=dtype)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_the_exact_row_of_a_mixture_is_its_logsumexp(dtype: torch.dtype) -> None:
    model = mixture(dtype)
    gen = torch.Generator().manual_seed(3)
    x = torch.bernoulli(torch.full((N, PIXELS), 0.4, dtype=F64), generator=gen)
    weights, probs = model["weights"].value.double(), model["probs"].value.double()
    per_component = dist.Bernoulli(probs.T).log_prob(x[:, None, :]).sum(-1) + weights.log()
    truth = -float(torch.logsumexp(per_component, -1).mean())
    row = images(model, estimator="exact", test_images=x)
    assert row.bound == "exact" and row.stderr is None
    assert row.value == pytest.approx(truth, rel=1e-10 if dtype == F64 else 1e-5)


def test_bad_arguments_are_refused_by_name() -> None:
    model, guide = decoder_model(F64)
    x = simulated(model)
    with pytest.raises(ValueError, match=r"estimator='iwea'.*'iwae'"):
        images(model, estimator="iwea", guide=guide, test_images=x)
    with pytest.raises(ModelError, match="estimator='elbo' draws from a guide; pass guide="):
        images(model, estimator="elbo", test_images=x)
    with pytest.raises(ValueError, match="estimator='exact' uses no guide"):
        images(model, estimator="exact", guide=guide, test_images=x)
    with pytest.raises(ModelError, match=r"plate='image' is not a plate.*'images'"):
        images(model, estimator="ais", plate="image", test_images=x)
    with pytest.raises(ModelError, match=r"observed='x' is not an observed node.*pixels"):
        images(model, estimator="ais", observed="x", test_images=x)
    apart = genppl.Model("apart")
    with apart.plate("images"):
        apart.latent("z", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with apart.plate("rows"):
        apart.observed("pixels", lambda: dist.Bernoulli(torch.tensor(0.5)))
    with pytest.raises(ModelError, match="observed node 'pixels' is not inside plate "
                                         "'images'"):
        images(apart, estimator="ais", test_images=x)
    with pytest.raises(ValueError, match="test_images of shape \\(8,\\)"):
        images(model, estimator="ais", test_images=x[0])
    conditional, _ = decoder_model(F64, conditional=True)
    with pytest.raises(ModelError, match="reads input 'label'; pass labels='label'"):
        images(conditional, estimator="ais", test_images=x)
    with pytest.raises(ModelError, match="labels='y' is not an input"):
        images(conditional, estimator="ais", labels="y", test_images=x)
    with pytest.raises(ValueError, match="labels='label' needs test_labels, one per test "
                                         "image \\(40\\)"):
        images(conditional, estimator="ais", labels="label", test_images=x,
               test_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="num_images=0"):
        bdmc(model, num_images=0)

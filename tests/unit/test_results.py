"""``Posterior`` and ``FitResult``: summaries, ArviZ conversion and JSON digests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

import genppl
from genppl import FitResult, ModelError, Posterior

pytestmark = pytest.mark.unit

F64 = torch.float64
TRANS = torch.tensor([[0.7, 0.3], [0.4, 0.6]])


@pytest.fixture(autouse=True)
def _clean_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def prior_posterior(num_samples: int = 30) -> Posterior:
    """Draws of every node kind a posterior holds: a wide plate node first (more scalars than
    the summary's row limit), a global, a discrete chain node, a deterministic."""
    m = genppl.Model("kinds").to(dtype=F64)
    with m.plate("wide", 50):
        m.latent("eps", lambda: dist.Normal(0.0, 1.0))
    m.latent("mu", lambda: dist.Normal(3.0, 1.0))
    m.deterministic("twice", lambda mu: 2 * mu)
    with m.plate("seqs", 2), m.chain("t", 3):
        m.latent("z", lambda z_prev: dist.Categorical(TRANS[z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.5, 0.5])))
        m.observed("y", lambda z, mu: dist.Normal(mu + z, 1.0))
    return genppl.infer(m, engine="prior", num_samples=num_samples, seed=0, progress=False)


def two_chain_posterior() -> Posterior:
    g = torch.Generator().manual_seed(0)
    return Posterior("hand", "nuts", samples={
        "mu": torch.randn(2, 25, generator=g, dtype=F64) + 1.0,
        "locs": torch.randn(2, 25, 3, generator=g, dtype=F64),
        "z": torch.randint(0, 2, (2, 25, 4, 5), generator=g),
    })


def enum_posterior() -> Posterior:
    bn = genppl.Model("sprinkler")
    bn.cpt("rain", [], [0.8, 0.2])
    bn.cpt("sprinkler", ["rain"], [[0.6, 0.4], [0.99, 0.01]])
    bn.cpt("wet", ["rain", "sprinkler"], [[[1.0, 0.0], [0.1, 0.9]], [[0.2, 0.8], [0.01, 0.99]]],
           observed=True)
    return genppl.infer(bn, {"wet": torch.tensor(1)}, engine="enum")


def rows(summary: str) -> dict[str, list[str]]:
    """Summary lines by their first cell (the row label)."""
    out = {}
    for line in summary.splitlines()[2:]:
        cells = line.split()
        out[cells[0]] = cells[1:]
    return out


# --------------------------------------------------------------------------- Posterior


def test_samples_layout_and_chain_merging() -> None:
    post = prior_posterior()
    s = post.samples
    assert s["eps"].shape == (1, 30, 50)
    assert s["mu"].shape == (1, 30)
    assert s["z"].shape == (1, 30, 3, 2)  # (chain, draw, time, seqs)
    assert s["y"].shape == (1, 30, 3, 2)
    assert torch.allclose(s["twice"], 2 * s["mu"])
    two = two_chain_posterior()
    assert two["locs"].shape == (50, 3)
    assert torch.equal(two["locs"][25:], two.samples["locs"][1])
    assert torch.allclose(two.mean("mu"), two.samples["mu"].mean((0, 1)))
    assert torch.allclose(two.std("locs"), two.samples["locs"].reshape(50, 3).std(0))
    assert two.mean("z").dtype.is_floating_point  # integer draws averaged as floats
    with pytest.raises(ModelError, match="Did you mean 'mu'"):
        two["muu"]


def test_summary_has_a_row_for_every_node_even_past_the_row_limit() -> None:
    post = prior_posterior()
    text = post.summary()
    table = rows(text)
    assert text.splitlines()[0].startswith("kinds | engine=prior")
    for name in post.samples:
        assert any(label == name or label.startswith(name + "[") for label in table), name
    # a scalar's row reports its mean and sd
    mu = post.samples["mu"].reshape(-1)
    assert table["mu"][0] == f"{float(mu.mean()):.4g}"
    assert table["mu"][1] == f"{float(mu.std()):.4g}"
    # plate elements are indexed like the compact layout
    assert table["eps[0]"][0] == f"{float(post.samples['eps'][0, :, 0].mean()):.4g}"


def test_summary_of_multi_chain_draws_reports_arviz_diagnostics() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    post = two_chain_posterior()
    table = rows(post.summary())
    assert set(table) >= {"mu", "locs[0]", "locs[2]", "z[0,0]"}
    mcse, bulk, tail, rhat = (float(c) for c in table["mu"][4:8])
    draws = post.samples["mu"].double().numpy()

    def scalar(value: object) -> float:
        return float(torch.as_tensor(value).reshape(-1)[0])

    assert mcse == pytest.approx(scalar(az.mcse(draws, method="mean")), rel=0.05)
    assert bulk == pytest.approx(scalar(az.ess(draws, method="bulk")), abs=0.5)
    assert tail == pytest.approx(scalar(az.ess(draws, method="tail")), abs=0.5)
    assert rhat == pytest.approx(scalar(az.rhat(draws)), abs=5e-4)
    assert 1 < bulk < 200 and 0.8 < rhat < 1.3  # iid draws: ESS ~ 50, R-hat ~ 1


def test_summary_of_exact_marginals() -> None:
    post = enum_posterior()
    text = post.summary()
    assert "log p(data)=" in text.splitlines()[0]
    table = rows(text)
    for name in post.marginals:
        assert name in table
    p = post.marginals["rain"].tolist()
    assert f"P = ({p[0]:.4f}, {p[1]:.4f})" in text


def test_to_arviz_keeps_chains_draws_and_plate_axes() -> None:
    post = two_chain_posterior()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idata = post.to_arviz()
    for name, draws in post.samples.items():
        var = idata.posterior[name]
        assert var.dims[:2] == ("chain", "draw"), name
        assert var.shape == tuple(draws.shape), name
        assert (var.values == draws.numpy()).all()
    assert idata.attrs["engine"] == "nuts"
    assert idata.attrs["model"] == "hand"
    with pytest.raises(ModelError, match="marginals"):
        enum_posterior().to_arviz()


def test_arviz_future_warning_does_not_escape(tmp_path: Path) -> None:
    """ArviZ announces its refactor with a FutureWarning once per day, writing a stamp file in
    its cache dir right after warning. A subprocess with a fresh cache dir and warnings as
    errors must convert without failing; the stamp then proves the warning was raised (and
    swallowed by genppl) rather than never issued."""
    cache = tmp_path / "cache"
    code = textwrap.dedent("""
        import torch
        from genppl import Posterior
        post = Posterior("m", "nuts", samples={"mu": torch.zeros(2, 5)})
        print(post.to_arviz().posterior["mu"].dims)
    """)
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)}, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "('chain', 'draw')" in done.stdout
    if not list(cache.rglob("daily_warning")):
        pytest.skip("this ArviZ version does not announce its refactor")


def test_to_dict_is_json_and_agrees_with_the_draws() -> None:
    post = prior_posterior()
    d = json.loads(json.dumps(post.to_dict(), allow_nan=False))
    assert d["model"] == "kinds" and d["engine"] == "prior"
    assert set(d["mean"]) == set(post.samples) == set(d["sd"])
    assert d["mean"]["mu"] == pytest.approx(float(post.mean("mu")))
    assert torch.allclose(torch.tensor(d["mean"]["eps"], dtype=F64), post.mean("eps"))
    assert torch.allclose(torch.tensor(d["sd"]["z"]), post.std("z").float())
    exact = enum_posterior()
    e = json.loads(json.dumps(exact.to_dict(), allow_nan=False))
    assert e["log_evidence"] == pytest.approx(exact.log_evidence)
    assert e["marginals"]["rain"] == pytest.approx(exact.marginals["rain"].tolist())
    assert e["mean"] == {}


# --------------------------------------------------------------------------- FitResult


def test_fit_result_summary_and_to_dict() -> None:
    m = genppl.Model("reg").to(dtype=F64)
    m.param("w", torch.zeros(3))
    m.param("noise", torch.tensor(1.0), constraint=constraints.positive)
    m.param("big", torch.zeros(10_001))
    with m.plate("data"):
        m.input("u")
        m.observed("y", lambda u, w, noise, big: dist.Normal(u @ w + 0 * big.sum(), noise))
    u = torch.randn(20, 3, dtype=F64)
    y = u @ torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    result = genppl.fit(m, {"u": u, "y": y}, engine="svi", steps=30, lr=0.1, seed=0,
                        progress=False)
    assert isinstance(result, FitResult) and result.posterior is None
    assert set(result.params) == {"w", "noise", "big"}
    text = result.summary()
    assert text.splitlines()[0].startswith("reg | engine=svi")
    assert "30 steps" in text and f"final loss={result.losses[-1]:.4f}" in text
    w = result.params["w"].tolist()
    assert f"w (3,): [{w[0]:.4g}, {w[1]:.4g}, {w[2]:.4g}]" in text
    assert "big (10001,): [0, 0, 0, 0, 0, 0, 0, 0, ...]" in text
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert d["steps"] == 30 and d["final_loss"] == result.losses[-1]
    assert d["params"]["w"] == pytest.approx(w)
    assert d["params"]["noise"] == pytest.approx(float(result.params["noise"]))
    assert "big" not in d["params"]  # too large for a digest
    assert d["posterior"] is None
    # learning happened: the noise shrinks on noiseless data
    assert result.losses[-1] < result.losses[0]


def test_fit_result_with_a_posterior_digest() -> None:
    m = genppl.Model("conj").to(dtype=F64)
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    result = genppl.fit(m, {"x": torch.ones(4, dtype=F64)}, engine="svi", steps=10,
                        num_samples=7, seed=0, progress=False)
    assert result.posterior is not None and result.posterior.samples["mu"].shape == (1, 7)
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert d["posterior"]["mean"]["mu"] == pytest.approx(float(result.posterior.mean("mu")))
    assert math.isfinite(d["posterior"]["elbo"])

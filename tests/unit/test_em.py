"""``engine="em"``: the same trajectory as scikit-learn's EM on a Gaussian mixture, a naive
enumeration EM on a Bayesian network with hidden values, closed-form counts on complete
data (with pseudo-counts), a log-likelihood that never decreases, and clear errors."""

from __future__ import annotations

import itertools
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.mixture import GaussianMixture

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit
F64 = torch.float64


@pytest.fixture(autouse=True)
def _fresh_params() -> None:
    pyro.clear_param_store()


def gmm(w0: torch.Tensor, mu0: torch.Tensor, s0: torch.Tensor) -> genppl.Model:
    m = genppl.Model("gmm")
    m.param("w", w0, constraint=dist.constraints.simplex)
    m.param("mu", mu0)
    m.param("sigma", s0, constraint=dist.constraints.positive)
    with m.plate("data"):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z, mu, sigma: dist.Normal(mu[z], sigma[z]))
    return m.to(dtype=F64)


def _data(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(60, generator=g, dtype=F64) * 0.5 - 1,
                      torch.randn(40, generator=g, dtype=F64) + 2])


@pytest.mark.parametrize("iterations", [1, 4])
def test_gaussian_mixture_follows_scikit_learns_em(iterations: int) -> None:
    x = _data()
    w0, mu0, s0 = (torch.tensor(v, dtype=F64) for v in ([0.3, 0.7], [-0.5, 0.5], [1.0, 2.0]))
    fit = genppl.fit(gmm(w0, mu0, s0), {"x": x}, engine="em", steps=iterations, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: "did not converge" after so few steps
        sk = GaussianMixture(3 - 1, covariance_type="diag", max_iter=iterations, tol=0,
                             reg_covar=0, weights_init=w0.numpy(),
                             means_init=mu0[:, None].numpy(),
                             precisions_init=(1 / s0**2)[:, None].numpy()).fit(x[:, None].numpy())
    torch.testing.assert_close(fit.params["w"], torch.tensor(sk.weights_), rtol=1e-10, atol=0)
    torch.testing.assert_close(fit.params["mu"], torch.tensor(sk.means_[:, 0]), rtol=1e-10,
                               atol=0)
    torch.testing.assert_close(fit.params["sigma"], torch.tensor(sk.covariances_[:, 0]).sqrt(),
                               rtol=1e-10, atol=0)


@pytest.mark.parametrize("pseudo_counts", [0.0, 2.0])
def test_objective_never_decreases(pseudo_counts: float) -> None:
    x = _data(1)
    model = gmm(torch.tensor([0.5, 0.5], dtype=F64), torch.tensor([0.0, 0.1], dtype=F64),
                torch.tensor([3.0, 3.0], dtype=F64))
    fit = genppl.fit(model, {"x": x}, engine="em", steps=40, tol=0,
                     pseudo_counts=pseudo_counts)
    objective = [-loss for loss in fit.losses]
    assert len(objective) == 40
    assert all(b >= a - 1e-9 * abs(a) for a, b in itertools.pairwise(objective))
    assert objective[-1] > objective[0] + 10  # and it actually climbed


def network(tables: dict[str, torch.Tensor]) -> genppl.Model:
    m = genppl.Model("abc")
    m.cpt("a", [], tables["a"])
    m.cpt("b", ["a"], tables["b"])
    m.cpt("c", ["a", "b"], tables["c"])
    return m.to(dtype=F64)


def _tables(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def simplex(*shape: int) -> torch.Tensor:
        w = 0.2 + torch.rand(*shape, generator=g, dtype=F64)
        return w / w.sum(-1, keepdim=True)
    return {"a": simplex(2), "b": simplex(2, 3), "c": simplex(2, 3, 2)}


def _naive_em_step(tables: dict[str, torch.Tensor], b: torch.Tensor, c: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
    """One EM step by enumerating the hidden ``a`` of every case: the naive reference."""
    counts = {k: torch.zeros_like(v) for k, v in tables.items()}
    for bi, ci in zip(b.tolist(), c.tolist(), strict=True):
        joint = torch.stack([tables["a"][a] * tables["b"][a, bi] * tables["c"][a, bi, ci]
                             for a in range(2)])
        post = joint / joint.sum()
        for a in range(2):
            counts["a"][a] += post[a]
            counts["b"][a, bi] += post[a]
            counts["c"][a, bi, ci] += post[a]
    return {k: v / v.sum(-1, keepdim=True) for k, v in counts.items()}


def test_cpts_with_a_hidden_variable_follow_naive_em() -> None:
    truth, start = _tables(0), _tables(1)
    g = torch.Generator().manual_seed(2)
    a = torch.multinomial(truth["a"], 200, replacement=True, generator=g)
    b = torch.stack([torch.multinomial(truth["b"][i], 1, generator=g)[0] for i in a])
    c = torch.stack([torch.multinomial(truth["c"][i, j], 1, generator=g)[0]
                     for i, j in zip(a, b, strict=True)])
    model = network(start)
    fit = genppl.fit(model, {"b": b, "c": c}, engine="em", steps=3, tol=0)
    expected = start
    for _ in range(3):
        expected = _naive_em_step(expected, b, c)
    for name in ("a", "b", "c"):
        torch.testing.assert_close(fit.params[name], expected[name], rtol=0, atol=1e-12)
        # the model's own tables were re-estimated in place
        torch.testing.assert_close(model[name].fn.table, expected[name], rtol=0, atol=1e-12)


def test_complete_data_gives_smoothed_counts_in_one_step() -> None:
    model = network(_tables(3))
    a = torch.tensor([0, 0, 1, 1, 1])
    b = torch.tensor([0, 2, 2, 2, 1])
    c = torch.tensor([1, 1, 0, 1, 0])
    fit = genppl.fit(model, {"a": a, "b": b, "c": c}, engine="em", steps=1, pseudo_counts=1.0)
    expected_b = torch.tensor([[2, 1, 2], [1, 2, 3]], dtype=F64)  # counts + 1
    torch.testing.assert_close(fit.params["b"], expected_b / expected_b.sum(-1, keepdim=True))
    torch.testing.assert_close(fit.params["a"], torch.tensor([3 / 7, 4 / 7], dtype=F64))


def test_hmm_baum_welch_climbs_and_stops_when_converged() -> None:
    m = genppl.Model("hmm")
    m.param("start", torch.tensor([0.5, 0.5]), constraint=dist.constraints.simplex)
    m.param("trans", torch.tensor([[0.8, 0.2], [0.3, 0.7]]), constraint=dist.constraints.simplex)
    m.param("emit", torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]),
            constraint=dist.constraints.simplex)
    with m.plate("seq"), m.chain("t"):
        m.latent("z", lambda z_prev, trans: dist.Categorical(trans[z_prev]),
                 init=lambda start: dist.Categorical(start))
        m.observed("x", lambda z, emit: dist.Categorical(emit[z]))
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 3, (50, 3), generator=g)
    fit = genppl.fit(m.to(dtype=F64), {"x": x}, engine="em", steps=500, tol=1e-6)
    ll = fit.info["log_likelihood"]
    assert fit.info["converged"] and len(ll) < 500
    assert all(b >= a - 1e-9 * abs(a) for a, b in itertools.pairwise(ll))
    assert torch.allclose(fit.params["trans"].sum(-1), torch.ones(2, dtype=F64))


def test_a_param_behind_a_transformation_is_a_clear_error() -> None:
    m = genppl.Model("softmaxed")
    m.param("logits", torch.zeros(2))
    with m.plate("data"):
        m.latent("z", lambda logits: dist.Categorical(logits=logits))
        m.observed("x", lambda z: dist.Normal(z * 1.0, 1.0))
    with pytest.raises(ModelError, match=r"'z'.*'logits'.*closed-form.*svi"):
        genppl.fit(m, {"x": torch.zeros(3)}, engine="em")
    with pytest.raises(ModelError, match=r"learn=.*'nope'"):
        genppl.fit(m, {"x": torch.zeros(3)}, engine="em", learn=["nope"])

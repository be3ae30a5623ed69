"""``engine="cd"`` against a tiny RBM enumerated exactly.

Oracles, all written here from the RBM energy ``E = b.v + c.h + v.W.h``: the distribution of
CD-k's negative state is the data's posterior pushed through k block Gibbs sweeps, computed
as a product of 32 x 32 transition matrices; its expected update, and the variance of one
copy's contribution, follow exactly, so one update over thousands of copies is checked by a
z-test at 5 standard errors (a chance failure below 1e-5 over all 11 params). CD with many
sweeps must give the exact log-likelihood gradient (autograd of the enumerated
log-likelihood); PCD's persistent chains must reach the model distribution. The exact
engine's log-likelihood of the gallery's tiny RBM is checked against the RBM formula. The
sufficient statistics (Gram matrix, histogram, bincount) are checked against counting by
hand, and a run is checked to ground the model and plan its colours once.
"""

from __future__ import annotations

import itertools
import math

import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

import genppl
from genppl.engines.cd import Statistics
from genppl.errors import ModelError
from genppl.gibbs import kernel
from genppl.gibbs.grounding import FactorGraph, FactorGroup, ground
from genppl.gibbs.kernel import colouring
from genppl.tabulation.tabulation import model_factors
from models_gallery.rbm_digits import exact_log_likelihood, rbm, rbm_units

pytestmark = pytest.mark.unit
F64 = torch.float64
NV, NH = 3, 2
CASES = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0]])


def _params() -> dict[str, torch.Tensor]:
    """Weights strong enough that one sweep from the data is far from the model."""
    return {"W": torch.tensor([[4.0, -3.0], [-2.0, 5.0], [3.0, 2.0]], dtype=F64),
            "b": torch.tensor([-0.5, 0.3, -1.0], dtype=F64),
            "c": torch.tensor([0.4, -0.8], dtype=F64)}


class Enumerated:
    """Every joint state ``x = (v, h)`` of the tiny RBM, its energy and features
    ``phi(x) = dE/d(W, b, c)``, and the block Gibbs sweep (v given h, then h given v) as a
    transition matrix."""

    def __init__(self, p: dict[str, torch.Tensor]) -> None:
        x = torch.tensor(list(itertools.product((0, 1), repeat=NV + NH)), dtype=F64)
        self.v, self.h = x[:, :NV], x[:, NV:]
        self.energy = self.v @ p["b"] + self.h @ p["c"] + ((self.v @ p["W"]) * self.h).sum(-1)
        self.phi = torch.cat([(self.v[:, :, None] * self.h[:, None, :]).reshape(len(x), -1),
                              self.v, self.h], 1)
        same_h = (self.h[:, None, :] == self.h[None, :, :]).all(-1)
        same_v = (self.v[:, None, :] == self.v[None, :, :]).all(-1)
        self.sweep = self._block(same_h) @ self._block(same_v)

    def _block(self, keep: torch.Tensor) -> torch.Tensor:
        """Redraw the other layer from its conditional, keeping the states ``keep`` marks."""
        logits = torch.where(keep, self.energy[None, :], -math.inf)
        return torch.softmax(logits, 1)

    def posterior(self, case: torch.Tensor) -> torch.Tensor:
        """p(x) over joint states for ``v = case`` and ``h ~ p(h | v)``."""
        match = (self.v == case.to(F64)).all(-1)
        return torch.softmax(torch.where(match, self.energy, -math.inf), 0)

    def model(self) -> torch.Tensor:
        return torch.softmax(self.energy, 0)

    def cd(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected CD-k update per copy (mean over CASES) and the variance of one copy's
        ``phi(positive) - phi(negative)`` (mean over CASES)."""
        steps = torch.linalg.matrix_power(self.sweep, k)
        means, variances = [], []
        for case in CASES:
            pair = self.posterior(case)[:, None] * steps  # joint of (positive, negative)
            diff = self.phi[:, None, :] - self.phi[None, :, :]
            mean = (pair[..., None] * diff).sum((0, 1))
            means.append(mean)
            variances.append((pair[..., None] * (diff - mean) ** 2).sum((0, 1)))
        return torch.stack(means).mean(0), torch.stack(variances).mean(0)


def _log_likelihood_gradient(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """d/d(W, b, c) of the mean log-likelihood of CASES, by autograd of the enumeration."""
    leaves = {k: v.clone().requires_grad_() for k, v in p.items()}
    e = Enumerated(leaves)
    ll = torch.stack([torch.logsumexp(torch.where((e.v == c.to(F64)).all(-1), e.energy,
                                                  -math.inf), 0) for c in CASES]).mean()
    ll = ll - torch.logsumexp(e.energy, 0)
    grads = torch.autograd.grad(ll, [leaves["W"], leaves["b"], leaves["c"]])
    return torch.cat([g.reshape(-1) for g in grads])


def _one_update(k: int, copies: int, dtype: torch.dtype = F64, seed: int = 0) -> torch.Tensor:
    """The engine's first update with lr = 1 on CASES repeated to ``copies`` cases, all in
    one minibatch: the CD estimate itself, flattened like ``Enumerated.phi``."""
    model = rbm(NV, NH).to(dtype=dtype)
    data = CASES.repeat(copies // len(CASES), 1)
    init = {n: v.to(dtype) for n, v in _params().items()}
    fit = genppl.fit(model, {"v": data}, engine="cd", k=k, steps=1, lr=1.0,
                     batch_size=len(data), seed=seed, init=init, progress=False)
    return torch.cat([(fit.params[n] - init[n]).to(F64).reshape(-1) for n in ("W", "b", "c")])


def _within(estimate: torch.Tensor, expected: torch.Tensor, se: torch.Tensor) -> None:
    z = (estimate - expected) / se
    assert bool((z.abs() <= 5).all()), f"z-scores {z.tolist()}"


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cd1_update_has_the_exact_cd1_expectation(dtype: torch.dtype) -> None:
    copies = 8000
    e = Enumerated(_params())
    mean, variance = e.cd(1)
    estimate = _one_update(1, copies, dtype)
    _within(estimate, mean, (variance / copies).sqrt())
    # CD-1 is biased here: its expectation is far from the log-likelihood gradient, so the
    # check above would fail for a sampler that ran to the model distribution instead.
    bias = (mean - _log_likelihood_gradient(_params())).abs()
    assert float((bias / (variance / copies).sqrt()).max()) > 10


def test_cd_with_many_sweeps_estimates_the_log_likelihood_gradient() -> None:
    copies, k = 8000, 100
    e = Enumerated(_params())
    mixed = torch.linalg.matrix_power(e.sweep, k)
    assert float((mixed - e.model()[None, :]).abs().max()) < 1e-10  # k sweeps forget the data
    _, variance = e.cd(k)
    estimate = _one_update(k, copies)
    _within(estimate, _log_likelihood_gradient(_params()), (variance / copies).sqrt())


def test_a_plate_free_model_with_padded_states() -> None:
    """Not an RBM: a binary ``a`` (the data, one case per entry) and a three-state ``z``
    coupled by a learnable table, so the grounding pads ``a`` to three states with -inf.
    CD with many sweeps estimates the exact gradient, ``p(z | a) - p(a, z)`` per table
    cell averaged over the data."""
    theta = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=F64)
    m = genppl.Model("pair")
    m.param("theta", theta)
    m.variable("a", 2)
    m.variable("z", 3)
    m.factor("coupling", lambda a, z, theta: Vindex(theta)[a, z])
    data = torch.tensor([0, 1, 1, 0, 1]).repeat(1600)
    fit = genppl.fit(m.to(dtype=F64), {"a": data}, engine="cd", k=20, steps=1, lr=1.0,
                     batch_size=len(data), seed=0, progress=False)
    joint = torch.softmax(theta.reshape(-1), 0).reshape(2, 3)
    onehot = torch.nn.functional.one_hot(data, 2).to(F64)
    positive = onehot[:, :, None] * torch.softmax(theta, 1)[data][:, None, :]  # (N, 2, 3)
    expected = positive.mean(0) - joint
    # Each copy adds an indicator of its positive cell minus one of its negative cell,
    # independent after 20 sweeps: variance of a cell = p_pos (1 - p_pos) + p (1 - p).
    p_pos = positive.mean(0)
    se = ((p_pos * (1 - p_pos) + joint * (1 - joint)) / len(data)).sqrt()
    _within((fit.params["theta"] - theta).reshape(-1), expected.reshape(-1), se.reshape(-1))


def test_persistent_chains_reach_the_model_distribution() -> None:
    """With params held (lr tiny), PCD's chains make one sweep per update and keep going,
    so after 100 updates the fantasy particles are draws of the model; CD-1's negatives stay
    one sweep from the data, which is far from the model here."""
    copies = 4000
    e = Enumerated(_params())
    model = rbm(NV, NH).to(dtype=F64)
    fit = genppl.fit(model, {"v": CASES.repeat(copies // len(CASES), 1)}, engine="cd",
                     persistent=True, steps=100, lr=1e-12, batch_size=copies, seed=1,
                     init=_params(), progress=False)
    v = fit.info["negative"]["v"].reshape(copies, NV).to(F64)
    h = fit.info["negative"]["h"].reshape(copies, NH).to(F64)
    phi = torch.cat([(v[:, :, None] * h[:, None, :]).reshape(copies, -1), v, h], 1)
    p = e.model()
    mean = p @ e.phi
    se = ((p @ (e.phi - mean) ** 2) / copies).sqrt()
    _within(phi.mean(0), mean, se)
    one_sweep = torch.stack([e.posterior(c) @ e.sweep for c in CASES]).mean(0) @ e.phi
    assert float(((one_sweep - mean).abs() / se).max()) > 10


def test_the_rbm_declared_by_plates_colours_into_its_two_layers() -> None:
    graph = ground(model_factors(rbm(5, 3), {}))
    colours = colouring(graph)
    layers = sorted(torch.arange(b.offset, b.offset + b.size).tolist()
                    for b in graph.blocks.values())
    assert sorted(c.tolist() for c in colours) == layers
    assert [g.arity for g in graph.groups] == [1, 2] and len(graph.groups[1].tables) == 15


def _rbm_log_likelihood(p: dict[str, torch.Tensor], images: torch.Tensor) -> float:
    """Mean log p(v): the visible units summed out analytically (softplus), the hidden
    configurations enumerated for log Z."""
    softplus = torch.nn.functional.softplus
    hidden = torch.tensor(list(itertools.product((0, 1), repeat=len(p["c"]))), dtype=F64)
    log_z = torch.logsumexp(hidden @ p["c"] + softplus(p["b"] + hidden @ p["W"].T).sum(-1), 0)
    v = images.to(F64)
    return float((v @ p["b"] + softplus(p["c"] + v @ p["W"]).sum(-1)).mean() - log_z)


def test_the_rbm_formula_is_the_enumerated_log_likelihood() -> None:
    e = Enumerated(_params())
    expected = float(torch.stack([torch.logsumexp(torch.where(
        (e.v == c.to(F64)).all(-1), e.energy, -math.inf), 0) for c in CASES]).mean()
        - torch.logsumexp(e.energy, 0))
    assert _rbm_log_likelihood(_params(), CASES) == pytest.approx(expected, abs=1e-12)


def test_exact_engine_log_likelihood_of_the_tiny_rbm() -> None:
    gen = torch.Generator().manual_seed(3)
    p = {"W": torch.randn(16, 10, generator=gen, dtype=F64),
         "b": torch.randn(16, generator=gen, dtype=F64),
         "c": torch.randn(10, generator=gen, dtype=F64)}
    images = (torch.rand(50, 16, generator=gen) < 0.4).long()
    units = rbm_units(16, 10).to(dtype=F64)
    assert exact_log_likelihood(units, p, images) == pytest.approx(
        _rbm_log_likelihood(p, images), abs=1e-10)


def test_fit_follows_the_models_dtype_and_reports_its_run() -> None:
    model = rbm(NV, NH).to(dtype=torch.float32)
    fit = genppl.fit(model, {"v": CASES}, engine="cd", steps=5, batch_size=3, k=2, seed=0,
                     progress=False)
    assert all(v.dtype == torch.float32 for v in fit.params.values())
    assert len(fit.losses) == 5 and all(math.isfinite(x) for x in fit.losses)
    assert fit.info["batch_size"] == 3 and fit.info["colours"] == 2  # the two layers
    assert fit.info["negative"]["v"].shape == (3, NV, 1)


def _with_observed() -> genppl.Model:
    m = genppl.Model("directed")
    m.param("w", torch.tensor(0.0))
    m.variable("a", 2)
    m.observed("y", lambda a, w: dist.Bernoulli(logits=w * a))
    return m


@pytest.mark.parametrize(("make", "data", "options", "message"), [
    (_with_observed, {"y": torch.ones(3)}, {}, "observed node 'y'.*m.variable"),
    (lambda: rbm(NV, NH), None, {}, "needs data"),
    (lambda: rbm(NV, NH), {"x": CASES}, {}, "'x', which is not a finite variable"),
    (lambda: rbm(NV, NH), {"v": CASES[0]}, {}, r"shape \(3,\).*\(cases, 3\)"),
    (lambda: rbm(NV, NH), {"v": CASES + 1}, {}, "outside its states"),
    (lambda: rbm(NV, NH), {"v": CASES}, {"k": 0}, "k must be an int >= 1"),
    (lambda: rbm(NV, NH), {"v": CASES}, {"learn": ["V"]}, "learn= names 'V'"),
])
def test_bad_input_is_a_model_error(make, data, options, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelError, match=message):
        genppl.fit(make(), data, engine="cd", steps=1, progress=False, **options)


@pytest.mark.parametrize("pairs", [
    [[0, 3], [1, 3], [2, 4], [0, 4], [1, 5], [2, 6]],  # few instances: the Gram matrix
    [[i, i + 10] for i in range(10)],  # distinct instances: the bincount
])
def test_statistics_count_every_cell(pairs: list[list[int]]) -> None:
    """Counts per factor row and cell, with weights (+1 for one batch, -1 for another),
    equal counting each state of the batch by hand, for one-, two- and three-variable
    rows over three states."""
    v, k, b = max(max(p) for p in pairs) + 1, 3, 40
    groups = (FactorGroup(torch.zeros(v, k), torch.arange(v)[:, None]),
              FactorGroup(torch.zeros(len(pairs), k, k), torch.tensor(pairs)),
              FactorGroup(torch.zeros(2, k, k, k), torch.tensor([[0, 1, 2], [3, 4, 5]])))
    statistics = Statistics(FactorGraph({}, groups, torch.zeros(v, k, dtype=F64)))
    assert statistics.plans[1][0] == ("gram" if len(pairs) == 6 else "bincount")
    gen = torch.Generator().manual_seed(0)
    state = torch.randint(0, k, (b, v), generator=gen)
    weights = torch.where(torch.arange(b) < b // 2, 1.0, -1.0).to(F64)
    for group, counts in zip(groups, statistics.counts(state, weights), strict=True):
        expected = torch.zeros(len(group.index), k ** group.arity, dtype=F64)
        for case, row in itertools.product(range(b), range(len(group.index))):
            cell = 0
            for j in group.index[row].tolist():
                cell = cell * k + int(state[case, j])
            expected[row, cell] += weights[case]
        assert torch.equal(counts, expected)


def test_a_run_grounds_and_plans_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only table values change between steps: the model is grounded once and each
    colour planned once, however many steps run."""
    from genppl.engines import cd

    calls = {"ground": 0, "plan": 0}

    def counted(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(cd, "ground", counted("ground", cd.ground))
    monkeypatch.setattr(kernel, "_plan", counted("plan", kernel._plan))
    fit = genppl.fit(rbm(NV, NH).to(dtype=F64), {"v": CASES}, engine="cd", steps=6,
                     batch_size=2, k=2, seed=0, progress=False)
    assert calls == {"ground": 1, "plan": fit.info["colours"]}

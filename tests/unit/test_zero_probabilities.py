"""A probability of exactly 0 stays 0 (-inf in log space) on every path (issue 13).

torch scores a probs-parameterised Categorical/Bernoulli through logits clamped to
``[eps, 1 - eps]``, so an impossible state used to score log eps (-36.04 in float64, -15.9
in float32). Oracles: the closed form and hmmlearn for an HMM with an identity transition
matrix (both paths tie, so every posterior is 1/2), hmmlearn's Baum-Welch trajectory for an
absorbing state and for a Gaussian HMM with a forbidden transition, brute-force enumeration
for a user's factories with zeros in ``probs`` (engines exact, enum, gibbs, prior), and
finite gradients for SVI on a probs param holding a zero. Each case runs in float32 and
float64, the float32 answers against the float64 oracles at float32's precision.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.ops.stats import effective_sample_size
from torch.distributions import constraints

import genppl
from genppl import ModelError
from genppl.hmm import HMM
from genppl.tabulation.prepared import prepare

hmmlearn = pytest.importorskip("hmmlearn.hmm")

pytestmark = pytest.mark.unit

F64 = torch.float64
DTYPES = [torch.float32, F64]


def _tol(dtype: torch.dtype, size: float = 1.0) -> float:
    """Absolute tolerance on a number of magnitude ``size`` (a log-probability, or 1 for
    probabilities): exact engines agree with the oracles to 1e-8 in float64, and to float32's
    precision (1e-5 relative, a sum of 100 terms rounded at 6e-8 each) in float32."""
    return 1e-8 if dtype == F64 else 1e-5 * max(1.0, abs(size))


@pytest.fixture(autouse=True)
def _clean_store() -> Iterator[None]:
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


# ----------------------------------------------------------------------- the HMM
def _identity_hmm(dtype: torch.dtype) -> HMM:
    h = HMM.categorical(2, 2, start=[0.5, 0.5], trans=[[1.0, 0.0], [0.0, 1.0]],
                        emit=[[0.999, 0.001], [0.001, 0.999]])
    h.model.to(dtype=dtype)
    return h


def _reference(h: HMM, steps: int = 10) -> object:
    """hmmlearn's copy of a float64 ``h``, to fit ``steps`` Baum-Welch iterations (its
    convergence monitor takes ``n_iter`` and ``tol`` when it is made)."""
    t = {k: v.detach().cpu().double().numpy() for k, v in h.tables().items()}
    if h.symbols is None:
        ref = hmmlearn.GaussianHMM(n_components=h.states, covariance_type="diag",
                                   init_params="", params="stmc", covars_prior=0.0,
                                   n_iter=steps, tol=-np.inf)
        ref.means_, ref.covars_ = t["means"][:, None], (t["scales"] ** 2)[:, None]
    else:
        ref = hmmlearn.CategoricalHMM(n_components=h.states, n_features=h.symbols,
                                      init_params="", params="ste", n_iter=steps, tol=-np.inf)
        ref.emissionprob_ = t["emit"]
    ref.startprob_, ref.transmat_ = t["start"], t["trans"]
    return ref


@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_transitions_equal_the_closed_form_and_hmmlearn(dtype: torch.dtype) -> None:
    """20 zeros then 20 ones: no path may switch state, so log p(x) = log(0.999^20 0.001^20)
    (both constant paths score it, each with start 1/2), every posterior is 1/2 and the
    Viterbi path is constant (it was -36.77, 2e-19 and a switching path)."""
    h = _identity_hmm(dtype)
    x = torch.tensor([0] * 20 + [1] * 20).unsqueeze(-1)
    closed = 20 * math.log(0.999) + 20 * math.log(0.001)
    ref = _reference(_identity_hmm(F64))
    flat = x.numpy()
    assert ref.score(flat) == pytest.approx(closed, abs=1e-9)
    assert h.score(x) == pytest.approx(closed, abs=_tol(dtype, closed))
    assert float(h.log_likelihood(x)[0]) == pytest.approx(closed, abs=_tol(dtype, closed))
    post = h.posterior(x)
    assert post.dtype == dtype
    torch.testing.assert_close(post[:, 0].double(), torch.full((40, 2), 0.5, dtype=F64),
                               rtol=0, atol=_tol(dtype))
    np.testing.assert_allclose(post[:, 0].double().numpy(), ref.predict_proba(flat), rtol=0,
                               atol=_tol(dtype))
    best = h.viterbi(x)
    path = best.paths[:, 0]
    assert bool((path == path[0]).all()), path.tolist()
    log_joint, _ = ref.decode(flat, algorithm="viterbi")
    assert float(best.log_joint[0]) == pytest.approx(log_joint, abs=_tol(dtype, closed))
    assert log_joint == pytest.approx(math.log(0.5) + closed, abs=1e-9)


# ----------------------------------------------------------------------- Baum-Welch
START, TRANS = [0.6, 0.3, 0.1], [[0.5, 0.3, 0.2], [0.3, 0.4, 0.3], [0.0, 0.0, 1.0]]
EMIT = [[0.4, 0.4, 0.2], [0.3, 0.3, 0.4], [0.2, 0.3, 0.5]]


def _absorbing_data() -> torch.Tensor:
    truth = HMM.categorical(3, 3, start=START, emit=[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3],
                                                    [0.1, 0.2, 0.7]],
                            trans=[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    truth.model.to(dtype=F64)
    return truth.sample(6, 25, seed=3)[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_baum_welch_keeps_an_absorbing_state_as_hmmlearn_does(dtype: torch.dtype) -> None:
    """State 2 is absorbing: its row has no expected count outside the diagonal, so EM keeps
    it exactly (0, 0, 1) -- the param store holds a simplex param as its logs, an exact 0 as
    -inf -- and the trajectory and tables are hmmlearn's (the row used to get mass back)."""
    x = _absorbing_data()
    h = HMM.categorical(3, 3, start=START, trans=TRANS, emit=EMIT)
    h.model.to(dtype=F64)
    ref = _reference(h, steps=8)
    h.model.to(dtype=dtype)
    ref.fit(x.T.reshape(-1, 1).numpy(), lengths=[x.shape[0]] * x.shape[1])
    run = h.fit(x, steps=8, tol=-math.inf)
    expected = list(ref.monitor_.history)
    assert len(run.log_likelihood) == len(expected) == 8
    scale = abs(expected[0])
    np.testing.assert_allclose(run.log_likelihood, expected, rtol=0, atol=_tol(dtype, scale))
    fitted = h.params
    assert all(v.dtype == dtype for v in fitted.values())
    assert fitted["trans"][2].tolist() == [0.0, 0.0, 1.0]  # exactly
    for key, table in (("start", ref.startprob_), ("trans", ref.transmat_),
                       ("emit", ref.emissionprob_)):
        np.testing.assert_allclose(fitted[key].double().numpy(), table, rtol=0,
                                   atol=_tol(dtype))
    # what comes back from the fit is what the next engine call uses: still exactly 0
    assert h.tables()["trans"][2, :2].tolist() == [0.0, 0.0]
    assert h.score(x) == pytest.approx(ref.score(x.T.reshape(-1, 1).numpy(),
                                                 lengths=[x.shape[0]] * x.shape[1]),
                                       abs=_tol(dtype, scale))


@pytest.mark.parametrize("dtype", DTYPES)
def test_evidence_the_tables_rule_out_is_a_model_error(dtype: torch.dtype) -> None:
    """Symbols are emitted by one state each and states never change: a sequence with both
    symbols has probability 0 (it used to get a finite log p, -16.6 in float32)."""
    h = HMM.categorical(2, 2, start=[0.5, 0.5], trans=[[1.0, 0.0], [0.0, 1.0]],
                        emit=[[1.0, 0.0], [0.0, 1.0]])
    h.model.to(dtype=dtype)
    x = torch.tensor([[0], [1], [1], [0]])
    for answer in (h.score, h.log_likelihood, h.posterior, h.viterbi):
        with pytest.raises(ModelError, match="probability zero"):
            answer(x)
    with pytest.raises(ModelError, match="probability zero"):
        h.fit(x, steps=2)
    with pytest.raises(ModelError, match="probability zero"):
        genppl.infer(h.model, h.batch(x).data, engine="enum")
    assert h.score(torch.tensor([[1], [1]])) == pytest.approx(math.log(0.5), abs=_tol(dtype))


# ----------------------------------------------------------------------- Gaussian emissions
def _forbidden_transition(dtype: torch.dtype, scale: float) -> tuple[HMM, object]:
    """A Gaussian HMM where 1 -> 0 is forbidden, and hmmlearn's copy."""
    h = HMM.gaussian(2, start=[0.5, 0.5], trans=[[0.9, 0.1], [0.0, 1.0]], means=[-2.0, 2.0],
                     scales=[scale, scale])
    h.model.to(dtype=F64)
    ref = _reference(h, steps=5)
    h.model.to(dtype=dtype)
    return h, ref


def _state_one_then_zero() -> torch.Tensor:
    """Three sequences; the first looks like state 1 then state 0, which the table forbids,
    so a leaked eps would dominate its likelihood."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g, dtype=F64) * 0.75 + torch.tensor([-2.0, 2.0, 0.0],
                                                                         dtype=F64)
    x[:, 0] = torch.tensor([2.0, 2.1, 1.9, -2.0, -2.1, -1.9] * 2, dtype=F64)
    return x


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_hmm_with_a_forbidden_transition_equals_hmmlearn(dtype: torch.dtype) -> None:
    """Log-likelihoods, posteriors, Viterbi paths and five Baum-Welch steps are hmmlearn's
    (an eps on the forbidden cell moves the first sequence's log p by 10 in float64 and 50 in
    float32), and the forbidden cell stays exactly 0."""
    h, ref = _forbidden_transition(dtype, 0.75)
    x = _state_one_then_zero()
    seqs = [x[:, i].numpy().reshape(-1, 1) for i in range(3)]
    per_seq = h.log_likelihood(x)
    np.testing.assert_allclose(per_seq.double().numpy(), [ref.score(s) for s in seqs], rtol=0,
                               atol=_tol(dtype, 200))
    post, best = h.posterior(x), h.viterbi(x)
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(post[:, i].double().numpy(), ref.predict_proba(s), rtol=0,
                                   atol=_tol(dtype))
        log_joint, path = ref.decode(s, algorithm="viterbi")
        assert best.paths[:, i].tolist() == path.tolist()
        assert float(best.log_joint[i]) == pytest.approx(log_joint, abs=_tol(dtype, 200))
    ref.fit(np.concatenate(seqs), lengths=[12] * 3)
    run = h.fit(x, steps=5, tol=-math.inf)
    np.testing.assert_allclose(run.log_likelihood, list(ref.monitor_.history), rtol=0,
                               atol=_tol(dtype, 200))
    assert float(h.params["trans"][1, 0]) == 0.0
    np.testing.assert_allclose(h.params["trans"].double().numpy(), ref.transmat_, rtol=0,
                               atol=_tol(dtype))


@pytest.mark.parametrize(("dtype", "scale"), [(torch.float32, 0.5), (F64, 0.1)])
def test_a_forbidden_transition_with_sharp_emissions_equals_hmmlearn(dtype: torch.dtype,
                                                                     scale: float) -> None:
    """Emissions so sharp that the route staying in state 0 -- one of the likeliest, with
    1 -> 0 forbidden -- passes through weights below the least float, relative to the other
    states' (e**-32 a step at scale 0.5: float32's range is spent in three steps; e**-800 at
    0.1 is past float64's). The chain scans used to return NaN posteriors in float32, and
    in float64 a log p(x) of -inf ("probability zero"); now hmmlearn's numbers."""
    h, ref = _forbidden_transition(dtype, scale)
    x = _state_one_then_zero()
    seqs = [x[:, i].numpy().reshape(-1, 1) for i in range(3)]
    scores = [ref.score(s) for s in seqs]
    np.testing.assert_allclose(h.log_likelihood(x).double().numpy(), scores, rtol=0,
                               atol=_tol(dtype, max(abs(v) for v in scores)))
    post = h.posterior(x)
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(post[:, i].double().numpy(), ref.predict_proba(s), rtol=0,
                                   atol=_tol(dtype))


# ----------------------------------------------------------------------- a user's factories
PRIOR = [0.5, 0.3, 0.0, 0.2]  # state 2 is impossible
FLIP = [1.0, 0.0, 0.5, 0.25]  # b = 1 is certain under z = 0 and impossible under z = 1
EMISSIONS = [  # [z][b]: P(x | z, b); x = 2 comes only from z = 3, b = 0 (or impossible z = 2)
    [[0.2, 0.8, 0.0], [0.7, 0.3, 0.0]],
    [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]],
    [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
    [[0.9, 0.1 - 1e-9, 1e-9], [0.3, 0.7, 0.0]],
]
X = [0, 2, 1, 2]


def _zeros_model(dtype: torch.dtype) -> genppl.Model:
    """Factories that pass ``probs`` with zeros in them, as users write them."""
    m = genppl.Model("zeros")
    with m.plate("n"):
        m.latent("z", lambda: dist.Categorical(torch.tensor(PRIOR)))
        m.latent("b", lambda z: dist.Bernoulli(torch.tensor(FLIP)[z]))
        m.observed("x", lambda z, b: dist.Categorical(torch.tensor(EMISSIONS)[z, b.long()]))
    return m.to(dtype=dtype)


def _brute_force() -> tuple[float, torch.Tensor, torch.Tensor]:
    """log p(x) and the marginals of z and b per item, by enumeration in float64."""
    log_z, pz, pb = 0.0, torch.zeros(len(X), 4, dtype=F64), torch.zeros(len(X), 2, dtype=F64)
    for i, x in enumerate(X):
        for z, b in itertools.product(range(4), range(2)):
            w = PRIOR[z] * (FLIP[z] if b else 1 - FLIP[z]) * EMISSIONS[z][b][x]
            pz[i, z] += w
            pb[i, b] += w
        total = float(pz[i].sum())
        log_z += math.log(total)
        pz[i] /= total
        pb[i] /= total
    return log_z, pz, pb


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", ["exact", "enum"])
def test_user_factories_with_zeros_match_brute_force(engine: str, dtype: torch.dtype) -> None:
    """p(x = 2) is 1.5e-10 through z = 3 alone: an eps on the impossible z = 2 shifts log p by
    1.5e-6 in float64 and dominates it in float32."""
    log_z, pz, pb = _brute_force()
    post = genppl.infer(_zeros_model(dtype), {"x": torch.tensor(X)}, engine=engine)
    assert float(post.log_evidence) == pytest.approx(log_z, abs=_tol(dtype, log_z))
    torch.testing.assert_close(post.marginals["z"].double(), pz, rtol=0, atol=_tol(dtype))
    torch.testing.assert_close(post.marginals["b"].double(), pb, rtol=0, atol=_tol(dtype))
    assert bool((post.marginals["z"][:, 2] == 0).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_gibbs_never_visits_an_impossible_state(dtype: torch.dtype) -> None:
    """No draw holds an impossible (z, b) pair or a z of posterior probability 0 (x = 2 forces
    z = 3: an eps on z = 2 would outweigh its 1.5e-10 in float32); the other z frequencies
    are the exact marginals within 4.5 Monte Carlo standard errors (single-site draws of z
    and b are correlated: the ESS)."""
    _, pz, _ = _brute_force()
    post = genppl.infer(_zeros_model(dtype), {"x": torch.tensor(X)}, engine="gibbs",
                        num_samples=600, num_chains=2, seed=0, progress=False)
    z, b = post.samples["z"].reshape(-1, len(X)), post.samples["b"].reshape(-1, len(X))
    assert not bool(((z == 0) & (b == 0)).any()) and not bool(((z == 1) & (b == 1)).any())
    for i, k in itertools.product(range(len(X)), range(4)):
        hits = (post.samples["z"][..., i] == k).to(F64)  # (chains, draws)
        if pz[i, k] in (0, 1):  # the impossible and the certain, exactly
            assert float(hits.mean()) == float(pz[i, k]), (i, k)
            continue
        ess = float(effective_sample_size(hits, chain_dim=0, sample_dim=1))
        se = math.sqrt(float(pz[i, k] * (1 - pz[i, k])) / ess)
        assert abs(float(hits.mean()) - float(pz[i, k])) <= 4.5 * se, (i, k, hits.mean(), ess)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prior_draws_never_hold_an_impossible_state(dtype: torch.dtype) -> None:
    draws = genppl.infer(_zeros_model(dtype), engine="prior", num_samples=100,
                         sizes={"n": 20}, seed=0, progress=False).samples
    z, b, x = (draws[k].reshape(-1) for k in ("z", "b", "x"))
    table = torch.tensor(EMISSIONS, dtype=F64)
    assert bool((z != 2).all())
    assert not bool(((z == 0) & (b == 0)).any()) and not bool(((z == 1) & (b == 1)).any())
    assert bool((table[z, b.long(), x] > 0).all())


# ----------------------------------------------------------------------- SVI gradients
@pytest.mark.parametrize("dtype", DTYPES)
def test_svi_on_a_probs_param_holding_a_zero_has_finite_gradients(dtype: torch.dtype) -> None:
    """``w`` starts with an exact 0; the enumerated z = 2 then has weight 0, and a log whose
    gradient at 0 were 1/0 would make 0 * inf = NaN. The gradient is finite, SVI's steps keep
    the 0 exactly, the loss is the exact engine's -log p(x), and ``infer_discrete`` never
    draws z = 2 (x = 9 is 32 nats likelier under it than under z = 1: an eps would win)."""
    m = genppl.Model("svi_zero")
    m.param("w", [0.6, 0.4, 0.0], constraint=constraints.simplex)
    with m.plate("n"):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z: dist.Normal(torch.tensor([-1.0, 1.0, 5.0])[z], 1.0))
    m.to(dtype=dtype)
    data = {"x": torch.tensor([-1.2, 0.8, 9.0, 1.1], dtype=dtype)}
    prep = prepare(m, data)
    elbo = TraceEnum_ELBO(max_plate_nesting=prep.max_plate_nesting)
    loss = elbo.loss_and_grads(prep.program, lambda **_: None, **prep.data)
    exact = genppl.infer(m, data, engine="exact").log_evidence
    assert loss == pytest.approx(-float(exact), rel=10 * torch.finfo(dtype).eps)
    raw = pyro.param("w").unconstrained()  # the leaf the optimiser steps
    assert raw.grad is not None and bool(torch.isfinite(raw.grad).all()), raw.grad
    post = genppl.infer(m, data, engine="svi", steps=30, lr=0.05, num_samples=200, seed=0,
                        progress=False)
    losses = post.info["losses"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    w = post.info["params"]["w"]
    assert bool(torch.isfinite(w).all()) and float(w[2]) == 0.0
    z = post.samples["z"]
    assert z.numel() == 800 and bool((z != 2).all())
    assert bool((z[..., 2] == 1).all())  # x = 9: z = 1, the only possible state near it

"""The compiled Pyro callable ``m.pyro_model`` (docs/dsl.md, "Compiled callables").

Oracle: for each model a plain Pyro model is written by hand, the way the Pyro tutorials
would write it. Both are conditioned on the same random latent values and traced; every
sample site must agree on its log-density (shape and value), scale and enumeration mark, in
float64 to 1e-10. Log evidence (``TraceEnum_ELBO`` with an empty guide, all finite latents
summed out) is compared against the hand-written model and, independently, against a
closed-form sum (mixture) or a forward recursion (HMM).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, TraceEnum_ELBO, infer_discrete
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam
from torch.distributions import constraints

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit

F64 = torch.float64
TOL = 1e-10
ENUM = {"enumerate": "parallel"}


@pytest.fixture(autouse=True)
def _float64_and_clean_store() -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
        pyro.clear_param_store()


def empty_guide(**_: Any) -> None:
    return None


def sample_sites(trace: Any) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in trace.nodes.items() if s["type"] == "sample"}


def _is_plate(site: dict[str, Any]) -> bool:
    return type(site["fn"]).__name__ == "_Subsample"


def latent_values(ref: Callable[..., Any], data: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Random values of every latent site: one prior draw of the hand-written model."""
    trace = poutine.trace(ref).get_trace(**data)
    return {n: s["value"] for n, s in sample_sites(trace).items()
            if not s["is_observed"] and not isinstance(s["fn"], dist.Delta)
            and not _is_plate(s)}


def assert_same_log_joint(model: Callable[..., Any], ref: Callable[..., Any],
                          data: dict[str, torch.Tensor], values: dict[str, Any]) -> float:
    """Both conditioned on ``values``: same sites, log-densities, scales and marks."""
    traces = []
    for fn in (model, ref):
        tr = poutine.trace(poutine.condition(fn, data=values)).get_trace(**data)
        tr.compute_log_prob()
        traces.append(sample_sites(tr))
    got, want = traces
    assert set(got) == set(want)
    # same order of the model's own sites (genppl opens every pyro.plate up front, so plate
    # sites come first there; that is immaterial to Pyro)
    assert [n for n in got if not _is_plate(got[n])] == [n for n in want if not _is_plate(want[n])]
    for name, w in want.items():
        g = got[name]
        assert g["log_prob"].dtype == F64, name
        assert g["log_prob"].shape == w["log_prob"].shape, name
        assert torch.allclose(g["log_prob"], w["log_prob"], rtol=0, atol=TOL), name
        assert g["scale"] == w["scale"], name
        assert g["is_observed"] == w["is_observed"], name
        assert g["infer"].get("enumerate") == w["infer"].get("enumerate"), name
    total = sum(float(s["log_prob_sum"].detach() * s["scale"]) for s in got.values())
    assert total == pytest.approx(sum(float(s["log_prob_sum"].detach() * s["scale"])
                                      for s in want.values()), abs=TOL)
    assert math.isfinite(total)
    return total


def log_evidence(fn: Callable[..., Any], max_plate_nesting: int, continuous: dict[str, Any],
                 data: dict[str, torch.Tensor]) -> float:
    """log p(data, continuous values), every finite latent summed out by Pyro."""
    elbo = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)
    with torch.no_grad():
        return -float(elbo.loss(poutine.condition(fn, data=continuous), empty_guide, **data))


# --------------------------------------------------------------------------- mixture


K = 3


def mixture() -> genppl.Model:
    m = genppl.Model("mixture").to(dtype=F64)
    m.latent("weights", lambda: dist.Dirichlet(torch.ones(K)))
    m.latent("locs", lambda: dist.Normal(torch.zeros(K), 3.0).to_event(1))
    m.param("scale", torch.tensor(1.5), constraint=constraints.positive)
    with m.plate("data"):
        m.latent("z", lambda weights: dist.Categorical(weights))
        m.observed("x", lambda z, locs, scale: dist.Normal(locs[z], scale))
    return m


def mixture_ref(x: torch.Tensor) -> None:
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(K)))
    locs = pyro.sample("locs", dist.Normal(torch.zeros(K), 3.0).to_event(1))
    scale = pyro.param("scale", torch.tensor(1.5), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Categorical(weights), infer=ENUM)
        pyro.sample("x", dist.Normal(locs[z], scale), obs=x)


def mixture_data(n: int = 7) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(n, dtype=F64) * 3}


def test_mixture_log_joint_and_evidence_match_plain_pyro() -> None:
    m = mixture()
    data = mixture_data()
    pyro.param("scale", torch.tensor(0.8), constraint=constraints.positive)  # a random value
    values = latent_values(mixture_ref, data)
    assert set(values) == {"weights", "locs", "z"}
    assert_same_log_joint(m.pyro_model, mixture_ref, data, values)
    continuous = {k: values[k] for k in ("weights", "locs")}
    got = log_evidence(m.pyro_model, m.pyro_model.max_plate_nesting, continuous, data)
    want = log_evidence(mixture_ref, 1, continuous, data)
    assert got == pytest.approx(want, abs=TOL)
    # independent closed form: sum_i logsumexp_k log w_k + log N(x_i; loc_k, scale)
    w, locs = continuous["weights"], continuous["locs"]
    per = w.log() + dist.Normal(locs, 0.8).log_prob(data["x"][:, None])
    exact = (dist.Dirichlet(torch.ones(K)).log_prob(w)
             + dist.Normal(torch.zeros(K), 3.0).log_prob(locs).sum()
             + per.logsumexp(-1).sum())
    assert got == pytest.approx(float(exact), abs=TOL)


def test_param_is_created_with_its_init_and_constraint() -> None:
    m = mixture()
    m.pyro_model(**mixture_data())
    store = pyro.get_param_store()
    assert list(store.keys()) == ["scale"]
    assert store["scale"].item() == pytest.approx(1.5, abs=TOL)
    state = store.get_state()
    assert state["constraints"]["scale"] is constraints.positive
    assert state["params"]["scale"].item() == pytest.approx(math.log(1.5), abs=TOL)


def test_param_init_violating_the_constraint_is_an_error() -> None:
    m = genppl.Model("m")
    m.param("scale", torch.tensor(-1.0), constraint=constraints.positive)
    m.latent("mu", lambda scale: dist.Normal(0.0, scale))
    with pytest.raises(ModelError, match="violates its constraint"):
        m.pyro_model()


def test_pyro_svi_mcmc_and_infer_discrete_accept_the_compiled_model() -> None:
    m = mixture()
    data = mixture_data(20)
    model = m.pyro_model
    nesting = model.max_plate_nesting
    assert nesting == 1

    # SVI with an autoguide over the continuous latents, z summed out
    guide = AutoNormal(poutine.block(model, hide=["z"]))
    svi = SVI(model, guide, Adam({"lr": 0.05}), TraceEnum_ELBO(max_plate_nesting=nesting))
    scale0 = pyro.param("scale", torch.tensor(1.5), constraint=constraints.positive).item()
    losses = [svi.step(**data) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    assert pyro.param("scale").item() != scale0  # the model's param is trained

    # NUTS, z summed out
    mcmc = MCMC(NUTS(model, max_plate_nesting=nesting, jit_compile=False, max_tree_depth=4),
                num_samples=5,
                warmup_steps=5, disable_progbar=True)
    mcmc.run(**data)
    samples = mcmc.get_samples()
    assert set(samples) == {"weights", "locs"}
    assert samples["weights"].shape == (5, K) and samples["locs"].shape == (5, K)
    assert samples["weights"].dtype == F64

    # infer_discrete at temperature 0 = per-point argmax of the exact posterior of z
    pyro.clear_param_store()
    values = latent_values(mixture_ref, data)
    cont = {k: values[k] for k in ("weights", "locs")}
    conditioned = poutine.condition(model, data=cont)
    mapped = infer_discrete(conditioned, first_available_dim=-1 - nesting, temperature=0)
    z = poutine.trace(mapped).get_trace(**data).nodes["z"]["value"]
    logits = cont["weights"].log() + dist.Normal(cont["locs"], 1.5).log_prob(data["x"][:, None])
    assert torch.equal(z, logits.argmax(-1))


# --------------------------------------------------------------------------- HMM in a plate


S = 2  # hidden states


def hmm() -> genppl.Model:
    m = genppl.Model("hmm").to(dtype=F64)
    m.latent("start", lambda: dist.Dirichlet(torch.ones(S)))
    m.latent("trans", lambda: dist.Dirichlet(torch.ones(S, S)).to_event(1))
    m.latent("locs", lambda: dist.Normal(torch.zeros(S), 2.0).to_event(1))
    with m.plate("seqs"), m.chain("t"):
        m.latent("z", lambda z_prev, trans: dist.Categorical(trans[z_prev]),
                 init=lambda start: dist.Categorical(start))
        m.observed("x", lambda z, locs: dist.Normal(locs[z], 1.0))
    return m


def hmm_ref(x: torch.Tensor) -> None:
    start = pyro.sample("start", dist.Dirichlet(torch.ones(S)))
    trans = pyro.sample("trans", dist.Dirichlet(torch.ones(S, S)).to_event(1))
    locs = pyro.sample("locs", dist.Normal(torch.zeros(S), 2.0).to_event(1))
    steps, n = x.shape
    with pyro.plate("seqs", n, dim=-1):
        z = None
        for t in pyro.markov(range(steps)):
            probs = start if t == 0 else trans[z]
            z = pyro.sample(f"z[{t}]", dist.Categorical(probs), infer=ENUM)
            pyro.sample(f"x[{t}]", dist.Normal(locs[z], 1.0), obs=x[t])


def forward_log_evidence(x: torch.Tensor, start: torch.Tensor, trans: torch.Tensor,
                         locs: torch.Tensor) -> torch.Tensor:
    """log p(x | start, trans, locs) by the forward recursion, per sequence."""
    emit = dist.Normal(locs, 1.0).log_prob(x[..., None])  # (T, N, S)
    alpha = start.log() + emit[0]
    for t in range(1, x.shape[0]):
        alpha = (alpha[..., :, None] + trans.log()).logsumexp(-2) + emit[t]
    return alpha.logsumexp(-1)


def test_hmm_in_a_plate_log_joint_and_evidence_match_plain_pyro() -> None:
    m = hmm()
    data = {"x": torch.randn(4, 3, dtype=F64) * 2}  # (T, N): time first, then the plate
    values = latent_values(hmm_ref, data)
    assert {f"z[{t}]" for t in range(4)} <= set(values)
    assert_same_log_joint(m.pyro_model, hmm_ref, data, values)
    continuous = {k: values[k] for k in ("start", "trans", "locs")}
    got = log_evidence(m.pyro_model, m.pyro_model.max_plate_nesting, continuous, data)
    assert got == pytest.approx(log_evidence(hmm_ref, 1, continuous, data), abs=TOL)
    prior = (dist.Dirichlet(torch.ones(S)).log_prob(continuous["start"])
             + dist.Dirichlet(torch.ones(S, S)).log_prob(continuous["trans"]).sum()
             + dist.Normal(torch.zeros(S), 2.0).log_prob(continuous["locs"]).sum())
    exact = prior + forward_log_evidence(data["x"], **continuous).sum()
    assert got == pytest.approx(float(exact), abs=TOL)


def test_hmm_infer_discrete_viterbi_matches_brute_force() -> None:
    m = hmm()
    steps, n = 3, 2
    data = {"x": torch.randn(steps, n, dtype=F64) * 2}
    values = latent_values(hmm_ref, data)
    cont = {k: values[k] for k in ("start", "trans", "locs")}
    model = poutine.condition(m.pyro_model, data=cont)
    mapped = infer_discrete(model, first_available_dim=-1 - m.pyro_model.max_plate_nesting,
                            temperature=0)
    tr = poutine.trace(mapped).get_trace(**data)
    path = torch.stack([tr.nodes[f"z[{t}]"]["value"] for t in range(steps)])  # (T, N)
    emit = dist.Normal(cont["locs"], 1.0).log_prob(data["x"][..., None])  # (T, N, S)
    for i in range(n):
        def score(p: tuple[int, ...], i: int = i) -> float:
            s = cont["start"][p[0]].log() + emit[0, i, p[0]]
            for t in range(1, steps):
                s = s + cont["trans"][p[t - 1], p[t]].log() + emit[t, i, p[t]]
            return float(s)
        best = max(itertools.product(range(S), repeat=steps), key=score)
        assert tuple(path[:, i].tolist()) == best


def test_reverse_chain_runs_the_steps_backwards() -> None:
    m = genppl.Model("rev").to(dtype=F64)
    with m.chain("t", 3, reverse=True):
        m.latent("z", lambda z_prev, t: dist.Normal(z_prev + t, 1.0),
                 init=lambda t: dist.Normal(10.0 * t, 1.0))

    def ref() -> None:
        z = pyro.sample("z[2]", dist.Normal(20.0, 1.0))
        for t in (1, 0):
            z = pyro.sample(f"z[{t}]", dist.Normal(z + t, 1.0))

    values = latent_values(ref, {})
    assert_same_log_joint(m.pyro_model, ref, {}, values)


# --------------------------------------------------------------------------- nested plates


def lda() -> genppl.Model:
    m = genppl.Model("lda").to(dtype=F64)
    m.latent("topics", lambda: dist.Normal(torch.zeros(K), 3.0).to_event(1))
    with m.plate("docs"):
        m.latent("theta", lambda: dist.Dirichlet(torch.ones(K)))
        with m.plate("words"):
            m.latent("z", lambda theta: dist.Categorical(theta))
            m.observed("w", lambda z, topics: dist.Normal(topics[z], 1.0))
    return m


def lda_ref(w: torch.Tensor) -> None:
    topics = pyro.sample("topics", dist.Normal(torch.zeros(K), 3.0).to_event(1))
    n_docs, n_words = w.shape
    with pyro.plate("docs", n_docs, dim=-2):
        theta = pyro.sample("theta", dist.Dirichlet(torch.ones(K)))
        with pyro.plate("words", n_words, dim=-1):
            z = pyro.sample("z", dist.Categorical(theta), infer=ENUM)
            pyro.sample("w", dist.Normal(topics[z], 1.0), obs=w)


def test_nested_plates_log_joint_and_evidence_match_plain_pyro() -> None:
    m = lda()
    assert m.graph.graph["plates"]["docs"]["dim"] == -2
    assert m.graph.graph["plates"]["words"]["dim"] == -1
    data = {"w": torch.randn(3, 5, dtype=F64) * 2}  # (D, W), D != W to catch a transpose
    values = latent_values(lda_ref, data)
    assert values["theta"].shape == (3, 1, K) and values["z"].shape == (3, 5)
    assert_same_log_joint(m.pyro_model, lda_ref, data, values)
    cont = {k: values[k] for k in ("topics", "theta")}
    got = log_evidence(m.pyro_model, m.pyro_model.max_plate_nesting, cont, data)
    assert m.pyro_model.max_plate_nesting == 2
    assert got == pytest.approx(log_evidence(lda_ref, 2, cont, data), abs=TOL)
    # per-word closed form
    theta = cont["theta"][:, 0, :]  # (D, K)
    per = theta.log()[:, None, :] + dist.Normal(cont["topics"], 1.0).log_prob(data["w"][..., None])
    exact = (dist.Normal(torch.zeros(K), 3.0).log_prob(cont["topics"]).sum()
             + dist.Dirichlet(torch.ones(K)).log_prob(theta).sum() + per.logsumexp(-1).sum())
    assert got == pytest.approx(float(exact), abs=TOL)


# --------------------------------------------------------------------------- subsampling


def test_subsampled_plate_indexes_data_and_inputs_and_scales_the_likelihood() -> None:
    n, b = 10, 4
    m = genppl.Model("sub").to(dtype=F64)
    m.latent("mu", lambda: dist.Normal(0.0, 5.0))
    with m.plate("data", n, subsample_size=b):
        m.input("u")
        m.observed("x", lambda mu, u: dist.Normal(mu + u, 1.0))
    x = torch.randn(n, dtype=F64)
    u = torch.arange(n, dtype=F64)
    mu = torch.tensor(0.3, dtype=F64)
    model = poutine.condition(m.pyro_model, data={"mu": mu})
    full = float(dist.Normal(mu + u, 1.0).log_prob(x).sum())
    estimates = []
    seen: set[int] = set()
    for _ in range(300):
        tr = poutine.trace(model).get_trace(x=x, u=u)
        idx = tr.nodes["data"]["value"]
        assert idx.shape == (b,) and len(set(idx.tolist())) == b
        seen |= set(idx.tolist())
        site = tr.nodes["x"]
        assert torch.equal(site["value"], x[idx])  # data indexed by the minibatch
        assert site["scale"] == pytest.approx(n / b)
        lp = site["fn"].log_prob(site["value"])
        assert torch.allclose(lp, dist.Normal(mu + u[idx], 1.0).log_prob(x[idx]), atol=TOL)
        estimates.append(float(lp.sum()) * site["scale"])
    assert seen == set(range(n))
    # unbiased: E[(n/b) * sum over the minibatch] = the full-data log-likelihood
    est = torch.tensor(estimates, dtype=F64)
    se = float(est.std()) / math.sqrt(len(estimates))
    assert abs(float(est.mean()) - full) < 4 * se
    # the compact data must still have the full plate size
    with pytest.raises(ModelError, match="plate 'data' has size 10"):
        m.pyro_model(x=x[:b], u=u)


# --------------------------------------------------------------------------- misc nodes


def misc() -> genppl.Model:
    m = genppl.Model("misc").to(dtype=F64)
    m.param("s", torch.tensor(1.5), constraint=constraints.positive)
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    m.deterministic("mu2", lambda mu: 2 * mu)
    m.factor("penalty", lambda mu2: -0.5 * mu2**2)
    with m.plate("data"):
        m.input("u")
        m.observed("x", lambda mu2, u, s: dist.Normal(mu2 * u, s))
    return m


def misc_ref(x: torch.Tensor, u: torch.Tensor) -> None:
    s = pyro.param("s", torch.tensor(1.5), constraint=constraints.positive)
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    mu2 = pyro.deterministic("mu2", 2 * mu)
    pyro.factor("penalty", -0.5 * mu2**2)
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("x", dist.Normal(mu2 * u, s), obs=x)


def test_deterministic_factor_param_and_input_match_plain_pyro() -> None:
    m = misc()
    data = {"x": torch.randn(6, dtype=F64), "u": torch.randn(6, dtype=F64)}
    pyro.param("s", torch.tensor(0.6), constraint=constraints.positive)
    values = latent_values(misc_ref, data)
    assert set(values) == {"mu"}
    total = assert_same_log_joint(m.pyro_model, misc_ref, data, values)
    mu = values["mu"]
    exact = (dist.Normal(0.0, 1.0).log_prob(mu) - 0.5 * (2 * mu) ** 2
             + dist.Normal(2 * mu * data["u"], 0.6).log_prob(data["x"]).sum())
    assert total == pytest.approx(float(exact), abs=TOL)
    tr = poutine.trace(poutine.condition(m.pyro_model, data=values)).get_trace(**data)
    assert float(tr.nodes["mu2"]["value"]) == pytest.approx(2 * float(mu), abs=TOL)
    assert tr.nodes["mu2"]["infer"].get("_deterministic")
    assert tr.nodes["penalty"]["is_observed"]
    # the program returns every node's value by name
    out = poutine.condition(m.pyro_model, data=values)(**data)
    assert set(out) == {"s", "mu", "mu2", "u", "x"}


def test_unknown_data_keyword_is_an_error() -> None:
    m = misc()
    with pytest.raises(ModelError, match="Did you mean 'x'"):
        m.pyro_model(xx=torch.zeros(3), u=torch.zeros(3))


def test_prior_program_samples_absent_observed_nodes() -> None:
    m = mixture()
    with pytest.raises(ModelError, match="no size"):
        m.prior_program()()  # nothing says how big 'data' is
    m2 = genppl.Model("sized").to(dtype=F64)
    m2.latent("mu", lambda: dist.Normal(0.0, 1.0))
    with m2.plate("data", 5):
        m2.observed("x", lambda mu: dist.Normal(mu, 1.0))
    tr = poutine.trace(m2.prior_program()).get_trace()
    assert tr.nodes["x"]["value"].shape == (5,) and not tr.nodes["x"]["is_observed"]
    x = torch.arange(5.0, dtype=F64)
    tr = poutine.trace(m2.prior_program()).get_trace(x=x)
    assert torch.equal(tr.nodes["x"]["value"], x) and tr.nodes["x"]["is_observed"]


# --------------------------------------------------------------------------- dtype and device


def literal_model() -> genppl.Model:
    m = genppl.Model("dtypes")
    m.param("s", 1.0, constraint=constraints.positive)  # a Python float init
    m.param("w32", torch.tensor([0.5, 1.0], dtype=torch.float32))  # tensors of either dtype
    m.param("w64", torch.tensor([0.5, 1.0], dtype=torch.float64))
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))  # literals only
    m.cpt("c", [], [0.4, 0.6])
    with m.plate("data"):
        m.latent("scale", lambda: dist.Gamma(2.0, 2.0))
        m.observed("x", lambda mu, s, scale, w32, w64: dist.Normal(
            mu + w32[0] - w64[0], s * scale))
        m.observed("k", lambda c: dist.Categorical(torch.tensor([[0.2, 0.8], [0.7, 0.3]])[c]))
    return m


@pytest.mark.parametrize(("model_dtype", "global_dtype"), [
    (torch.float32, torch.float64), (torch.float64, torch.float32),
])
def test_params_data_values_and_log_probs_follow_the_model_dtype(model_dtype,
                                                                 global_dtype) -> None:
    torch.set_default_dtype(global_dtype)  # the fixture restores it
    m = literal_model().to(dtype=model_dtype)
    x = torch.randn(5, dtype=torch.float64)  # float64 data for either model
    k = torch.tensor([0, 1, 1, 0, 1])  # integer data
    tr = poutine.trace(m.pyro_model).get_trace(x=x, k=k)
    tr.compute_log_prob()
    for name in ("s", "w32", "w64"):
        assert tr.nodes[name]["value"].dtype == model_dtype, name
    for name in ("mu", "scale", "x"):
        assert tr.nodes[name]["value"].dtype == model_dtype, name
    for name in ("mu", "scale", "x", "c", "k"):
        assert tr.nodes[name]["log_prob"].dtype == model_dtype, name
    assert tr.nodes["x"]["value"].tolist() == pytest.approx(x.tolist(), rel=1e-6)  # cast
    assert tr.nodes["k"]["value"].dtype == torch.int64  # integers stay integers
    assert torch.equal(tr.nodes["k"]["value"], k)
    assert tr.nodes["c"]["value"].dtype == torch.int64
    assert torch.get_default_dtype() == global_dtype  # the model's context is restored
    pyro.clear_param_store()


def test_to_changes_dtype_of_params_tables_modules_and_data() -> None:
    torch.set_default_dtype(torch.float32)
    m = genppl.Model("moved")
    net = torch.nn.Linear(1, 1)
    m.module("net", net)
    m.cpt("c", [], [0.25, 0.75])
    m.latent("mu", lambda c, net: dist.Normal(net(c.to(torch.get_default_dtype())[None]), 1.0))
    assert m.dtype == torch.float32
    assert m.to(dtype=F64) is m
    assert net.weight.dtype == F64
    tr = poutine.trace(m.pyro_model).get_trace()
    assert tr.nodes["c"]["fn"].probs.dtype == F64
    assert tr.nodes["mu"]["value"].dtype == F64
    with pytest.raises(ModelError, match="floating point"):
        m.to(dtype=torch.int64)


def test_guide_follows_its_own_to() -> None:
    torch.set_default_dtype(torch.float32)
    m = genppl.Model("g").to(dtype=F64)
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    g = m.guide()  # created after m.to: takes the model's dtype
    g.param("q_loc", 0.0)
    g.latent("mu", lambda q_loc: dist.Normal(q_loc, 1.0))
    tr = poutine.trace(g.pyro_guide).get_trace(x=torch.tensor(1.0))
    assert tr.nodes["q_loc"]["value"].dtype == F64 and tr.nodes["mu"]["value"].dtype == F64
    pyro.clear_param_store()
    g.to(dtype=torch.float32)
    tr = poutine.trace(g.pyro_guide).get_trace(x=torch.tensor(1.0))
    assert tr.nodes["mu"]["value"].dtype == torch.float32


def test_guide_created_before_to_follows_the_model() -> None:
    torch.set_default_dtype(torch.float32)
    m = genppl.Model("g")
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    g = m.guide()
    g.param("q_loc", 0.0)
    g.latent("mu", lambda q_loc: dist.Normal(q_loc, 1.0))
    m.to(dtype=F64)
    tr = poutine.trace(g.pyro_guide).get_trace(x=torch.tensor(1.0))
    assert tr.nodes["q_loc"]["value"].dtype == F64
    assert tr.nodes["mu"]["value"].dtype == F64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_on_cuda_moves_data_params_tables_and_literals() -> None:
    cuda = torch.device("cuda")
    m = literal_model().to(device="cuda", dtype=torch.float32)
    x = torch.randn(5, dtype=F64)  # CPU float64 data
    k = torch.tensor([0, 1, 1, 0, 1])
    tr = poutine.trace(m.pyro_model).get_trace(x=x, k=k)
    tr.compute_log_prob()
    for name in ("s", "w32", "w64", "mu", "c", "scale", "x", "k"):
        assert tr.nodes[name]["value"].device.type == cuda.type, name
    assert tr.nodes["x"]["value"].dtype == torch.float32
    assert tr.nodes["k"]["value"].dtype == torch.int64
    assert tr.nodes["x"]["log_prob"].device.type == cuda.type

"""``engine="ais"`` on undirected models: log Z by annealing from independent units
(``genppl.ais.partition``), against the exact engine's log evidence of the same energy with
no data (which is log Z: tested here on a brute-force sum too), and each case's
log-likelihood against the exact engine's per-case evidence. The tolerance is the method's
own: 3 of its standard errors.
"""

from __future__ import annotations

import itertools
import math

import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl import ModelError
from genppl.ais.partition import UndirectedPath, free_log_marginal, start_from_cases
from genppl.gibbs.grounding import FactorGraph, ground
from genppl.runtime.params import param_values
from genppl.tabulation.tabulation import model_factors
from models_gallery import ising_3x3, rbm_digits

pytestmark = pytest.mark.unit

F64, F32 = torch.float64, torch.float32
VISIBLE, HIDDEN = 6, 4
RUN = {"num_temperatures": 1000, "num_chains": 200, "seed": 0, "progress": False}


def rbm_params(weight_scale: float, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random weights N(0, weight_scale^2) and biases N(0, 0.5^2) of a 6 x 4 RBM."""
    gen = torch.Generator().manual_seed(seed)
    return {"W": weight_scale * torch.randn(VISIBLE, HIDDEN, generator=gen, dtype=F64),
            "b": 0.5 * torch.randn(VISIBLE, generator=gen, dtype=F64),
            "c": 0.5 * torch.randn(HIDDEN, generator=gen, dtype=F64)}


def brute_log_partition(params: dict[str, torch.Tensor]) -> float:
    """log sum over all 2^(6 + 4) joint states of exp(b.v + c.h + v.W.h)."""
    states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=VISIBLE + HIDDEN)),
                          dtype=F64)
    v, h = states[:, :VISIBLE], states[:, VISIBLE:]
    energy = v @ params["b"] + h @ params["c"] + ((v @ params["W"]) * h).sum(1)
    return float(torch.logsumexp(energy, 0))


def ais(model: genppl.Model, data: dict[str, torch.Tensor], dtype: torch.dtype,
        **options: object) -> genppl.results.Posterior:
    return genppl.infer(model.to(dtype=dtype), data, engine="ais", **{**RUN, **options})


def test_exact_log_evidence_without_data_is_log_partition() -> None:
    params = rbm_params(1.0, 0, F64)
    exact = genppl.infer(rbm_digits.rbm_units(VISIBLE, HIDDEN), {}, engine="exact",
                         params=params).log_evidence
    assert exact == pytest.approx(brute_log_partition(params), rel=1e-6)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize(("weight_scale", "seed"), [(1.0, 0), (1.0, 1), (4.0, 0)],
                         ids=["moderate", "moderate-2", "strongly-coupled"])
def test_rbm_log_partition_within_three_standard_errors(weight_scale: float, seed: int,
                                                        dtype: torch.dtype) -> None:
    params = rbm_params(weight_scale, seed, dtype)
    post = ais(rbm_digits.rbm(VISIBLE, HIDDEN), {}, dtype, params=params)
    truth = brute_log_partition(params)
    info = post.info
    assert info["log_weights"].dtype == dtype
    assert post.log_evidence == info["log_partition"]
    assert info["stderr"] == info["log_partition_stderr"] > 0
    assert info["bound"] == "lower"
    assert abs(post.log_evidence - truth) < 3 * info["stderr"]


def ising(coupling: float, field: float) -> genppl.Model:
    return ising_3x3.build(coupling=coupling, field=field)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize(("coupling", "field"), [(0.4, 0.1), (1.0, 0.0), (-0.8, 0.3)],
                         ids=["gallery", "strong-ferromagnet", "antiferromagnet"])
def test_ising_log_partition_within_three_standard_errors(coupling: float, field: float,
                                                          dtype: torch.dtype) -> None:
    truth = genppl.infer(ising(coupling, field), {}, engine="exact").log_evidence
    post = ais(ising(coupling, field), {}, dtype)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]


def test_a_grid_without_one_unit_potentials_starts_from_uniform_states() -> None:
    m = genppl.Model("bonds_only")
    ising_3x3.ising_grid(m, 2, 3, coupling=0.7)
    truth = genppl.infer(m, {}, engine="exact").log_evidence
    path = UndirectedPath.of(ground(model_factors(m, {})))
    assert float(path.base_log_partition()) == pytest.approx(6 * math.log(2))
    post = ais(m, {}, F64)
    assert abs(post.log_evidence - truth) < 3 * post.info["stderr"]


def test_no_interaction_is_the_base_exactly() -> None:
    """W = 0: the units are independent, every weight is 1 and log Z is log Z_0."""
    params = {**rbm_params(1.0, 0, F64), "W": torch.zeros(VISIBLE, HIDDEN, dtype=F64)}
    post = ais(rbm_digits.rbm(VISIBLE, HIDDEN), {}, F64, params=params,
               num_temperatures=5)
    assert post.log_evidence == pytest.approx(brute_log_partition(params), abs=1e-9)
    assert bool((post.info["log_weights"] == 0).all())
    assert post.info["stderr"] < 1e-6  # (the square root of rounding in the delta method)


def test_the_estimate_tightens_as_temperatures_are_added() -> None:
    """Strongly coupled RBM, five seeds: from 10 to 1,000 temperatures the standard error
    falls fivefold and the mean squared error tenfold."""
    params = rbm_params(4.0, 0, F64)
    truth = brute_log_partition(params)
    stderr, squared = {}, {}
    for steps in (10, 1000):
        runs = [ais(rbm_digits.rbm(VISIBLE, HIDDEN), {}, F64, params=params,
                    num_temperatures=steps, num_chains=50, seed=s) for s in range(5)]
        stderr[steps] = sum(r.info["stderr"] for r in runs) / len(runs)
        squared[steps] = sum((r.log_evidence - truth) ** 2 for r in runs) / len(runs)
    assert stderr[1000] < stderr[10] / 5
    assert squared[1000] < squared[10] / 10


@pytest.mark.parametrize("dtype", [F64, F32])
def test_rbm_log_likelihood_of_cases(dtype: torch.dtype) -> None:
    """Each case's log p(v): its hidden units summed exactly (the exact engine's per-case
    evidence, to rounding), minus the annealed log Z; the total within 3 of its standard
    errors of the exact one."""
    params = rbm_params(2.0, 3, dtype)
    gen = torch.Generator().manual_seed(5)
    images = (torch.rand(8, VISIBLE, generator=gen) < 0.5).long()
    units = rbm_digits.rbm_units(VISIBLE, HIDDEN)
    per_case = genppl.infer(units, {f"v{i}": images[:, i] for i in range(VISIBLE)},
                            engine="exact", params=params).log_evidence
    post = ais(rbm_digits.rbm(VISIBLE, HIDDEN), {"v": images}, dtype, params=params)
    info = post.info
    free = info["log_evidence_per"] + info["log_partition"]
    tol = 1e-9 if dtype == F64 else 1e-4
    assert torch.allclose(free.double(), torch.as_tensor(per_case, dtype=F64), atol=tol)
    truth = float(torch.as_tensor(per_case).sum()) - len(images) * brute_log_partition(params)
    assert info["bound"] == "upper"
    assert info["stderr"] == pytest.approx(len(images) * info["log_partition_stderr"])
    assert post.log_evidence == pytest.approx(float(info["log_evidence_per"].sum()))
    assert abs(post.log_evidence - truth) < 3 * info["stderr"]


def test_free_units_coupled_given_the_data_are_refused_by_name() -> None:
    m = ising(0.4, 0.1)
    graph = ground(model_factors(m, {}))
    corner = ising_3x3.spin_name(0, 0)
    with pytest.raises(ModelError, match=r"given data on \['s_0_0'\], a factor still "
                                         r"couples \['s_0_1', 's_0_2'\]"):
        free_log_marginal(graph, {corner: torch.zeros(1, 1, dtype=torch.long)})


@pytest.mark.parametrize(("option", "value"), [("per", "visible"),
                                               ("reverse_from", {"h": 1})])
def test_options_that_do_not_apply_are_refused_by_name(option: str, value: object) -> None:
    with pytest.raises(ModelError, match=option):
        ais(rbm_digits.rbm(VISIBLE, HIDDEN), {}, F64, **{option: value})


def test_a_continuous_latent_beside_factors_is_refused_by_name() -> None:
    m = genppl.Model("mixed")
    m.latent("scale", lambda: dist.Gamma(torch.tensor(2.0), 1.0))
    m.variable("s", 2)
    m.factor("tilt", lambda s, scale: scale * s)
    with pytest.raises(ModelError, match="'scale'"):
        ais(m, {}, F64)



# ------------------------------------------------- the fast path beside its references
def grounding(model: genppl.Model, params: dict[str, torch.Tensor] | None = None
              ) -> FactorGraph:
    """The float64 grounding of ``model`` with ``params``."""
    model = model.to(dtype=F64)
    with param_values(model, params):
        return ground(model_factors(model, {}))


def triangle() -> genppl.Model:
    """Three binary units coupled in a cycle: no colour holds one unit of every pair."""
    m = genppl.Model("triangle")
    for name in "abc":
        m.variable(name, 2)
    for x, y, w in (("a", "b", 0.7), ("b", "c", -1.1), ("a", "c", 0.4)):
        m.factor(f"{x}{y}", lambda p, q, w=w: w * p * q, scope=[x, y])
    m.factor("field", lambda a: 0.3 * a)
    return m


def random_states(graph: FactorGraph, chains: int, seed: int) -> torch.Tensor:
    """``(chains, V)`` states each instance can take (padding respected)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(chains, *graph.padding.shape, generator=gen, dtype=graph.padding.dtype)
    return (noise + graph.padding).argmax(-1)


CASES = {"rbm": lambda: grounding(rbm_digits.rbm(VISIBLE, HIDDEN), rbm_params(2.0, 1, F64)),
         "ising": lambda: grounding(ising(0.6, 0.2)),
         "triangle": lambda: grounding(triangle())}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("from_cases", [False, True], ids=["own-base", "data-base"])
def test_excess_is_the_log_potential_less_the_base_unit_by_unit(case: str,
                                                                from_cases: bool) -> None:
    """The fast log f_1 - log f_0 (through a covering colour where there is one) equals
    the joint's log-potential (``FactorGraph.log_joint``) less the base's, state by
    state."""
    graph = CASES[case]()
    first = graph.blocks[sorted(graph.blocks)[0]]
    start = None
    if from_cases:
        cases = random_states(graph, 30, 7)[:, first.offset:first.offset + first.size]
        start = start_from_cases(graph, {first.name: cases})
    path = UndirectedPath.of(graph, start)
    assert (path.summed is None) == (case == "triangle")
    states = random_states(graph, 20, 3)
    base = path.start[torch.arange(graph.size), states].sum(-1)
    reference = torch.stack([graph.log_joint(s) for s in states]) - base
    assert torch.allclose(path.excess(states), reference, atol=1e-10)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("case", ["rbm", "ising", "triangle", "large-grid"])
def test_tempered_updates_are_the_tempered_conditionals(case: str, beta: float) -> None:
    """Each colour's scaled update gives, up to a constant per instance, (1 - beta) times
    the base's log-potentials plus beta times the full conditionals of the model
    (``FactorGraph.conditionals``, read row by row); a 40 x 40 grid's colours are sparse
    matrices."""
    if case == "large-grid":
        m = genppl.Model("grid_40")
        ising_3x3.ising_grid(m, 40, 40, coupling=0.5)
        graph = grounding(m)
    else:
        graph = CASES[case]()
    gen = torch.Generator().manual_seed(2)
    start = torch.randn(graph.padding.shape, generator=gen, dtype=F64) + graph.padding
    path = UndirectedPath.of(graph, start)
    state = random_states(graph, 1, 4)[0]
    full = graph.conditionals(state)
    for update in path.tempered(beta):
        expected = torch.where(torch.isneginf(full[update.ids]), full[update.ids],
                               (1 - beta) * start[update.ids] + beta * full[update.ids])
        got = update.logits(state)
        assert torch.allclose(got - got[:, :1], expected - expected[:, :1], atol=1e-9)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_a_base_from_the_data_marginals_gives_log_partition(dtype: torch.dtype) -> None:
    """base_from: the visible units start from their marginals in the cases (one
    pseudo-count per state), the hidden ones from their own biases; log Z within 3
    standard errors of the brute-force sum, each case's free term unchanged."""
    params = rbm_params(2.0, 3, dtype)
    gen = torch.Generator().manual_seed(5)
    images = (torch.rand(40, VISIBLE, generator=gen) < 0.3).long()
    graph = grounding(rbm_digits.rbm(VISIBLE, HIDDEN), params)
    start = start_from_cases(graph, {"v": images})
    v, h = graph.blocks["v"], graph.blocks["h"]
    on = (images.sum(0) + 1.0) / (len(images) + 2.0)
    assert torch.allclose(start[v.offset:v.offset + v.size, 1].exp(), on.double())
    assert torch.equal(start[h.offset:h.offset + h.size],
                       UndirectedPath.of(graph).start[h.offset:h.offset + h.size])
    post = ais(rbm_digits.rbm(VISIBLE, HIDDEN), {"v": images[:5]}, dtype, params=params,
               base_from={"v": images})
    info = post.info
    assert abs(info["log_partition"] - brute_log_partition(params)) < \
        3 * info["log_partition_stderr"]
    own = ais(rbm_digits.rbm(VISIBLE, HIDDEN), {"v": images[:5]}, dtype, params=params)
    assert torch.allclose(info["log_evidence_per"] + info["log_partition"],
                          own.info["log_evidence_per"] + own.info["log_partition"])


def test_base_from_is_refused_on_a_directed_model() -> None:
    m = genppl.Model("normal")
    m.latent("z", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    m.observed("x", lambda z: dist.Normal(z, 1.0))
    with pytest.raises(ModelError, match="base_from"):
        genppl.infer(m, {"x": torch.tensor(0.5)}, engine="ais", base_from={"z": 1.0},
                     progress=False)


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("case", ["rbm", "ising"])
def test_log_marginal_sums_the_summed_colour_out_exactly(case: str, beta: float) -> None:
    """The weights' log f_beta with the summed colour summed out, against enumerating that
    colour's states at each state of the others: log sum exp((1 - beta) U0 + beta E), less
    the base's log-potential of the other instances."""
    graph = CASES[case]()
    gen = torch.Generator().manual_seed(8)
    start = torch.randn(graph.padding.shape, generator=gen, dtype=F64) + graph.padding
    path = UndirectedPath.of(graph, start)
    summed = path.colours[path.summed]
    others = torch.ones(graph.size, dtype=torch.bool)
    others[summed] = False
    states = random_states(graph, 6, 9)
    got = path.log_marginal(beta, states)
    for n, state in enumerate(states):
        terms = []
        for values in itertools.product(range(2), repeat=len(summed)):
            joint = state.clone()
            joint[summed] = torch.tensor(values)
            base = start[torch.arange(graph.size), joint].sum()
            terms.append((1 - beta) * base + beta * graph.log_joint(joint))
        rest = start[torch.arange(graph.size), state][others].sum()
        assert float(got[n]) == pytest.approx(float(torch.logsumexp(torch.stack(terms), 0)
                                                    - rest), abs=1e-9)


# ------------------------------------------------------------- RAISE: from the data back
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize(("weight_scale", "seed"), [(1.0, 3), (4.0, 3)],
                         ids=["moderate", "strongly-coupled"])
def test_raise_finds_each_cases_log_likelihood(weight_scale: float, seed: int,
                                               dtype: torch.dtype) -> None:
    """from_data=True, 1,000 temperatures: the RAISE model is then the RBM to within its
    own error, so each case's estimate is within 4 of its standard errors of the exact
    log-likelihood (8 cases) and the total within 3."""
    params = rbm_params(weight_scale, seed, dtype)
    gen = torch.Generator().manual_seed(5)
    images = (torch.rand(8, VISIBLE, generator=gen) < 0.5).long()
    units = rbm_digits.rbm_units(VISIBLE, HIDDEN)
    exact = torch.as_tensor(genppl.infer(units, {f"v{i}": images[:, i] for i in range(VISIBLE)},
                                         engine="exact", params=params).log_evidence,
                            dtype=F64) - brute_log_partition(params)
    post = ais(rbm_digits.rbm(VISIBLE, HIDDEN), {"v": images}, dtype, params=params,
               from_data=True, num_chains=100)
    info = post.info
    assert info["bound"] == "lower" and info["log_weights"].shape == (100, 8)
    z = (info["log_evidence_per"].double() - exact) / info["stderr_per"].double()
    assert bool((z.abs() < 4).all())
    assert abs(post.log_evidence - float(exact.sum())) < 3 * info["stderr"]


def test_raise_without_interaction_is_exact() -> None:
    """W = 0: every gain is 0, so each case's estimate is -F(v) - log Z_0 = log p(v)."""
    params = {**rbm_params(1.0, 0, F64), "W": torch.zeros(VISIBLE, HIDDEN, dtype=F64)}
    images = torch.tensor([[0, 1, 1, 0, 0, 1], [1, 1, 1, 1, 0, 0]])
    post = ais(rbm_digits.rbm(VISIBLE, HIDDEN), {"v": images}, F64, params=params,
               from_data=True, num_temperatures=5, num_chains=3)
    b = params["b"]
    exact = (images.double() @ b - torch.nn.functional.softplus(b).sum())
    assert torch.allclose(post.info["log_evidence_per"], exact, rtol=0, atol=1e-12)


def test_raise_sums_out_whichever_layer_the_data_leave_free() -> None:
    """Data on the hidden units: the visible ones are summed out instead, and the total
    is within 3 standard errors of the exact log-likelihood of the hidden states."""
    params = rbm_params(1.0, 3, F64)
    states = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]])
    units = rbm_digits.rbm_units(VISIBLE, HIDDEN)
    exact = float(torch.as_tensor(genppl.infer(
        units, {f"h{j}": states[:, j] for j in range(HIDDEN)}, engine="exact",
        params=params).log_evidence).sum()) - len(states) * brute_log_partition(params)
    post = ais(rbm_digits.rbm(VISIBLE, HIDDEN), {"h": states}, F64, params=params,
               from_data=True, num_chains=100)
    assert abs(post.log_evidence - exact) < 3 * post.info["stderr"]


def test_raise_needs_data_on_all_but_a_summed_colour() -> None:
    with pytest.raises(ModelError, match="from_data=True anneals back from data"):
        ais(rbm_digits.rbm(VISIBLE, HIDDEN), {}, F64, from_data=True)
    corner = ising_3x3.spin_name(0, 0)
    with pytest.raises(ModelError, match=r"needs data on every variable but those summed "
                                         r"out .*the data leave free \['s_0_1'"):
        ais(ising(0.4, 0.1), {corner: torch.zeros(2, dtype=torch.long)}, F64, from_data=True)
    m = genppl.Model("normal")
    m.latent("z", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    m.observed("x", lambda z: dist.Normal(z, 1.0))
    with pytest.raises(ModelError, match="from_data"):
        genppl.infer(m, {"x": torch.tensor(0.5)}, engine="ais", from_data=True,
                     progress=False)

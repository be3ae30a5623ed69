"""Oracle tests of the discrete gallery entries: sprinkler (CPTs), casino HMM (chain), Ising
(factors over counting-measure variables).

Every number genppl produces is checked against an independent computation written here from
the textbook numbers: brute-force enumeration of the joint for the network and the Ising
grid, a log-space forward-backward for the HMM, and a hand-written plain-Pyro model for the
compiled log joint. The oracles never import the entries' tables, so a typo there fails too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import genppl
from genppl.gallery import GalleryEntry, RunConfig, RunReport
from models_gallery import casino_hmm, ising_3x3, sprinkler

pytestmark = pytest.mark.gallery

F64 = torch.float64
TOL = 1e-10


def log_joint(model: Callable[..., Any], values: dict[str, torch.Tensor],
              **data: Any) -> float:
    """log p(values, data) of a Pyro model: latents substituted, every site's log density."""
    with pyro.get_param_store().scope():
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace(**data)
    return float(trace.log_prob_sum())


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RunReport, Path]]:
    """Each entry run once with its defaults (the casino's exact decoding is the slow part)."""
    out = {}
    entries: list[GalleryEntry] = [sprinkler.ENTRY, casino_hmm.ENTRY, ising_3x3.ENTRY]
    for entry in entries:
        folder = tmp_path_factory.mktemp(entry.name)
        out[entry.name] = (entry.run(RunConfig(out=folder, progress=False)), folder)
    return out


@pytest.mark.parametrize("name", ["sprinkler", "casino_hmm", "ising_3x3"])
def test_run_reports_and_writes_files(reports: dict[str, tuple[RunReport, Path]],
                                      name: str) -> None:
    report, folder = reports[name]
    default = {"sprinkler": sprinkler, "casino_hmm": casino_hmm, "ising_3x3": ising_3x3}[name]
    assert report.entry == name and report.engine == default.ENTRY.default_engine
    assert report.table.strip()
    assert report.files, "config.out was set, so the entry must write its graph"
    for f in report.files:
        assert Path(f).is_file() and Path(f).stat().st_size > 0
        assert Path(f).parent == folder


# ------------------------------------------------------------------ sprinkler


def p_cloudy(c: int) -> float:
    return 0.5


def p_sprinkler(s: int, c: int) -> float:
    on = 0.1 if c else 0.5
    return on if s else 1 - on


def p_rain(r: int, c: int) -> float:
    yes = 0.8 if c else 0.2
    return yes if r else 1 - yes


def p_wet(w: int, s: int, r: int) -> float:
    yes = {(1, 1): 0.99, (1, 0): 0.9, (0, 1): 0.9, (0, 0): 0.0}[(s, r)]
    return yes if w else 1 - yes


def sprinkler_joint() -> dict[tuple[int, int, int, int], float]:
    """P(c, s, r, w) for all 16 states, from the textbook tables."""
    return {(c, s, r, w): p_cloudy(c) * p_sprinkler(s, c) * p_rain(r, c) * p_wet(w, s, r)
            for c, s, r, w in itertools.product((0, 1), repeat=4)}


def sprinkler_posterior(evidence: dict[int, int]) -> tuple[list[list[float]], float]:
    """Brute force: per-variable marginals (axes c, s, r, w) given ``{axis: state}``, and the
    evidence's probability."""
    joint = {k: p for k, p in sprinkler_joint().items()
             if all(k[axis] == v for axis, v in evidence.items())}
    z = sum(joint.values())
    marginals = [[sum(p for k, p in joint.items() if k[axis] == v) / z for v in (0, 1)]
                 for axis in range(4)]
    return marginals, z


def test_sprinkler_marginals_equal_brute_force() -> None:
    model = sprinkler.build().to(dtype=F64)
    posterior = genppl.infer(model, sprinkler.data(), engine="enum")
    expected, p_wet_yes = sprinkler_posterior({3: 1})
    for axis, name in enumerate(("cloudy", "sprinkler", "rain")):
        got = posterior.marginals[name]
        assert got.dtype == F64 and got.shape == (2,)
        assert torch.allclose(got, torch.tensor(expected[axis], dtype=F64), atol=TOL, rtol=0)
    assert posterior.log_evidence == pytest.approx(math.log(p_wet_yes), abs=TOL, rel=0)
    # The textbook numbers, to the precision they are usually quoted.
    assert float(posterior.marginals["rain"][1]) == pytest.approx(0.7079, abs=1e-4)
    assert float(posterior.marginals["sprinkler"][1]) == pytest.approx(0.4298, abs=1e-4)


def test_sprinkler_explaining_away_equals_brute_force(
        reports: dict[str, tuple[RunReport, Path]]) -> None:
    metrics = reports["sprinkler"][0].metrics
    given_wet, _ = sprinkler_posterior({3: 1})
    given_wet_rain, _ = sprinkler_posterior({3: 1, 2: 1})
    assert metrics["p_rain_given_wet"] == pytest.approx(given_wet[2][1], abs=TOL, rel=0)
    assert metrics["p_sprinkler_given_wet"] == pytest.approx(given_wet[1][1], abs=TOL, rel=0)
    assert metrics["p_sprinkler_given_wet_rain"] == pytest.approx(given_wet_rain[1][1],
                                                                  abs=TOL, rel=0)
    assert metrics["p_sprinkler_given_wet_rain"] < metrics["p_sprinkler_given_wet"]


def test_sprinkler_d_separation() -> None:
    model = sprinkler.build()
    assert model.d_separated("sprinkler", "rain", given="cloudy")
    assert not model.d_separated("sprinkler", "rain", given=["cloudy", "wet"])
    assert not model.d_separated("sprinkler", "rain")
    assert model.d_separated("cloudy", "wet", given=["sprinkler", "rain"])
    assert model.graph.nodes["wet"]["observed"]
    assert model.graph.nodes["rain"]["states"] == ("no", "yes")


def sprinkler_pyro(wet: torch.Tensor) -> None:
    """The network in plain Pyro."""
    c = pyro.sample("c", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F64)))
    s = pyro.sample("s", dist.Categorical(torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=F64)[c]))
    r = pyro.sample("r", dist.Categorical(torch.tensor([[0.8, 0.2], [0.2, 0.8]], dtype=F64)[c]))
    w = torch.tensor([[[1.0, 0.0], [0.1, 0.9]], [[0.1, 0.9], [0.01, 0.99]]], dtype=F64)
    pyro.sample("w", dist.Categorical(w[s, r]), obs=wet)


def test_sprinkler_log_joint_equals_plain_pyro() -> None:
    program = sprinkler.build().to(dtype=F64).pyro_model
    for c, s, r, w in itertools.product((0, 1), repeat=4):
        if (s, r, w) == (0, 0, 1):
            continue  # probability zero: both sides give a clamped log(eps), not a density
        v = {k: torch.tensor(x) for k, x in zip("csrw", (c, s, r, w), strict=True)}
        ours = log_joint(program, {"cloudy": v["c"], "sprinkler": v["s"], "rain": v["r"]},
                         wet=v["w"])
        theirs = log_joint(sprinkler_pyro, {"c": v["c"], "s": v["s"], "r": v["r"]}, wet=v["w"])
        assert ours == pytest.approx(theirs, abs=TOL, rel=0)
        assert ours == pytest.approx(math.log(sprinkler_joint()[(c, s, r, w)]), abs=TOL, rel=0)


# ------------------------------------------------------------------ casino HMM

START = np.array([0.5, 0.5])
TRANS = np.array([[0.95, 0.05], [0.10, 0.90]])
EMIT = np.array([[1 / 6] * 6, [0.1] * 5 + [0.5]])


def forward_backward(rolls: np.ndarray) -> tuple[np.ndarray, float]:
    """Posterior state probabilities ``(T, 2)`` and log p(rolls), in log space."""
    log_t, log_e = np.log(TRANS), np.log(EMIT)
    n = len(rolls)
    alpha, beta = np.zeros((n, 2)), np.zeros((n, 2))
    alpha[0] = np.log(START) + log_e[:, rolls[0]]
    for t in range(1, n):
        alpha[t] = np.logaddexp.reduce(alpha[t - 1][:, None] + log_t, axis=0) + log_e[:, rolls[t]]
    for t in range(n - 2, -1, -1):
        beta[t] = np.logaddexp.reduce(log_t + (log_e[:, rolls[t + 1]] + beta[t + 1])[None, :],
                                      axis=1)
    log_z = float(np.logaddexp.reduce(alpha[-1]))
    return np.exp(alpha + beta - log_z), log_z


def test_casino_enum_equals_forward_backward() -> None:
    rolls = casino_hmm.simulate(40, seed=7)[0]
    posterior = genppl.infer(casino_hmm.build().to(dtype=F64), {"roll": rolls}, engine="enum")
    probs, log_z = forward_backward(rolls.numpy())
    got = posterior.marginals["die"]
    assert got.shape == (40, 2) and got.dtype == F64
    np.testing.assert_allclose(got.numpy(), probs, atol=1e-9, rtol=0)
    assert posterior.log_evidence == pytest.approx(log_z, abs=1e-9, rel=0)


def test_casino_run_decodes_its_own_data(reports: dict[str, tuple[RunReport, Path]]) -> None:
    metrics = reports["casino_hmm"][0].metrics
    rolls, dice = casino_hmm.simulate()
    assert len(rolls) == 300 and set(rolls.tolist()) <= set(range(6))
    probs, log_z = forward_backward(rolls.numpy())
    np.testing.assert_allclose(metrics["p_loaded"], probs[:, 1], atol=1e-9, rtol=0)
    assert metrics["log_likelihood"] == pytest.approx(log_z, abs=1e-9, rel=0)
    assert metrics["accuracy"] == pytest.approx(
        float(((probs[:, 1] > 0.5) == dice.numpy().astype(bool)).mean()), abs=1e-12)
    assert metrics["accuracy"] > 0.6


def test_casino_data_is_deterministic() -> None:
    a, b = casino_hmm.simulate(), casino_hmm.simulate()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(casino_hmm.data()["roll"], a[0])


def casino_pyro(rolls: torch.Tensor) -> None:
    """The HMM in plain Pyro: one site per step, as in Pyro's HMM tutorial."""
    start, trans = torch.tensor(START, dtype=F64), torch.tensor(TRANS, dtype=F64)
    emit = torch.tensor(EMIT, dtype=F64)
    z: torch.Tensor | None = None
    for t in pyro.markov(range(len(rolls))):
        z = pyro.sample(f"z_{t}", dist.Categorical(start if z is None else trans[z]))
        pyro.sample(f"x_{t}", dist.Categorical(emit[z]), obs=rolls[t])


def test_casino_log_joint_equals_plain_pyro() -> None:
    program = casino_hmm.build().to(dtype=F64).pyro_model
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        dice = torch.randint(0, 2, (25,), generator=gen)
        rolls = torch.randint(0, 6, (25,), generator=gen)
        ours = log_joint(program, {f"die[{t}]": d for t, d in enumerate(dice)}, roll=rolls)
        theirs = log_joint(casino_pyro, {f"z_{t}": d for t, d in enumerate(dice)}, rolls=rolls)
        assert ours == pytest.approx(theirs, abs=TOL, rel=0)


# ------------------------------------------------------------------ Ising 3x3

J, H = 0.4, 0.1
EDGES = [((0, 0), (0, 1)), ((0, 1), (0, 2)), ((1, 0), (1, 1)), ((1, 1), (1, 2)),
         ((2, 0), (2, 1)), ((2, 1), (2, 2)), ((0, 0), (1, 0)), ((1, 0), (2, 0)),
         ((0, 1), (1, 1)), ((1, 1), (2, 1)), ((0, 2), (1, 2)), ((1, 2), (2, 2))]
CELLS = [(i, j) for i in range(3) for j in range(3)]


def ising_log_weight(states: dict[tuple[int, int], int]) -> float:
    """-E(s) = J sum_edges s_a s_b + h sum_i s_i, spins s = 2 * state - 1."""
    s = {c: 2 * v - 1 for c, v in states.items()}
    return J * sum(s[a] * s[b] for a, b in EDGES) + H * sum(s.values())


def test_ising_log_z_and_marginals_equal_brute_force() -> None:
    posterior = genppl.infer(ising_3x3.build().to(dtype=F64), {}, engine="enum")
    weights = {}
    for config in itertools.product((0, 1), repeat=9):
        weights[config] = ising_log_weight(dict(zip(CELLS, config, strict=True)))
    log_z = float(np.logaddexp.reduce(np.array(list(weights.values()))))
    assert posterior.log_evidence == pytest.approx(log_z, abs=TOL, rel=0)
    for k, (i, j) in enumerate(CELLS):
        up = sum(math.exp(w - log_z) for config, w in weights.items() if config[k] == 1)
        got = posterior.marginals[f"s_{i}_{j}"]
        assert got.dtype == F64
        assert torch.allclose(got, torch.tensor([1 - up, up], dtype=F64), atol=TOL, rtol=0)


def test_ising_graph_has_generated_factor_scopes() -> None:
    model = ising_3x3.build()
    g = model.graph
    bonds = [v for v, d in g.nodes(data=True) if d["kind"] == "factor" and v.startswith("bond")]
    fields = [v for v, d in g.nodes(data=True) if d["kind"] == "factor" and v.startswith("field")]
    assert len(bonds) == 12 and len(fields) == 9
    for (i, j), (k, l) in EDGES:
        name = f"bond_{i}_{j}__{k}_{l}"
        assert set(g.predecessors(name)) == {f"s_{i}_{j}", f"s_{k}_{l}"}
        assert tuple(p.node for p in model[name].parents) == (f"s_{i}_{j}", f"s_{k}_{l}")
    assert set(g.predecessors("field_1_1")) == {"s_1_1"}
    assert g.nodes["s_0_0"]["cardinality"] == 2


def ising_pyro() -> None:
    """The grid in plain Pyro: uniform spins (the counting measure is 2 x uniform) plus
    pyro.factor potentials."""
    spins = {}
    for i, j in CELLS:
        state = pyro.sample(f"x{i}{j}", dist.Categorical(logits=torch.zeros(2, dtype=F64)))
        spins[i, j] = 2.0 * state.to(F64) - 1.0
    pyro.factor("counting_measure", torch.tensor(9 * math.log(2.0), dtype=F64))
    for a, b in EDGES:
        pyro.factor(f"J{a}{b}", J * spins[a] * spins[b])
    for c in CELLS:
        pyro.factor(f"h{c}", H * spins[c])


def test_ising_log_joint_equals_plain_pyro() -> None:
    program = ising_3x3.build().to(dtype=F64).pyro_model
    gen = torch.Generator().manual_seed(0)
    for _ in range(16):
        states = torch.randint(0, 2, (9,), generator=gen)
        ours = log_joint(program, {f"s_{i}_{j}": v for (i, j), v in zip(CELLS, states,
                                                                         strict=True)})
        theirs = log_joint(ising_pyro, {f"x{i}{j}": v for (i, j), v in zip(CELLS, states,
                                                                          strict=True)})
        assert ours == pytest.approx(theirs, abs=TOL, rel=0)
        expected = ising_log_weight(dict(zip(CELLS, states.tolist(), strict=True)))
        assert ours == pytest.approx(expected, abs=TOL, rel=0)


def test_sprinkler_and_casino_under_gibbs_agree_with_exact() -> None:
    """The same entries under the Gibbs engine: each probability within 5 Monte Carlo
    standard errors of the exact one, taking the effective sample size as an eighth of
    the draws (measured: about a sixth for these chains)."""
    config = RunConfig(engine="gibbs", steps=4000, progress=False)
    exact = sprinkler.ENTRY.run(RunConfig(engine="exact", progress=False)).metrics
    sampled = sprinkler.ENTRY.run(config).metrics
    for key in ("p_rain_given_wet", "p_sprinkler_given_wet", "p_cloudy_given_wet",
                "p_sprinkler_given_wet_rain"):
        p = exact[key]
        assert abs(sampled[key] - p) <= 5 * math.sqrt(p * (1 - p) / (4000 / 8)), key
    assert sampled["log_evidence"] is None  # Gibbs gives no evidence
    exact_hmm = casino_hmm.ENTRY.run(RunConfig(engine="exact", progress=False)).metrics
    gibbs_hmm = casino_hmm.ENTRY.run(RunConfig(engine="gibbs", progress=False)).metrics
    exact_p, gibbs_p = np.array(exact_hmm["p_loaded"]), np.array(gibbs_hmm["p_loaded"])
    # Single-site Gibbs mixes slowly along a sticky chain: the die's ESS per roll is 50 to
    # 400 of the 2,000 draws (measured), a standard error up to 0.07, about 0.03 typically.
    # So: no roll beyond 5 errors at ESS 50, a mean gap within twice the typical error.
    gap = np.abs(gibbs_p - exact_p)
    assert gap.max() < 5 * math.sqrt(0.25 / 50) and gap.mean() < 0.06
    assert np.corrcoef(exact_p, gibbs_p)[0, 1] > 0.95
    assert abs(gibbs_hmm["accuracy"] - exact_hmm["accuracy"]) < 0.05

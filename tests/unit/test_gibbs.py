"""``engine="gibbs"``: the grounded factor graph against the exact engine, the sweep's
stationary distribution computed exactly, and sampled marginals against exact ones within
Monte Carlo standard errors."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pyro.distributions as dist
import pytest
import torch
from pyro.ops.stats import effective_sample_size

import genppl
from genppl.gibbs.grounding import FactorGraph, ground
from genppl.gibbs.kernel import colouring
from genppl.tabulation.tabulation import model_factors

pytestmark = pytest.mark.unit
F64 = torch.float64


def _network() -> tuple[genppl.Model, dict[str, torch.Tensor]]:
    """A four-node Bayesian network with evidence on a latent."""
    m = genppl.Model("net")
    m.cpt("a", [], [0.3, 0.7])
    m.cpt("b", ["a"], [[0.8, 0.2], [0.25, 0.75]])
    m.cpt("c", ["a"], [[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    m.cpt("d", ["b", "c"], [[[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]],
                            [[0.4, 0.6], [0.2, 0.8], [0.05, 0.95]]])
    return m.to(dtype=F64), {"d": torch.tensor(1)}


def _plated() -> tuple[genppl.Model, dict[str, torch.Tensor]]:
    """A global switch and per-item assignments in a plate, observed through counts."""
    m = genppl.Model("plated")
    m.cpt("g", [], [0.4, 0.6])
    with m.plate("items", 3):
        m.latent("z", lambda g: dist.Categorical(
            torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=F64)[g]))
        m.observed("y", lambda z: dist.Poisson(1.0 + 2.0 * z.to(F64)))
    return m.to(dtype=F64), {"y": torch.tensor([0.0, 3.0, 5.0], dtype=F64)}


def _hmm() -> tuple[genppl.Model, dict[str, torch.Tensor]]:
    m = genppl.hmm.categorical_hmm(2, 3, seed=3, learnable=False, batched=False)
    return m.to(dtype=F64), {"x": torch.tensor([0, 2, 2, 1])}


MODELS = {"network": _network, "plated": _plated, "hmm": _hmm}


def _all_states(graph: FactorGraph) -> torch.Tensor:
    """Every joint state of the instances, ``(S, V)`` (padding states excluded)."""
    ranges = [range(int(torch.isfinite(row).sum())) for row in graph.padding]
    return torch.tensor(list(itertools.product(*ranges)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_grounded_graph_is_the_models_joint(name: str) -> None:
    """Summing the grounded joint over every state is the exact engine's log evidence, and
    each instance's conditional is the joint's ratio between its states."""
    model, data = MODELS[name]()
    graph = ground(model_factors(model, data))
    states = _all_states(graph)
    joint = torch.stack([graph.log_joint(s) for s in states])
    exact = genppl.infer(model, data, engine="exact")
    assert float(torch.logsumexp(joint, 0)) == pytest.approx(exact.log_evidence, abs=1e-12)
    state = states[int(joint.argmax())]
    logits = graph.conditionals(state)
    for i in range(graph.size):
        for k in range(int(torch.isfinite(graph.padding[i]).sum())):
            moved = state.clone()
            moved[i] = k
            expected = graph.log_joint(moved) - graph.log_joint(state)
            assert float(logits[i, k] - logits[i, state[i]]) == pytest.approx(
                float(expected), abs=1e-12)


@pytest.mark.parametrize("schedule", ["chromatic", "sequential"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_sweep_leaves_the_posterior_invariant(name: str, schedule: str) -> None:
    """The transition matrix of one sweep, computed exactly from the full conditionals,
    has the exact posterior as its stationary distribution: pi P = pi."""
    model, data = MODELS[name]()
    graph = ground(model_factors(model, data))
    states = _all_states(graph)
    index = {tuple(s.tolist()): i for i, s in enumerate(states)}
    joint = torch.stack([graph.log_joint(s) for s in states])
    pi = torch.softmax(joint, 0)
    sweep = torch.eye(len(states), dtype=F64)
    for ids in colouring(graph, schedule):
        step = torch.zeros(len(states), len(states), dtype=F64)
        for a, s in enumerate(states):
            probs = torch.softmax(graph.conditionals(s)[ids], -1)
            for choice in itertools.product(*(range(graph.states) for _ in ids)):
                p = math.prod(float(probs[j, c]) for j, c in enumerate(choice))
                if p == 0.0:
                    continue
                t = s.clone()
                t[ids] = torch.tensor(choice)
                step[a, index[tuple(t.tolist())]] += p
        sweep = sweep @ step
    torch.testing.assert_close(pi @ sweep, pi, rtol=0, atol=1e-12)
    assert len(colouring(graph, schedule)) <= graph.size


def _within_mcse(draws: torch.Tensor, probs: torch.Tensor, sigmas: float = 5.0) -> None:
    """Each state's frequency in ``draws`` (chains, draws) is within ``sigmas`` Monte Carlo
    standard errors (from the effective sample size) of its exact probability. At 5 sigma
    a check fails by chance with probability below 6e-7."""
    for k, p in enumerate(probs.tolist()):
        hits = (draws == k).to(F64)
        ess = float(effective_sample_size(hits.unsqueeze(-1))) if 0.0 < p < 1.0 else 1.0
        mcse = math.sqrt(p * (1 - p) / max(ess, 1.0))
        assert abs(float(hits.mean()) - p) <= sigmas * mcse + 1e-12, (k, float(hits.mean()), p)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gibbs_marginals_agree_with_the_exact_engine(name: str) -> None:
    model, data = MODELS[name]()
    exact = genppl.infer(model, data, engine="exact")
    post = genppl.infer(model, data, engine="gibbs", num_samples=1500, num_chains=2, seed=1,
                        progress=False)
    for var, probs in exact.marginals.items():
        draws = post.samples[var]  # (chains, draws, *shape): states are 0..K-1 here
        flat_probs = probs.reshape(-1, probs.shape[-1])
        flat_draws = draws.reshape(*draws.shape[:2], -1)
        for j in range(flat_probs.shape[0]):
            _within_mcse(flat_draws[..., j], flat_probs[j])


def test_evidence_holds_and_bad_init_is_reported() -> None:
    model, data = _network()
    post = genppl.infer(model, data, engine="gibbs", num_samples=50, seed=0, progress=False,
                        init={"a": 1})
    assert bool((post.samples["d"] == 1).all())
    with pytest.raises(genppl.ModelError, match="not a finite latent"):
        genppl.infer(model, data, engine="gibbs", num_samples=5, init={"q": 0}, progress=False)
    with pytest.raises(genppl.ModelError, match="among its states"):
        genppl.infer(model, data, engine="gibbs", num_samples=5, init={"a": 4}, progress=False)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_colour_updates_equal_the_reference_conditionals(name: str) -> None:
    """The per-colour update (only the factor rows touching the colour, one-variable factors
    summed once) gives the same logits as the reference, which evaluates every factor."""
    from genppl.gibbs.kernel import updates

    model, data = MODELS[name]()
    graph = ground(model_factors(model, data))
    gen = torch.Generator().manual_seed(0)
    limits = torch.isfinite(graph.padding).sum(1)
    for schedule in ("chromatic", "sequential"):
        colours = colouring(graph, schedule)
        for _ in range(5):
            state = (torch.rand(graph.size, generator=gen) * limits).long()
            reference = graph.conditionals(state)
            for update in updates(graph, colours):
                torch.testing.assert_close(update.logits(state), reference[update.ids],
                                           rtol=0, atol=1e-12)


def test_chains_in_worker_processes_draw_what_chains_in_turn_draw() -> None:
    """Each chain seeds itself, so forked workers give the draws a serial run gives."""
    model, data = _plated()
    runs = [genppl.infer(model, data, engine="gibbs", num_samples=40, num_chains=3, seed=7,
                         executor=executor, progress=False)
            for executor in ("serial", "process")]
    for name in runs[0].samples:
        assert runs[0].samples[name].shape[:2] == (3, 40)
        assert torch.equal(runs[0].samples[name], runs[1].samples[name])
    assert not torch.equal(runs[0].samples["z"][0], runs[0].samples["z"][1])


def test_a_stopped_run_resumes_from_its_checkpoint_with_the_same_draws(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_after_saves: Any) -> None:
    """Kill a checkpointed run part-way (an interrupt after the third stretch of sweeps),
    start it again: it resumes and its draws equal an uninterrupted run's."""
    model, data = _hmm()
    options = {"num_samples": 50, "warmup_steps": 20, "seed": 3, "num_chains": 2,
               "executor": "serial", "progress": False}
    whole = genppl.infer(model, data, engine="gibbs", **options)
    saves = stop_after_saves(3)
    with pytest.raises(KeyboardInterrupt):
        genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path, checkpoint_every=15,
                     **options)
    assert saves == [15, 30, 45] and (tmp_path / "chain-0.pt").exists()
    monkeypatch.undo()
    resumed = genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path,
                           checkpoint_every=15, **options)
    for name in whole.samples:
        assert torch.equal(resumed.samples[name], whole.samples[name])
    # Finished chains answer from their checkpoints; another run's directory is refused.
    again = genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path, **options)
    assert torch.equal(again.samples["z"], whole.samples["z"])
    with pytest.raises(genppl.ModelError, match="belongs to another run"):
        genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path,
                     **{**options, "seed": 4})
    with pytest.raises(genppl.ModelError, match="needs seed="):
        genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path,
                     **{**options, "seed": None})


@pytest.mark.parametrize(("name", "blocks"), [("hmm", [["z"]]), ("network", [["b", "c"]]),
                                              ("plated", [["z"]])])
def test_blocks_drawn_jointly_agree_with_the_exact_engine(name: str,
                                                          blocks: list[list[str]]) -> None:
    """A block drawn jointly from its exact conditional (the whole chain at once, two
    parents together, a plate of assignments given the switch) leaves the posterior
    invariant: marginals within 5 MCSE of exact ones."""
    model, data = MODELS[name]()
    exact = genppl.infer(model, data, engine="exact")
    post = genppl.infer(model, data, engine="gibbs", num_samples=800, num_chains=2, seed=2,
                        blocks=blocks, progress=False)
    for var, probs in exact.marginals.items():
        flat_probs = probs.reshape(-1, probs.shape[-1])
        flat_draws = post.samples[var].reshape(*post.samples[var].shape[:2], -1)
        for j in range(flat_probs.shape[0]):
            _within_mcse(flat_draws[..., j], flat_probs[j])
    with pytest.raises(genppl.ModelError, match="blocks must name distinct finite latents"):
        genppl.infer(model, data, engine="gibbs", num_samples=5, blocks=[["nope"]],
                     progress=False)


def test_chains_become_blocks_by_default() -> None:
    """``blocks="auto"``: a chain's latents are drawn jointly by FFBS (the HMM's ``z``);
    models without chains keep single-site colours; ``()`` turns blocks off; the draws
    stay within 5 MCSE of the exact marginals."""
    model, data = _hmm()
    post = genppl.infer(model, data, engine="gibbs", num_samples=600, num_chains=2, seed=4,
                        progress=False)
    assert post.info["blocks"] == [["z"]]
    exact = genppl.infer(model, data, engine="exact")
    for t in range(data["x"].shape[0]):
        _within_mcse(post.samples["z"][..., t], exact.marginals["z"][t])
    single = genppl.infer(model, data, engine="gibbs", num_samples=5, blocks=(),
                          progress=False)
    assert single.info["blocks"] == []
    network, evidence = _network()
    assert genppl.infer(network, evidence, engine="gibbs", num_samples=5,
                        progress=False).info["blocks"] == []
    with pytest.raises(genppl.ModelError, match="blocks must be 'auto' or lists"):
        genppl.infer(model, data, engine="gibbs", num_samples=5, blocks="chains",
                     progress=False)


@pytest.mark.parametrize("name", ["network", "hmm", "plated"])
def test_vectorized_chains_move_together_and_agree_with_the_exact_engine(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        stop_after_saves: Any) -> None:
    """``executor="vectorized"``: the chains are one (chains, V) state, every colour drawn
    for all at once (the HMM's chain block chain by chain); marginals within 5 MCSE of the
    exact ones, and a checkpointed run stopped part-way resumes to the same draws."""
    model, data = MODELS[name]()
    options = {"num_samples": 400, "num_chains": 4, "seed": 6, "executor": "vectorized",
               "progress": False}
    post = genppl.infer(model, data, engine="gibbs", **options)
    exact = genppl.infer(model, data, engine="exact")
    for var, probs in exact.marginals.items():
        assert post.samples[var].shape[:2] == (4, 400)
        flat_probs = probs.reshape(-1, probs.shape[-1])
        flat_draws = post.samples[var].reshape(4, 400, -1)
        for j in range(flat_probs.shape[0]):
            _within_mcse(flat_draws[..., j], flat_probs[j])
    if name != "hmm":
        return
    stop_after_saves(2)  # at sweep 300
    with pytest.raises(KeyboardInterrupt):
        genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path, checkpoint_every=150,
                     **options)
    monkeypatch.undo()
    resumed = genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path,
                           checkpoint_every=150, **options)
    assert torch.equal(resumed.samples["z"], post.samples["z"])
    with pytest.raises(genppl.ModelError, match="executor must be one of"):
        genppl.infer(_plated_continuous(), {"y": torch.tensor([0.2])}, engine="nuts",
                     num_samples=2, executor="vectorized", progress=False)


def _plated_continuous() -> genppl.Model:
    m = genppl.Model("continuous")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with m.plate("items"):
        m.observed("y", lambda mu: dist.Normal(mu, 1.0))
    return m.to(dtype=F64)

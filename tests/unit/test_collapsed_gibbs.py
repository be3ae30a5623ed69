"""Collapsed Gibbs (``engine="gibbs"`` with Dirichlet/Beta latents integrated out): the
collapsed joint against closed-form Dirichlet-multinomial integrals over every assignment,
the fast sequential sweep against its naive reference draw for draw, and sampled marginals
and uncollapsed posterior means against exact ones within Monte Carlo standard errors."""

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
from genppl.errors import ModelError
from genppl.gibbs.collapsed import Collapsed, SequentialSweep, collapse, collapsible_latents

pytestmark = pytest.mark.unit
F64 = torch.float64


def _log_beta(a: torch.Tensor) -> torch.Tensor:
    """log B(a) over the last axis: the Dirichlet normaliser."""
    return torch.lgamma(a).sum(-1) - torch.lgamma(a.sum(-1))


def _dirmult(alpha: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """log of the integral of prod theta^counts under Dirichlet(alpha), summed over rows."""
    return (_log_beta(alpha + counts) - _log_beta(alpha.expand_as(counts))).sum()


# ------------------------------------------------------------------------------ models
def _lda(dtype: torch.dtype = F64) -> tuple[genppl.Model, dict, callable]:
    """Two documents of three tokens, two topics over three words: 2**6 assignments."""
    alpha, eta = [0.7, 0.4], [0.3, 0.5, 0.2]
    m = genppl.Model("tiny_lda")  # priors made inside the factories: in the model's dtype
    m.latent("topics", lambda: dist.Dirichlet(torch.tensor(eta)).expand([2]).to_event(1))
    m.latent("mix", lambda: dist.Dirichlet(torch.tensor(alpha)).expand([2]).to_event(1))
    with m.plate("tokens"):
        m.input("doc")
        m.latent("z", lambda mix, doc: dist.Categorical(mix[doc]))
        m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    data = {"doc": torch.tensor([0, 0, 0, 1, 1, 1]), "w": torch.tensor([0, 0, 1, 2, 2, 1])}

    def log_joint(z: tuple[int, ...]) -> torch.Tensor:
        doc_topic = torch.zeros(2, 2, dtype=F64)
        topic_word = torch.zeros(2, 3, dtype=F64)
        for t, k in enumerate(z):
            doc_topic[int(data["doc"][t]), k] += 1
            topic_word[k, int(data["w"][t])] += 1
        return _dirmult(torch.tensor(alpha, dtype=F64), doc_topic) \
            + _dirmult(torch.tensor(eta, dtype=F64), topic_word)

    return m.to(dtype=dtype), data, log_joint


def _bayes_hmm(t_len: int = 5) -> tuple[genppl.Model, dict, callable]:
    """Dirichlet transition rows (two draws of one row touch each middle step: the urn),
    Beta emissions, a fixed start."""
    m = genppl.Model("bayes_hmm")
    m.latent("trans", lambda: dist.Dirichlet(torch.tensor([1.0, 0.5])).expand([2]).to_event(1))
    m.latent("emit", lambda: dist.Beta(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 2.0]))
             .to_event(1))
    with m.chain("t", t_len):
        m.latent("z", lambda z_prev, trans: dist.Categorical(trans[z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.3, 0.7])))
        m.observed("x", lambda z, emit: dist.Bernoulli(emit[z]))
    x = torch.tensor([1.0, 1, 0, 0, 1][:t_len])

    def log_joint(path: tuple[int, ...]) -> torch.Tensor:
        trans = torch.zeros(2, 2, dtype=F64)
        for a, b in itertools.pairwise(path):
            trans[a, b] += 1
        term = math.log([0.3, 0.7][path[0]]) + _dirmult(torch.tensor([1.0, 0.5], dtype=F64),
                                                        trans)
        for j, (a1, a0) in enumerate([(2.0, 1.0), (1.0, 2.0)]):
            heads = sum(float(x[i]) for i in range(t_len) if path[i] == j)
            tails = sum(1 - float(x[i]) for i in range(t_len) if path[i] == j)
            term = term + _log_beta(torch.tensor([a1 + heads, a0 + tails], dtype=F64)) \
                - _log_beta(torch.tensor([a1, a0], dtype=F64))
        return term

    return m.to(dtype=F64), {"x": x}, log_joint


def _mixture() -> tuple[genppl.Model, dict, callable]:
    """Collapsed weights beside fixed Gaussian components (a table Gibbs keeps), a
    pairwise potential between neighbours (a kept table of two coupled instances) and a
    three-state latent beside two-state ones (padded states)."""
    means, y = [-1.0, 1.5], torch.tensor([-0.8, 1.2, 0.1, 2.0])
    m = genppl.Model("mixture")
    m.latent("w", lambda: dist.Dirichlet(torch.tensor([1.0, 2.0])))
    m.latent("u", lambda: dist.Dirichlet(torch.tensor([0.5, 1.0, 1.5])))
    m.latent("g", lambda u: dist.Categorical(u))
    with m.plate("data", 4):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("y", lambda z: dist.Normal(torch.tensor(means)[z], 1.0))
        m.factor("pair", lambda g, z: 0.3 * (g == 2) * z, scope=["g", "z"])

    def log_joint(state: tuple[int, ...]) -> torch.Tensor:
        g, zs = state[0], state[1:]
        term = _dirmult(torch.tensor([0.5, 1.0, 1.5], dtype=F64),
                        torch.nn.functional.one_hot(torch.tensor(g), 3).to(F64))
        counts = torch.bincount(torch.tensor(zs), minlength=2).to(F64)
        term = term + _dirmult(torch.tensor([1.0, 2.0], dtype=F64), counts)
        for z, yi in zip(zs, y.tolist(), strict=True):
            term = term + dist.Normal(means[z], 1.0).log_prob(torch.tensor(yi, dtype=F64))
            term = term + 0.3 * (g == 2) * z
        return term

    return m.to(dtype=F64), {"y": y}, log_joint


MODELS = {"lda": _lda, "bayes_hmm": _bayes_hmm, "mixture": _mixture}


def _states(c: Collapsed) -> list[torch.Tensor]:
    """Every joint state of the instances (each within its own states)."""
    sizes = [len(b.states) for b in c.graph.blocks.values() for _ in range(b.size)]
    return [torch.tensor(s) for s in itertools.product(*(range(k) for k in sizes))]


def _exact(name: str) -> tuple[Collapsed, list[torch.Tensor], torch.Tensor]:
    """The collapsed model, its states and their exact posterior probabilities (from the
    test's own closed-form joint)."""
    model, data, log_joint = MODELS[name]()
    c = collapse(model, data, collapsible_latents(model))
    states = _states(c)
    logp = torch.stack([log_joint(tuple(s.tolist())) for s in states])
    return c, states, torch.softmax(logp, 0)


# ------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_collapsed_joint_equals_the_dirichlet_multinomial_integrals(name: str) -> None:
    """Up to one constant (the kept tables' normalisers are the same in both), for every
    assignment of the finite latents."""
    model, data, log_joint = MODELS[name]()
    c = collapse(model, data, collapsible_latents(model))
    states = _states(c)
    ours = torch.stack([c.log_joint(s) for s in states])
    theirs = torch.stack([log_joint(tuple(s.tolist())) for s in states])
    torch.testing.assert_close(ours - ours[0], theirs - theirs[0], rtol=0, atol=1e-10)


def _naive_sweep(c: Collapsed, state: torch.Tensor, uniforms: list[float]) -> torch.Tensor:
    """The textbook sweep: each coupled instance from its conditional evaluated from the
    collapsed joint at each of its states, drawn by the same inverse CDF."""
    state = state.clone()
    for v, u in zip(c.coupled.tolist(), uniforms, strict=True):
        p = torch.softmax(c.conditional(state, v), 0)
        cum = torch.cumsum(p, 0)
        state[v] = min(int((cum <= u * cum[-1]).sum()), int((p > 0).nonzero().max()))
    return state


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_sequential_sweep_draws_what_the_naive_conditionals_draw(name: str) -> None:
    model, data, _ = MODELS[name]()
    c = collapse(model, data, collapsible_latents(model))
    fast = SequentialSweep(c)
    g = torch.Generator().manual_seed(0)
    state = naive = torch.zeros(c.graph.size, dtype=torch.long)
    for _ in range(6):
        uniforms = torch.rand(len(c.coupled), generator=g, dtype=F64).tolist()
        state, naive = fast.run(state, uniforms), _naive_sweep(c, naive, uniforms)
        assert torch.equal(state, naive)
    assert len(set(map(tuple, [fast.run(state, [u] * len(c.coupled)).tolist()
                               for u in (0.05, 0.5, 0.95)]))) > 1  # the uniforms matter


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_sweeps_conditionals_equal_the_collapsed_joints_at_every_state(name: str) -> None:
    """Every coupled instance's conditional, at every joint state: the count ratios (the
    Polya urn where two draws read one latent) against the joint's differences."""
    model, data, _ = MODELS[name]()
    c = collapse(model, data, collapsible_latents(model))
    fast = SequentialSweep(c)
    for state in _states(c):
        for v in c.coupled.tolist():
            naive = torch.softmax(c.conditional(state, v), 0)
            ours = torch.tensor(fast.conditional(state, v), dtype=F64)
            torch.testing.assert_close(ours, naive, rtol=0, atol=1e-12)


def _within_mcse(hits: torch.Tensor, exact: float, sigmas: float = 5.0) -> None:
    """``hits`` (chains, draws) averages within ``sigmas`` Monte Carlo standard errors of
    ``exact``; the standard error from the draws' spread and effective sample size."""
    ess = float(effective_sample_size(hits.unsqueeze(-1).to(F64)))
    mcse = float(hits.to(F64).std()) / math.sqrt(max(ess, 1.0))
    assert abs(float(hits.to(F64).mean()) - exact) <= sigmas * mcse + 1e-12, \
        (float(hits.mean()), exact, mcse)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gibbs_marginals_and_uncollapsed_means_agree_with_the_exact_posterior(
        name: str) -> None:
    c, states, probs = _exact(name)
    model, data, _ = MODELS[name]()
    post = genppl.infer(model, data, engine="gibbs", num_samples=1500, num_chains=2, seed=2,
                        executor="serial", progress=False)
    assert post.info["collapsed"] == sorted(q.name for q in c.latents)
    table = torch.stack(states)  # (S, V)
    drawn = torch.cat([post.samples[b.name].reshape(2, 1500, -1)
                       for b in c.graph.blocks.values()], -1)
    for v in range(c.graph.size):
        for k in range(1, int(table[:, v].max()) + 1):
            _within_mcse((drawn[..., v] == k), float(probs[table[:, v] == k].sum()))
    # E[theta | data] = sum_z p(z | data) E[theta | z, data]: the posterior means of the
    # collapsed latents, against the means of their draws.
    for i, q in enumerate(c.latents):
        means = torch.stack([q.posterior(c.counts(s)[i]).mean for s in states])
        exact = (probs.reshape(-1, *[1] * (means.dim() - 1)) * means).sum(0)
        draws = post.samples[q.name]
        assert draws.shape == (2, 1500, *q.factor.shape)
        for j, e in enumerate(exact.reshape(-1).tolist()):
            _within_mcse(draws.reshape(2, 1500, -1)[..., j], e)


def test_float32_and_the_vectorized_executor() -> None:
    model, data, _ = _lda(torch.float32)
    _, states, probs = _exact("lda")
    post = genppl.infer(model, data, engine="gibbs", num_samples=1500, num_chains=2, seed=0,
                        executor="vectorized", progress=False)
    assert post.samples["topics"].dtype == torch.float32
    table = torch.stack(states)
    for v in range(6):
        _within_mcse(post.samples["z"][..., v] == 1, float(probs[table[:, v] == 1].sum()))


def test_recovers_planted_topics() -> None:
    """Four topics on disjoint word sets, 40 documents of two topics each: the draws' topic
    rows put their mass on the planted sets."""
    g = torch.Generator().manual_seed(1)
    k, v, per = 4, 24, 30
    planted = torch.zeros(k, v, dtype=F64)
    for t in range(k):
        planted[t, 6 * t:6 * t + 6] = 1 / 6
    docs, words = [], []
    for d in range(40):
        pair = torch.randperm(k, generator=g)[:2]
        topic = pair[torch.randint(2, (per,), generator=g)]
        words.append(torch.multinomial(planted[topic], 1, generator=g)[:, 0])
        docs.append(torch.full((per,), d))
    m = genppl.Model("planted")
    m.latent("topics", lambda: dist.Dirichlet(torch.full((v,), 0.1)).expand([k]).to_event(1))
    m.latent("mix", lambda: dist.Dirichlet(torch.full((k,), 0.3)).expand([40]).to_event(1))
    with m.plate("tokens"):
        m.input("doc")
        m.latent("z", lambda mix, doc: dist.Categorical(mix[doc]))
        m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    post = genppl.infer(m.to(dtype=F64), {"doc": torch.cat(docs), "w": torch.cat(words)},
                        engine="gibbs", num_samples=20, warmup_steps=80, seed=0,
                        progress=False)
    topics = post.samples["topics"][0].mean(0)  # (k, v)
    mass = topics @ (planted > 0).to(F64).T  # (found, planted): each found row's mass per set
    best = mass.max(1).values
    assert bool((best > 0.9).all()), mass
    assert sorted(mass.argmax(1).tolist()) == list(range(k))


def test_refusals_name_the_latent_and_the_alternative() -> None:
    m = genppl.Model("normal")
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    with m.plate("data", 3):
        m.latent("z", lambda: dist.Bernoulli(0.5))
        m.observed("y", lambda mu, z: dist.Normal(mu + z, 1.0))
    with pytest.raises(ModelError, match=r"'mu'.*Normal prior.*hmc_gibbs"):
        genppl.infer(m, {"y": torch.zeros(3)}, engine="gibbs", progress=False)

    m = genppl.Model("counts")
    m.latent("p", lambda: dist.Dirichlet(torch.ones(3)))
    m.latent("z", lambda: dist.Bernoulli(0.5))
    m.observed("x", lambda p, z: dist.Multinomial(4, p))
    with pytest.raises(ModelError, match=r"'x'.*Multinomial reading latent 'p'.*Categorical"):
        genppl.infer(m, {"x": torch.tensor([1.0, 2.0, 1.0])}, engine="gibbs", progress=False)

    m = genppl.Model("softmaxed")
    m.latent("p", lambda: dist.Dirichlet(torch.ones(3)))
    with m.plate("data", 2):
        m.latent("z", lambda p: dist.Categorical(torch.softmax(p, -1)))
    with pytest.raises(ModelError, match=r"'z'.*reads latent 'p'.*not an element"):
        genppl.infer(m, {}, engine="gibbs", progress=False)

    m = genppl.Model("through_a_function")
    m.latent("p", lambda: dist.Dirichlet(torch.ones(3)))
    m.deterministic("q", lambda p: p.flip(-1))
    with m.plate("data", 2):
        m.latent("z", lambda q: dist.Categorical(q))
    with pytest.raises(ModelError, match=r"deterministic node 'q'.*reads latent 'p'"):
        genppl.infer(m, {}, engine="gibbs", progress=False)

    model, data, _ = _lda()
    with pytest.raises(ModelError, match=r"blocks.*integrate out \['mix', 'topics'\]"):
        genppl.infer(model, data, engine="gibbs", blocks=[["z"]], progress=False)

    m = genppl.Model("nothing_finite")
    m.latent("p", lambda: dist.Beta(1.0, 1.0))
    with m.plate("flips", 3):
        m.observed("x", lambda p: dist.Bernoulli(p))
    with pytest.raises(ModelError, match=r"no finite latents.*cavi"):
        genppl.infer(m, {"x": torch.ones(3)}, engine="gibbs", progress=False)


def test_masked_draws_count_nowhere() -> None:
    """A word masked out (``.mask(seen)``) is not counted in its topic's row, and the
    collapsed joint is the model's without it."""
    m = genppl.Model("masked_lda")
    m.latent("topics", lambda: dist.Dirichlet(torch.ones(3)).expand([2]).to_event(1))
    m.latent("mix", lambda: dist.Dirichlet(torch.ones(2)).expand([2]).to_event(1))
    with m.plate("tokens"):
        m.input("doc")
        m.input("seen")
        m.latent("z", lambda mix, doc: dist.Categorical(mix[doc]))
        m.observed("w", lambda z, topics, seen: dist.Categorical(topics[..., z, :])
                   .mask(seen))
    m.to(dtype=F64)
    data = {"doc": torch.tensor([0, 0, 1]), "w": torch.tensor([0, 2, 1]),
            "seen": torch.tensor([True, False, True])}
    c = collapse(m, data, collapsible_latents(m))
    state = torch.tensor([1, 1, 0])
    topics, mix = c.counts(state)
    assert topics.tolist() == [[0, 1, 0], [1, 0, 0]]  # the masked token's word is not there
    assert mix.tolist() == [[0, 2], [1, 0]]  # its topic is still drawn from its mixture


def test_a_stopped_run_resumes_with_the_same_draws(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_after_saves: Any) -> None:
    model, data, _ = _bayes_hmm()
    options = {"num_samples": 30, "warmup_steps": 10, "seed": 5, "executor": "serial",
               "progress": False}
    whole = genppl.infer(model, data, engine="gibbs", **options)
    saves = stop_after_saves(2)
    with pytest.raises(KeyboardInterrupt):
        genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path, checkpoint_every=10,
                     **options)
    assert saves == [10, 20]
    monkeypatch.undo()
    resumed = genppl.infer(model, data, engine="gibbs", checkpoint=tmp_path,
                           checkpoint_every=10, **options)
    for name in ("z", "trans", "emit"):
        assert torch.equal(resumed.samples[name], whole.samples[name]), name

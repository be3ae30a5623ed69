"""``engine="exact"`` on plates and chains: equal to brute-force enumeration of the unrolled
joint and to Pyro's enumeration (``enum``), for mixtures, tree-shaped plates with global
latents, HMMs (forward, reverse, batched in a plate, with step-local and global latents),
MAP / Viterbi, evidence on chain latents, both scan schedules, float32 and long chains."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit
F64 = torch.float64


def _simplex(*shape: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """A random table, the same for a seed; factories call it in the model's dtype."""
    g = torch.Generator().manual_seed(seed)
    w = 0.1 + torch.rand(*shape, generator=g, dtype=F64)
    return (w / w.sum(-1, keepdim=True)).to(dtype)


def _fixed(*shape: int, seed: int) -> Callable[[], torch.Tensor]:
    """A factory for a known table, in the model's dtype (literals follow the model)."""
    return lambda: _simplex(*shape, seed=seed, dtype=torch.get_default_dtype())


def _agree(a: genppl.Posterior, b: genppl.Posterior, names: list[str], atol: float) -> None:
    assert a.log_evidence == pytest.approx(b.log_evidence, abs=atol)
    for name in names:
        torch.testing.assert_close(a.marginals[name], b.marginals[name], rtol=0, atol=atol)


def mixture(k: int = 3) -> genppl.Model:
    m = genppl.Model("mixture")
    m.param("w", _simplex(k, seed=1), constraint=dist.constraints.simplex)
    m.param("mu", torch.linspace(-2, 2, k, dtype=F64))
    with m.plate("data"):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z, mu: dist.Normal(mu[z], 1.0))
    return m.to(dtype=F64)


def test_mixture_posterior_is_bayes_rule_per_point() -> None:
    x = torch.tensor([-2.5, 0.1, 0.3, 1.9, 4.0], dtype=F64)
    post = genppl.infer(mixture(), {"x": x}, engine="exact", map=True)
    w, mu = _simplex(3, seed=1), torch.linspace(-2, 2, 3, dtype=F64)
    joint = w.log() + dist.Normal(mu, 1.0).log_prob(x.unsqueeze(-1))
    assert post.log_evidence == pytest.approx(float(joint.logsumexp(-1).sum()), abs=1e-10)
    torch.testing.assert_close(post.marginals["z"], joint.softmax(-1), rtol=0, atol=1e-12)
    assert torch.equal(post.info["map"]["z"], joint.argmax(-1))
    assert post.info["map_log_joint"] == pytest.approx(float(joint.max(-1).values.sum()))


def tree_plates() -> genppl.Model:
    """A global switch, a per-group latent, a per-item latent in a nested plate."""
    m = genppl.Model("tree")
    m.deterministic("pg", _fixed(2, 3, seed=2), event_dim=2)
    m.deterministic("pi", _fixed(3, 2, seed=3), event_dim=2)
    m.deterministic("po", _fixed(2, 2, 3, seed=4), event_dim=3)
    m.latent("s", lambda: dist.Categorical(torch.tensor([0.3, 0.7])))
    with m.plate("group"):
        m.latent("g", lambda s, pg: dist.Categorical(pg[s]))
        with m.plate("item"):
            m.latent("i", lambda g, pi: dist.Categorical(pi[g]))
            m.observed("o", lambda s, i, po: dist.Categorical(Vindex(po)[s, i]))
    return m.to(dtype=F64)


def test_tree_plates_equal_brute_force_and_pyro() -> None:
    o = torch.tensor([[0, 2, 1], [2, 2, 0]])  # (group, item)
    model = tree_plates()
    exact = genppl.infer(model, {"o": o}, engine="exact")
    _agree(exact, genppl.infer(model, {"o": o}, engine="enum"), ["s", "g", "i"], 1e-10)
    # brute force over s, g[0..1], i[0..1][0..2]: 2 * 3^2 * 2^6 joint states
    pg, pi, po = _simplex(2, 3, seed=2), _simplex(3, 2, seed=3), _simplex(2, 2, 3, seed=4)
    ps = torch.tensor([0.3, 0.7], dtype=F64)
    logs, s_of = [], []
    for s, g0, g1, *items in itertools.product(range(2), range(3), range(3), *[range(2)] * 6):
        lp = ps[s].log() + pg[s, g0].log() + pg[s, g1].log()
        for n, (g, row) in enumerate(((g0, items[:3]), (g1, items[3:]))):
            for j, i in enumerate(row):
                lp = lp + pi[g, i].log() + po[s, i, o[n, j]].log()
        logs.append(lp)
        s_of.append(s)
    logs_t = torch.stack(logs)
    assert exact.log_evidence == pytest.approx(float(logs_t.logsumexp(0)), abs=1e-10)
    p_s1 = float((logs_t - logs_t.logsumexp(0)).exp()[torch.tensor(s_of) == 1].sum())
    assert float(exact.marginals["s"][1]) == pytest.approx(p_s1, abs=1e-12)


def hmm(reverse: bool = False, plate: bool = False) -> genppl.Model:
    m = genppl.Model("hmm")
    m.deterministic("start", _fixed(3, seed=5), event_dim=1)
    m.deterministic("trans", _fixed(3, 3, seed=6), event_dim=2)
    m.deterministic("emit", _fixed(3, 4, seed=7), event_dim=2)

    def body() -> None:
        with m.chain("t", reverse=reverse):
            m.latent("z", lambda z_prev, trans: dist.Categorical(trans[z_prev]),
                     init=lambda start: dist.Categorical(start))
            m.observed("x", lambda z, emit: dist.Categorical(emit[z]))
    if plate:
        with m.plate("seq"):
            body()
    else:
        body()
    return m.to(dtype=F64)


def _brute_hmm(x: list[int]) -> tuple[float, torch.Tensor, list[int]]:
    start, trans, emit = _simplex(3, seed=5), _simplex(3, 3, seed=6), _simplex(3, 4, seed=7)
    paths = list(itertools.product(range(3), repeat=len(x)))
    logs = []
    for path in paths:
        lp = start[path[0]].log() + emit[path[0], x[0]].log()
        for t in range(1, len(x)):
            lp = lp + trans[path[t - 1], path[t]].log() + emit[path[t], x[t]].log()
        logs.append(lp)
    logs_t = torch.stack(logs)
    post = (logs_t - logs_t.logsumexp(0)).exp()
    marg = torch.zeros(len(x), 3, dtype=F64)
    for p, path in zip(post, paths, strict=True):
        marg[torch.arange(len(x)), torch.tensor(path)] += p
    return float(logs_t.logsumexp(0)), marg, list(paths[int(logs_t.argmax())])


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_hmm_equals_brute_force_with_either_scan(method: str) -> None:
    x = [0, 3, 3, 1, 2, 3, 0]
    log_z, marg, path = _brute_hmm(x)
    post = genppl.infer(hmm(), {"x": torch.tensor(x)}, engine="exact", map=True,
                        chain_method=method)
    assert post.log_evidence == pytest.approx(log_z, abs=1e-10)
    torch.testing.assert_close(post.marginals["z"], marg, rtol=0, atol=1e-10)
    assert post.info["map"]["z"].tolist() == path
    viterbi_only = genppl.infer(hmm(), {"x": torch.tensor(x)}, engine="exact", map=True,
                                marginals=False, chain_method=method)
    assert viterbi_only.info["map"]["z"].tolist() == path
    assert not viterbi_only.marginals and viterbi_only.log_evidence is None
    assert viterbi_only.info["map_log_joint"] == pytest.approx(post.info["map_log_joint"])


def test_reverse_chain_and_plate_of_sequences_equal_pyro() -> None:
    x = torch.tensor([[0, 1], [3, 3], [3, 0], [1, 2], [2, 2]])  # (time, seq)
    for model in (hmm(reverse=True, plate=True), hmm(plate=True)):
        exact = genppl.infer(model, {"x": x}, engine="exact")
        _agree(exact, genppl.infer(model, {"x": x}, engine="enum"), ["z"], 1e-10)
    # each sequence of the plate is its own HMM
    for n in range(2):
        single = genppl.infer(hmm(), {"x": x[:, n]}, engine="exact")
        torch.testing.assert_close(exact.marginals["z"][:, n], single.marginals["z"], rtol=0,
                                   atol=1e-12)


def test_chain_with_step_local_and_global_latents_equals_pyro() -> None:
    m = genppl.Model("regime_hmm")
    m.latent("regime", lambda: dist.Categorical(torch.tensor([0.4, 0.6])))
    m.deterministic("trans", _fixed(2, 2, 2, seed=8), event_dim=3)
    m.deterministic("side", _fixed(2, 3, seed=9), event_dim=2)
    m.deterministic("emit", _fixed(2, 3, 2, seed=10), event_dim=3)
    with m.chain("t"):
        m.latent("z", lambda z_prev, regime, trans: dist.Categorical(Vindex(trans)[regime,
                                                                               z_prev]),
                 init=lambda: dist.Categorical(torch.tensor([0.5, 0.5])))
        m.latent("w", lambda z, side: dist.Categorical(side[z]))
        m.observed("x", lambda z, w, emit: dist.Categorical(Vindex(emit)[z, w]))
    m = m.to(dtype=F64)
    x = torch.tensor([0, 1, 1, 0, 1, 1])
    exact = genppl.infer(m, {"x": x}, engine="exact")
    _agree(exact, genppl.infer(m, {"x": x}, engine="enum"), ["regime", "z", "w"], 1e-10)


def test_evidence_on_a_chain_latent_fixes_it() -> None:
    x = [0, 3, 3, 1]
    z = torch.tensor([0, 1, 1, 2])
    post = genppl.infer(hmm(), {"x": torch.tensor(x), "z": z}, engine="exact")
    start, trans, emit = _simplex(3, seed=5), _simplex(3, 3, seed=6), _simplex(3, 4, seed=7)
    lp = start[0].log() + sum(trans[z[t - 1], z[t]].log() for t in range(1, 4)) + \
        sum(emit[z[t], x[t]].log() for t in range(4))
    assert post.log_evidence == pytest.approx(float(lp), abs=1e-12)
    assert torch.equal(post.marginals["z"].argmax(-1), z)


def test_float32_and_a_long_chain_stay_finite() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (1_000_000,), generator=gen)
    post64 = genppl.infer(hmm(), {"x": x}, engine="exact")
    post32 = genppl.infer(hmm().to(dtype=torch.float32), {"x": x}, engine="exact")
    assert post32.marginals["z"].dtype == torch.float32
    assert post64.log_evidence == pytest.approx(post32.log_evidence, rel=1e-4)
    assert torch.isfinite(torch.tensor(post64.log_evidence))
    torch.testing.assert_close(post64.marginals["z"].sum(-1), torch.ones(len(x), dtype=F64))


def test_sibling_plates_coupled_by_one_table_are_refused() -> None:
    m = genppl.Model("grid")
    with m.plate("rows", 2):
        m.latent("r", lambda: dist.Bernoulli(0.5))
    with m.plate("cols", 2):
        m.latent("c", lambda: dist.Bernoulli(0.5))
    with m.plate("rows", 2), m.plate("cols", 2):
        m.observed("y", lambda r, c: dist.Bernoulli(0.2 + 0.6 * (r == c).double()))
    with pytest.raises(ModelError, match="sibling plates"):
        genppl.infer(m.to(dtype=F64), {"y": torch.ones(2, 2)}, engine="exact")


def test_memory_guard_refuses_before_allocating() -> None:
    # a 12x12 Ising grid has treewidth 12: tables of 2^13 entries per elimination step
    m = genppl.Model("grid")
    names = [[f"s{i}_{j}" for j in range(12)] for i in range(12)]
    for row in names:
        for name in row:
            m.variable(name, 2)
    for i in range(12):
        for j in range(12):
            for a, b in ((i + 1, j), (i, j + 1)):
                if a < 12 and b < 12:
                    m.factor(f"f{i}_{j}_{a}_{b}",
                             lambda u, v: torch.where(u == v, 0.5, -0.5),
                             scope=(names[i][j], names[a][b]))
    with pytest.raises(ModelError, match=r"entries.*induced width \d+.*budget.*gibbs"):
        genppl.infer(m, {}, engine="exact", budget_bytes=2**14)
    # a chain whose joint state would not fit
    with pytest.raises(ModelError, match=r"joint states of chain 't'.*budget"):
        genppl.infer(hmm(), {"x": torch.zeros(5, dtype=torch.long)}, engine="exact",
                     budget_bytes=64)


def test_log_evidence_per_sequence_sums_to_the_total() -> None:
    x = torch.tensor([[0, 1, 2], [3, 3, 0], [3, 0, 1], [1, 2, 2]])  # (time, seq)
    post = genppl.infer(hmm(plate=True), {"x": x}, engine="exact", evidence_per="seq")
    per = post.info["log_evidence_per"]
    assert per.shape == (3,)
    for n in range(3):
        single = genppl.infer(hmm(), {"x": x[:, n]}, engine="exact")
        assert float(per[n]) == pytest.approx(single.log_evidence, abs=1e-12)
    assert post.log_evidence == pytest.approx(float(per.sum()), abs=1e-12)
    with pytest.raises(ModelError, match="couples the plate's entries"):
        genppl.infer(tree_plates(), {"o": torch.zeros(2, 3, dtype=torch.long)},
                     engine="exact", evidence_per="group")


def _chi_square_ok(counts: torch.Tensor, probs: torch.Tensor, alpha: float = 1e-4) -> None:
    """Pearson's goodness-of-fit test of observed joint counts against exact probabilities
    (cells with tiny expectation merged), failing with probability ``alpha`` if correct."""
    from scipy.stats import chi2

    n = float(counts.sum())
    expected = probs * n
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    assert stat < chi2.ppf(1 - alpha, int(keep.sum()) - 1), stat


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_posterior_draws_of_whole_paths_follow_the_exact_joint(method: str) -> None:
    x = [0, 3, 1, 3]
    draws = 1500
    post = genppl.infer(hmm(), {"x": torch.tensor(x)}, engine="exact", num_samples=draws,
                        seed=1, chain_method=method)
    paths = post.samples["z"]
    assert paths.shape == (1, draws, 4)
    # brute-force posterior over all 81 paths
    start, trans, emit = _simplex(3, seed=5), _simplex(3, 3, seed=6), _simplex(3, 4, seed=7)
    logs = torch.zeros(3, 3, 3, 3, dtype=F64)
    for path in itertools.product(range(3), repeat=4):
        lp = start[path[0]].log() + sum(trans[path[t - 1], path[t]].log() for t in (1, 2, 3))
        logs[path] = lp + sum(emit[path[t], x[t]].log() for t in range(4))
    probs = (logs - logs.logsumexp(tuple(range(4)))).exp().reshape(-1)
    index = ((paths[0] * torch.tensor([27, 9, 3, 1])).sum(-1))
    _chi_square_ok(torch.bincount(index, minlength=81).to(F64), probs)


def test_posterior_draws_through_plates_follow_the_exact_joint() -> None:
    o = torch.tensor([[0, 2, 1], [2, 2, 0]])
    draws = 1500
    post = genppl.infer(tree_plates(), {"o": o}, engine="exact", num_samples=draws, seed=2)
    s, g = post.samples["s"][0], post.samples["g"][0]
    assert s.shape == (draws,) and g.shape == (draws, 2) and post.samples["i"].shape == (
        1, draws, 2, 3)
    # exact joint of (s, g[0], g[1]) by the engine itself, conditioning by evidence
    model = tree_plates()
    joint = torch.zeros(2, 3, 3, dtype=F64)
    for sv, g0, g1 in itertools.product(range(2), range(3), range(3)):
        fixed = genppl.infer(model, {"o": o, "s": torch.tensor(sv)}, engine="exact")
        given_s = fixed.marginals["g"]  # g[0], g[1] independent given s
        joint[sv, g0, g1] = math.exp(fixed.log_evidence) * given_s[0, g0] * given_s[1, g1]
    joint /= joint.sum()
    index = s * 9 + g[:, 0] * 3 + g[:, 1]
    _chi_square_ok(torch.bincount(index, minlength=18).to(F64), joint.reshape(-1))

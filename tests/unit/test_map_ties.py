"""``engine="exact"`` MAP where optima tie: the assignment returned is one joint maximiser,
never a mix of several (which can have probability zero), on every path of the engine --
flat networks, plates, chains (both scans, forward and reverse, reading a variable outside
the chain, with step-local latents), batched evidence, ``evidence_per`` and plates declared
inside a chain -- against brute-force enumeration of the joint. Also: plates inside a chain
against brute force and Pyro's enumeration, and the exact engine's random stream.

Every MAP check asks three things of the brute force: the returned assignment's log joint
is finite, equals the maximum over all assignments, and equals the reported
``map_log_joint``."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genppl
from genppl import ModelError
from genppl.cli import main as cli
from genppl.exact import Factor, naive_map
from genppl.exact.contract import eliminate
from genppl.exact.log_ops import max_values
from genppl.exact.rings import MAX

pytestmark = pytest.mark.unit
F64 = torch.float64
F32 = torch.float32
States = dict[str, torch.Tensor]
LogJoint = Callable[[States], torch.Tensor]


def _atol(dtype: torch.dtype) -> float:
    return 1e-8 if dtype == F64 else 1e-4


def _in(table: torch.Tensor) -> torch.Tensor:
    """A fixed table in the dtype of the model being tabulated (factories follow it)."""
    return table.to(torch.get_default_dtype())


def _all_states(shapes: dict[str, tuple[tuple[int, ...], int]]) -> States:
    """Every joint assignment of latents of these (shape, number of states): ``(S, *shape)``
    state indices each, S the number of joint assignments."""
    sizes = {name: (math.prod(shape), k) for name, (shape, k) in shapes.items()}
    grid = torch.tensor(list(itertools.product(*(range(k) for n, k in sizes.values()
                                                 for _ in range(n)))))
    out, at = {}, 0
    for name, (shape, _) in shapes.items():
        n = sizes[name][0]
        out[name] = grid[:, at:at + n].reshape(-1, *shape)
        at += n
    return out


def _check_map(assignment: States, reported: float, log_joint: LogJoint, states: States,
               dtype: torch.dtype = F64) -> None:
    """``assignment`` (one state index per latent entry) is a joint maximiser of the
    brute-force joint, and ``reported`` its log joint (see module doc)."""
    best = float(log_joint(states).max())
    got = float(log_joint({v: s.unsqueeze(0) for v, s in assignment.items()})[0])
    assert math.isfinite(got)
    assert got == pytest.approx(best, abs=_atol(dtype))
    assert reported == pytest.approx(best, abs=_atol(dtype))


def _check_posterior_map(post: genppl.Posterior, log_joint: LogJoint, states: States,
                         dtype: torch.dtype = F64) -> None:
    _check_map(post.info["map"], post.info["map_log_joint"], log_joint, states, dtype)


# --------------------------------------------------------------------- the max reduction
def test_the_max_routes_its_gradient_to_one_maximiser_over_one_axis_or_several() -> None:
    x = torch.zeros(2, 3, 4, dtype=F64)
    x[1, 2, 0] = -1.0  # ties everywhere else
    for dim, hot in ((0, (0,)), ((0, 1), (0, 0))):
        leaf = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(max_values(leaf, dim).sum(), leaf)
        per_output = grad.sum(dim)
        assert torch.equal(per_output, torch.ones_like(per_output))  # one maximiser each
        assert bool((grad[hot] == 1).all())  # the first maximiser (flattened)


@st.composite
def tied_factor_graphs(draw: st.DrawFn) -> list[Factor]:
    """Up to 6 variables and 8 factors whose log tables take values in {-inf, 0, 1}: ties
    almost everywhere, impossible entries too; two evidence cases."""
    n = draw(st.integers(2, 6))
    cards = [draw(st.integers(2, 3)) for _ in range(n)]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.tensor([-math.inf, 0.0, 1.0], dtype=F64)
    scopes = [(i,) for i in range(n)]
    scopes += [tuple(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True)))
               for _ in range(draw(st.integers(1, 8)))]
    factors = []
    for scope in scopes:
        index = torch.randint(0, 3, (2, *(cards[i] for i in scope)), generator=gen)
        table = values[index.clamp(min=1 if len(scope) == 1 else 0)]  # every state possible
        factors.append(Factor(tuple(f"v{i}" for i in scope), table))
    return factors


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(tied_factor_graphs())
def test_max_product_gradients_are_one_hot_and_jointly_maximal(factors: list[Factor]) -> None:
    cards = {v: k for f in factors for v, k in f.cardinalities().items()}
    leaves = {v: torch.zeros(2, k, dtype=F64, requires_grad=True) for v, k in cards.items()}
    with torch.enable_grad():
        left = eliminate([*factors, *(Factor((v,), t) for v, t in leaves.items())], cards,
                         ring=MAX)
        value = sum(f.log_table for f in left)
        grads = torch.autograd.grad(value.sum(), list(leaves.values()))
    best, _ = naive_map(factors)
    torch.testing.assert_close(value.detach(), best, rtol=0, atol=1e-12)
    if not bool(torch.isfinite(best).all()):
        return  # no possible assignment in some case: nothing to decode there
    at = {v: g.argmax(-1) for v, g in zip(leaves, grads, strict=True)}
    for g in grads:
        assert torch.equal(g.sum(-1), torch.ones(2, dtype=F64)) and bool((g >= 0).all())
        assert torch.equal(g.amax(-1), torch.ones(2, dtype=F64))
    score = sum(f.log_table[(torch.arange(2), *(at[v] for v in f.vars))] for f in factors)
    torch.testing.assert_close(score, best, rtol=0, atol=1e-12)


# --------------------------------------------------------------------- flat networks
def complement(kind: str, plate: bool, dtype: torch.dtype = F64) -> genppl.Model:
    """``a ~ [.5, .5]`` and ``b = 1 - a``: MAP ties between (0, 1) and (1, 0), while
    (0, 0) and (1, 1) are impossible."""
    m = genppl.Model("complement")
    with m.plate("n", 3) if plate else contextlib.nullcontext():
        if kind == "cpt":
            m.cpt("a", [], [0.5, 0.5])
            m.cpt("b", ["a"], [[0.0, 1.0], [1.0, 0.0]])
        else:
            m.latent("a", lambda: dist.Categorical(_in(torch.tensor([0.5, 0.5]))))
            m.latent("b", lambda a: dist.Categorical(
                _in(torch.nn.functional.one_hot(1 - a, 2))))
    return m.to(dtype=dtype)


def _complement_log_joint(s: States) -> torch.Tensor:
    ok = (s["b"] == 1 - s["a"]).to(F64)
    lp = math.log(0.5) + ok.log()
    return lp.reshape(lp.shape[0], -1).sum(-1)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("plate", [False, True])
@pytest.mark.parametrize("kind", ["cpt", "factory"])
def test_a_deterministic_complement_decodes_to_a_possible_assignment(
        kind: str, plate: bool, dtype: torch.dtype) -> None:
    post = genppl.infer(complement(kind, plate, dtype), {}, engine="exact", map=True,
                        num_samples=20, seed=0)
    shape = (3,) if plate else ()
    _check_posterior_map(post, _complement_log_joint,
                         _all_states({"a": (shape, 2), "b": (shape, 2)}), dtype)
    # the exact draws are possible too
    assert torch.equal(post.samples["b"], 1 - post.samples["a"])


def _cpt_rows(gen: torch.Generator, rows: int, k: int) -> torch.Tensor:
    """Rows of weights 0 or 1 (an all-zero row becomes all ones): deterministic rows and
    rows tied among two or three states."""
    w = torch.randint(0, 2, (rows, k), generator=gen).to(F64)
    w[w.sum(-1) == 0] = 1.0
    return w / w.sum(-1, keepdim=True)


@st.composite
def tied_networks(draw: st.DrawFn) -> tuple[list[list[int]], list[torch.Tensor],
                                             dict[str, torch.Tensor]]:
    """Bayesian networks of 3 to 7 nodes with tie-heavy tables, evidence on up to all but
    one node, in up to four cases at once, each drawn from the network (so possible)."""
    n = draw(st.integers(3, 7))
    cards = [draw(st.integers(2, 3)) for _ in range(n)]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    parents, tables = [], []
    for i in range(n):
        pa = [j for j in range(i) if draw(st.booleans())]
        rows = math.prod(cards[j] for j in pa)
        tables.append(_cpt_rows(gen, rows, cards[i]).reshape(
            *(cards[j] for j in pa), cards[i]))
        parents.append(pa)
    seen = draw(st.lists(st.integers(0, n - 1), max_size=n - 1, unique=True))
    cases = draw(st.integers(1, 4))
    drawn: list[torch.Tensor] = []  # ancestral sampling, one column per case
    for pa, table in zip(parents, tables, strict=True):
        rows = table[tuple(drawn[j] for j in pa)] if pa else table.expand(cases, -1)
        drawn.append(torch.multinomial(rows, 1, generator=gen).squeeze(-1))
    return parents, tables, {f"x{i}": drawn[i] for i in seen}


def _network(parents: list[list[int]], tables: list[torch.Tensor], dtype: torch.dtype
             ) -> genppl.Model:
    m = genppl.Model("tied")
    for i, (pa, table) in enumerate(zip(parents, tables, strict=True)):
        m.cpt(f"x{i}", [f"x{j}" for j in pa], table)
    return m.to(dtype=dtype)


def _network_log_joint(parents: list[list[int]], tables: list[torch.Tensor]) -> LogJoint:
    def log_joint(s: States) -> torch.Tensor:
        return sum(tables[i].log()[(*(s[f"x{j}"] for j in pa), s[f"x{i}"])]
                   for i, pa in enumerate(parents))
    return log_joint


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(tied_networks(), st.sampled_from([F64, F32]))
def test_tied_networks_with_batched_evidence_decode_a_joint_maximiser(
        case: tuple[list[list[int]], list[torch.Tensor], dict[str, torch.Tensor]],
        dtype: torch.dtype) -> None:
    parents, tables, data = case
    model = _network(parents, tables, dtype)
    log_joint = _network_log_joint(parents, tables)
    states = _all_states({f"x{i}": ((), t.shape[-1]) for i, t in enumerate(tables)})
    logw = log_joint(states)  # (S,)
    cases = next(iter(data.values())).shape[0] if data else 1
    agree = torch.ones(cases, logw.shape[0], dtype=torch.bool)
    for v, value in data.items():
        agree &= states[v].unsqueeze(0) == value.unsqueeze(-1)
    best = torch.where(agree, logw, -math.inf).amax(-1)  # (cases,)
    post = genppl.infer(model, data, engine="exact", map=True)
    chosen = {v: s.expand(cases) for v, s in post.info["map"].items()}
    got = log_joint(chosen)
    for v, value in data.items():
        assert torch.equal(chosen[v], value)  # evidence is kept
    assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(got, best, rtol=0, atol=_atol(dtype))
    reported = torch.as_tensor(post.info["map_log_joint"], dtype=F64).expand(cases)
    torch.testing.assert_close(reported, best, rtol=0, atol=_atol(dtype))


# --------------------------------------------------------------------- plates
def tied_tree(dtype: torch.dtype = F64) -> tuple[genppl.Model, LogJoint]:
    """A uniform switch, a per-group latent tied between two mirrored states given it, a
    per-item latent in a nested plate copying it or not, observations with repeated
    values."""
    pg = torch.tensor([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4]], dtype=F64)
    pi = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=F64)
    po = torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]],
                       [[0.25, 0.25, 0.5], [0.25, 0.5, 0.25]]], dtype=F64)
    m = genppl.Model("tied_tree")
    m.latent("s", lambda: dist.Categorical(_in(torch.tensor([0.5, 0.5]))))
    with m.plate("group", 2):
        m.latent("g", lambda s: dist.Categorical(_in(pg)[s]))
        with m.plate("item", 3):
            m.latent("i", lambda g: dist.Categorical(_in(pi)[g]))
            m.observed("o", lambda s, i: dist.Categorical(_in(po)[s, i]))
    o = torch.tensor([[0, 2, 1], [2, 2, 0]])

    def log_joint(v: States) -> torch.Tensor:
        s, g, i = v["s"], v["g"], v["i"]
        lp = math.log(0.5) + pg[s.unsqueeze(-1), g].log().sum(-1)
        lp = lp + pi[g.unsqueeze(-1), i].log().sum((-1, -2))
        return lp + po[s[:, None, None], i, o].log().sum((-1, -2))
    return m.to(dtype=dtype), log_joint


@pytest.mark.parametrize("dtype", [F64, F32])
def test_tied_nested_plates_decode_a_joint_maximiser(dtype: torch.dtype) -> None:
    model, log_joint = tied_tree(dtype)
    o = torch.tensor([[0, 2, 1], [2, 2, 0]])
    post = genppl.infer(model, {"o": o}, engine="exact", map=True)
    states = _all_states({"s": ((), 2), "g": ((2,), 3), "i": ((2, 3), 2)})
    _check_posterior_map(post, log_joint, states, dtype)
    logw = log_joint(states)
    assert post.log_evidence == pytest.approx(float(logw.logsumexp(0)), abs=_atol(dtype))


# --------------------------------------------------------------------- chains
K = 8
#: An 8-state ring, mirror-symmetric: a step moves to either neighbour (0.4 each) or stays;
#: each state shows its distance from state 0. Paths and their mirror images tie.
RING = torch.stack([0.2 * torch.eye(K, dtype=F64)[i] + 0.4 * torch.eye(K, dtype=F64)[(i + 1) % K]
                    + 0.4 * torch.eye(K, dtype=F64)[(i - 1) % K] for i in range(K)])
SHOWN = torch.where(torch.tensor([min(i, K - i) for i in range(K)]).unsqueeze(-1)
                    == torch.arange(5), torch.tensor(0.7, dtype=F64),
                    torch.tensor(0.075, dtype=F64))
START = torch.full((K,), 1.0 / K, dtype=F64)
#: Observations under which per-variable decoding of the ring mixes mirrored optima.
RING_X = [4, 1, 2, 0, 0]


def ring_hmm(reverse: bool = False, plate: bool = False,
             dtype: torch.dtype = F64) -> genppl.Model:
    m = genppl.Model("ring")

    def body() -> None:
        with m.chain("t", reverse=reverse):
            m.latent("z", lambda z_prev: dist.Categorical(_in(RING)[z_prev]),
                     init=lambda: dist.Categorical(_in(START)))
            m.observed("x", lambda z: dist.Categorical(_in(SHOWN)[z]))
    with m.plate("seq") if plate else contextlib.nullcontext():
        body()
    return m.to(dtype=dtype)


def _ring_log_joint(x: list[int]) -> LogJoint:
    """Paths in the order the chain runs (reverse the data for a reverse chain)."""
    def log_joint(s: States) -> torch.Tensor:
        z = s["z"]
        lp = START[z[:, 0]].log() + SHOWN[z, torch.tensor(x)].log().sum(-1)
        return lp + RING[z[:, :-1], z[:, 1:]].log().sum(-1)
    return log_joint


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_symmetric_hmm_decodes_one_of_its_tied_viterbi_paths(
        method: str, reverse: bool, dtype: torch.dtype) -> None:
    x = RING_X[::-1] if reverse else RING_X
    post = genppl.infer(ring_hmm(reverse, dtype=dtype), {"x": torch.tensor(x)},
                        engine="exact", map=True, chain_method=method)
    path = post.info["map"]["z"]
    run = {"z": path.flip(0) if reverse else path}  # in the order the chain runs
    _check_map(run, post.info["map_log_joint"], _ring_log_joint(RING_X),
               _all_states({"z": ((len(x),), K)}), dtype)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_a_plate_of_symmetric_hmms_decodes_each_sequence_and_its_log_joint(
        method: str) -> None:
    xs = [RING_X, [0, 1, 2, 3, 4], [4, 4, 0, 4, 4]]
    post = genppl.infer(ring_hmm(plate=True), {"x": torch.tensor(xs).T}, engine="exact",
                        map=True, evidence_per="seq", chain_method=method)
    per = post.info["map_log_joint_per"]
    paths = _all_states({"z": ((5,), K)})
    for n, x in enumerate(xs):
        log_joint = _ring_log_joint(x)
        best = float(log_joint(paths).max())
        got = float(log_joint({"z": post.info["map"]["z"][:, n].unsqueeze(0)})[0])
        assert got == pytest.approx(best, abs=1e-10) and float(per[n]) == pytest.approx(best)
    assert post.info["map_log_joint"] == pytest.approx(float(per.sum()), abs=1e-10)


def test_symmetric_hmm_unrolled_into_a_bif_network_decodes_a_viterbi_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The flat-network path: the ring HMM unrolled into CPTs, written as BIF and read back,
    queried through the API and through ``genppl query --map``."""
    m = genppl.Model("ring_bn")
    m.cpt("z0", [], START)
    m.cpt("x0", ["z0"], SHOWN)
    for t in range(1, len(RING_X)):
        m.cpt(f"z{t}", [f"z{t - 1}"], RING)
        m.cpt(f"x{t}", [f"z{t}"], SHOWN)
    path = genppl.write_bif(m, tmp_path / "ring.bif")
    log_joint = _ring_log_joint(RING_X)
    paths = _all_states({"z": ((len(RING_X),), K)})
    post = genppl.infer(genppl.read_bif(path).to(dtype=F64),
                        {f"x{t}": torch.tensor(x) for t, x in enumerate(RING_X)},
                        engine="exact", map=True)
    z = torch.stack([post.info["map"][f"z{t}"] for t in range(len(RING_X))])
    _check_map({"z": z}, post.info["map_log_joint"], log_joint, paths)
    evidence = [f"x{t}={x}" for t, x in enumerate(RING_X)]
    assert cli(["query", str(path), "--evidence", *evidence, "--map", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    z = torch.tensor([int(answer["map"][f"z{t}"]) for t in range(len(RING_X))])
    assert float(log_joint({"z": z.unsqueeze(0)})[0]) == pytest.approx(
        float(log_joint(paths).max()), abs=1e-10)


#: Observations under which per-variable decoding mixes the two regimes' tied paths.
X_REGIME = torch.tensor([0, 0, 0, 1])


def regime_chain(dtype: torch.dtype = F64) -> tuple[genppl.Model, LogJoint]:
    """A chain reading a uniform regime outside it (the two regimes' transitions mirror
    each other), with a step-local latent tied between two states that copy the chain's."""
    trans = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]],
                          [[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]], dtype=F64)
    side = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], dtype=F64)
    emit = torch.tensor([[0.6, 0.4], [0.4, 0.6], [0.6, 0.4]], dtype=F64)
    m = genppl.Model("regimes")
    m.latent("r", lambda: dist.Categorical(_in(torch.tensor([0.5, 0.5]))))
    with m.chain("t", 4):
        m.latent("z", lambda z_prev, r: dist.Categorical(_in(trans)[r, z_prev]),
                 init=lambda: dist.Categorical(_in(torch.full((3,), 1 / 3))))
        m.latent("w", lambda z: dist.Categorical(_in(side)[z]))
        m.observed("x", lambda w: dist.Categorical(_in(emit)[w]))

    def log_joint(v: States) -> torch.Tensor:
        r, z, w = v["r"], v["z"], v["w"]
        lp = math.log(0.5) - math.log(3) + trans[r.unsqueeze(-1), z[:, :-1], z[:, 1:]].log().sum(-1)
        return lp + side[z, w].log().sum(-1) + emit[w, X_REGIME].log().sum(-1)
    return m.to(dtype=dtype), log_joint


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_a_chain_reading_an_outside_latent_with_step_local_ties_decodes_a_maximiser(
        method: str, dtype: torch.dtype) -> None:
    model, log_joint = regime_chain(dtype)
    post = genppl.infer(model, {"x": X_REGIME}, engine="exact", map=True, chain_method=method)
    states = _all_states({"r": ((), 2), "z": ((4,), 3), "w": ((4,), 3)})
    _check_posterior_map(post, log_joint, states, dtype)
    assert post.log_evidence == pytest.approx(float(log_joint(states).logsumexp(0)),
                                              abs=_atol(dtype))


# --------------------------------------------------------------------- plates in a chain
TRANS2 = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=F64)
SWITCH = torch.tensor([[[0.7, 0.3], [0.2, 0.8]], [[0.3, 0.7], [0.8, 0.2]]], dtype=F64)
PICK = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]], dtype=F64)


def plate_in_chain(latent: bool, dtype: torch.dtype = F64) -> genppl.Model:
    """Three observations per step of a two-state chain reading a global latent; with
    ``latent``, each observation reads a latent of its own (tied between two states) in the
    plate inside the chain."""
    m = genppl.Model("plate_in_chain")
    m.latent("g", lambda: dist.Categorical(_in(torch.tensor([0.5, 0.5]))))
    with m.chain("t", 3):
        m.latent("z", lambda z_prev, g: dist.Categorical(_in(SWITCH)[g, z_prev]),
                 init=lambda: dist.Categorical(_in(torch.tensor([0.6, 0.4]))))
        with m.plate("k", 3):
            if latent:
                m.latent("w", lambda z: dist.Categorical(_in(PICK)[z]))
                m.observed("x", lambda w: dist.Normal(w.to(torch.get_default_dtype()), 1.0))
            else:
                m.observed("x", lambda z: dist.Normal(2.0 * z.to(torch.get_default_dtype()),
                                                      1.0))
    return m.to(dtype=dtype)


X_STEPS = torch.tensor([[0.1, 0.5, -0.3], [2.2, 1.7, 0.5], [0.3, 2.1, 1.0]], dtype=F64)


def _plate_in_chain_log_joint(latent: bool) -> LogJoint:
    def log_joint(v: States) -> torch.Tensor:
        g, z = v["g"], v["z"]
        lp = math.log(0.5) + torch.tensor([0.6, 0.4], dtype=F64)[z[:, 0]].log()
        lp = lp + SWITCH[g.unsqueeze(-1), z[:, :-1], z[:, 1:]].log().sum(-1)
        if latent:
            w = v["w"]
            lp = lp + PICK[z.unsqueeze(-1), w].log().sum((-1, -2))
            mean = w.to(F64)
        else:
            mean = 2.0 * z.to(F64).unsqueeze(-1)
        return lp + dist.Normal(mean, 1.0).log_prob(X_STEPS).sum((-1, -2))
    return log_joint


def _plate_in_chain_states(latent: bool) -> States:
    shapes = {"g": ((), 2), "z": ((3,), 2)}
    return _all_states({**shapes, "w": ((3, 3), 3)} if latent else shapes)


def _brute_marginals(logw: torch.Tensor, states: States, cards: dict[str, int]
                     ) -> dict[str, torch.Tensor]:
    p = (logw - logw.logsumexp(0)).exp()
    return {v: torch.einsum("s,s...k->...k", p, torch.nn.functional.one_hot(
        states[v], k).to(F64)) for v, k in cards.items()}


@pytest.mark.parametrize(("latent", "dtype"), [(False, F64), (True, F64), (True, F32)])
def test_a_plate_inside_a_chain_equals_brute_force_and_pyro(latent: bool,
                                                           dtype: torch.dtype) -> None:
    model = plate_in_chain(latent, dtype)
    x = X_STEPS.to(dtype)
    log_joint = _plate_in_chain_log_joint(latent)
    states = _plate_in_chain_states(latent)
    logw = log_joint(states)
    expected = _brute_marginals(logw, states, {"g": 2, "z": 2, "w": 3} if latent
                                else {"g": 2, "z": 2})
    enum = genppl.infer(model, {"x": x}, engine="enum")
    for method in ("sequential", "parallel"):
        post = genppl.infer(model, {"x": x}, engine="exact", map=True, chain_method=method)
        assert post.log_evidence == pytest.approx(float(logw.logsumexp(0)), abs=_atol(dtype))
        assert post.log_evidence == pytest.approx(enum.log_evidence, abs=_atol(dtype))
        assert set(post.marginals) == set(expected)
        for v, probs in post.marginals.items():
            torch.testing.assert_close(probs.to(F64), expected[v], rtol=0, atol=_atol(dtype))
            torch.testing.assert_close(probs, enum.marginals[v], rtol=0, atol=_atol(dtype))
        _check_posterior_map(post, log_joint, states, dtype)


def test_plates_nested_in_a_chain_in_a_plate_equal_pyro_and_brute_force_per_sequence(
        ) -> None:
    """Sequences (a plate) of chains whose steps hold a plate of tied latents, each with a
    plate of observations: log evidence and marginals as Pyro's, and each sequence's MAP
    (``evidence_per``) a maximiser of its own brute-force joint."""
    m = genppl.Model("nested")
    with m.plate("seq", 2), m.chain("t", 3):
        m.latent("z", lambda z_prev: dist.Categorical(_in(SWITCH[0])[z_prev]),
                 init=lambda: dist.Categorical(_in(torch.tensor([0.5, 0.5]))))
        with m.plate("k", 2):
            m.latent("w", lambda z: dist.Categorical(_in(PICK)[z]))
            with m.plate("j", 2):
                m.observed("x", lambda w, z: dist.Normal(
                    (w - z).to(torch.get_default_dtype()), 1.0))
    m = m.to(dtype=F64)
    x = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    enum = genppl.infer(m, {"x": x}, engine="enum")
    post = genppl.infer(m, {"x": x}, engine="exact", map=True, evidence_per="seq")
    assert post.log_evidence == pytest.approx(enum.log_evidence, abs=1e-10)
    for v in ("z", "w"):
        torch.testing.assert_close(post.marginals[v], enum.marginals[v], rtol=0, atol=1e-10)
    states = _all_states({"z": ((3,), 2), "w": ((3, 2), 3)})
    for n in range(2):
        def log_joint(v: States, n: int = n) -> torch.Tensor:
            z, w = v["z"], v["w"]
            lp = math.log(0.5) + SWITCH[0][z[:, :-1], z[:, 1:]].log().sum(-1)
            lp = lp + PICK[z.unsqueeze(-1), w].log().sum((-1, -2))
            mean = (w - z.unsqueeze(-1)).to(F64).unsqueeze(-1)  # (S, t, k, j)
            return lp + dist.Normal(mean, 1.0).log_prob(x[:, n]).sum((-1, -2, -3))
        chosen = {"z": post.info["map"]["z"][:, n], "w": post.info["map"]["w"][:, n]}
        _check_map(chosen, float(post.info["map_log_joint_per"][n]), log_joint, states)
        assert float(post.info["log_evidence_per"][n]) == pytest.approx(
            float(log_joint(states).logsumexp(0)), abs=1e-10)


def test_draws_through_a_plate_inside_a_chain_follow_the_exact_marginals() -> None:
    model = plate_in_chain(latent=True)
    draws = 1500
    post = genppl.infer(model, {"x": X_STEPS}, engine="exact", num_samples=draws, seed=5)
    assert post.samples["w"].shape == (1, draws, 3, 3)
    assert post.samples["z"].shape == (1, draws, 3)
    # every draw is possible: w is z or z + 1
    offset = post.samples["w"] - post.samples["z"].unsqueeze(-1)
    assert bool(((offset == 0) | (offset == 1)).all())
    for v, probs in post.marginals.items():
        _within_mcse(post.samples[v][0], probs)


def test_a_latent_carried_along_a_chain_inside_its_inner_plate_is_refused() -> None:
    m = genppl.Model("inner_state")
    with m.chain("t", 3), m.plate("k", 2):
        m.latent("z", lambda z_prev: dist.Categorical(_in(TRANS2)[z_prev]),
                 init=lambda: dist.Categorical(_in(torch.tensor([0.5, 0.5]))))
        m.observed("x", lambda z: dist.Normal(z.to(torch.get_default_dtype()), 1.0))
    with pytest.raises(ModelError, match=r"'z' is carried .* chain 't' inside plates \['k'\]"
                                         r".*m\.plate\(\.\.\.\), m\.chain"):
        genppl.infer(m.to(dtype=F64), {"x": torch.zeros(3, 2, dtype=F64)}, engine="exact")


# --------------------------------------------------------------------- the random stream
def _within_mcse(draws: torch.Tensor, probs: torch.Tensor, z: float = 5.0) -> None:
    """Each state's frequency among ``draws`` (leading axis: draws) within ``z`` Monte
    Carlo standard errors of its exact probability (``probs``: ``(*shape, K)``); the
    variance is floored at 1/n for states so rare that a handful of draws is no error, and
    an impossible state is never drawn."""
    n = draws.shape[0]
    freq = torch.nn.functional.one_hot(draws, probs.shape[-1]).to(F64).mean(0)
    p = probs.to(F64)
    mcse = ((p * (1 - p) + 1 / n) / n).sqrt()
    assert bool(((freq - p).abs() <= z * mcse).all()), (freq, p)
    assert bool((freq[p == 0] == 0).all())


def test_unseeded_draws_differ_and_follow_the_exact_marginals() -> None:
    model, x = ring_hmm(), {"x": torch.tensor(RING_X)}
    first = genppl.infer(model, x, engine="exact", num_samples=1000)
    state = torch.random.get_rng_state()
    second = genppl.infer(model, x, engine="exact", num_samples=1000)
    assert not torch.equal(first.samples["z"], second.samples["z"])
    assert not torch.equal(torch.random.get_rng_state(), state)  # the stream advanced
    for post in (first, second):
        _within_mcse(post.samples["z"][0], post.marginals["z"])


def test_seeded_draws_repeat_and_leave_the_global_stream_alone() -> None:
    model, x = ring_hmm(), {"x": torch.tensor(RING_X)}
    assert model.graph is not None  # built once, by tracing the prior program (random)
    state = torch.random.get_rng_state()
    one = genppl.infer(model, x, engine="exact", num_samples=200, seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = genppl.infer(model, x, engine="exact", num_samples=200, seed=11)
    other = genppl.infer(model, x, engine="exact", num_samples=200, seed=12)
    assert torch.equal(one.samples["z"], again.samples["z"])
    assert not torch.equal(one.samples["z"], other.samples["z"])

"""``genppl.hmm`` against hmmlearn, the reference implementation of Rabiner's algorithms.

Random HMMs (the constructors' own seeded tables), batches of sequences of *different*
lengths: per-sequence and total log-likelihood (hmmlearn ``score``), posterior state marginals
(``predict_proba``), Viterbi paths and their log-probabilities (``decode``), and Baum-Welch
trajectories (``fit`` with ``init_params=""``) for categorical and univariate Gaussian
emissions. hmmlearn's ``startprob_`` is P(first state), which is the constructors' ``start``
(Pyro's ``DiscreteHMM`` would apply it one transition earlier). Its Dirichlet priors
(``startprob_prior = transmat_prior = 1``) add no pseudo-counts; its Gaussian ``covars_prior``
(default 1e-2) does, so it is set to 0; ``min_covar`` only enters hmmlearn's own
initialisation, which ``init_params=""`` skips.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from genppl import ModelError
from genppl.hmm import HMM, categorical_hmm, pack_sequences, unpack_sequences

hmmlearn = pytest.importorskip("hmmlearn.hmm")

pytestmark = pytest.mark.unit
F64 = torch.float64
LENGTHS = (11, 4, 8, 1, 6)


def _categorical(states: int, symbols: int, seed: int, dtype: torch.dtype = F64) -> HMM:
    h = HMM.categorical(states, symbols, seed=seed)
    h.model.to(dtype=dtype)
    return h


def _gaussian(states: int, seed: int) -> HMM:
    h = HMM.gaussian(states, seed=seed, scales=[0.5 + 0.25 * k for k in range(states)])
    h.model.to(dtype=F64)
    return h


def _reference(h: HMM) -> object:
    """The same HMM in hmmlearn (float64 numpy copies of the tables)."""
    t = {k: v.detach().cpu().double().numpy() for k, v in h.tables().items()}
    if h.symbols is not None:
        ref = hmmlearn.CategoricalHMM(n_components=h.states, n_features=h.symbols,
                                      init_params="", params="ste")
        ref.emissionprob_ = t["emit"]
    else:
        ref = hmmlearn.GaussianHMM(n_components=h.states, covariance_type="diag",
                                   init_params="", params="stmc", covars_prior=0.0)
        ref.means_ = t["means"][:, None]
        ref.covars_ = (t["scales"] ** 2)[:, None]
    ref.startprob_, ref.transmat_ = t["start"], t["trans"]
    return ref


def _sequences(h: HMM, seed: int, lengths: tuple[int, ...] = LENGTHS) -> list[torch.Tensor]:
    """Sequences drawn from ``h`` itself (so posteriors are informative), cut to lengths."""
    x, _ = h.sample(len(lengths), max(lengths), seed=seed)
    return [x[:n, i] for i, n in enumerate(lengths)]


def _flat(seqs: list[torch.Tensor]) -> np.ndarray:
    """hmmlearn's layout: sequences concatenated, one row per step."""
    return torch.cat(seqs).cpu().numpy().reshape(-1, 1)


MODELS = [("categorical", k, seed) for k, seed in ((2, 0), (3, 1), (5, 2))] + \
         [("gaussian", k, seed) for k, seed in ((2, 3), (3, 4))]


def _build(kind: str, k: int, seed: int) -> HMM:
    return _categorical(k, 4, seed) if kind == "categorical" else _gaussian(k, seed)


@pytest.mark.parametrize(("kind", "k", "seed"), MODELS)
def test_three_problems_equal_hmmlearn(kind: str, k: int, seed: int) -> None:
    h = _build(kind, k, seed)
    ref = _reference(h)
    seqs = _sequences(h, seed)
    x, lengths = pack_sequences(seqs)
    flat, n = _flat(seqs), lengths.numpy()
    # problem 1: per-sequence and total log-likelihood
    per_seq = h.log_likelihood(x, lengths)
    expected = [ref.score(_flat([s])) for s in seqs]
    np.testing.assert_allclose(per_seq.numpy(), expected, rtol=0, atol=1e-8)
    assert h.score(x, lengths) == pytest.approx(ref.score(flat, lengths=n), abs=1e-8)
    # problem 2: posterior marginals, in hmmlearn's concatenated layout
    post = h.posterior(x, lengths)
    assert post.shape == (max(LENGTHS), len(LENGTHS), k)
    ours = torch.cat(unpack_sequences(post, lengths)).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(flat, lengths=n), rtol=0, atol=1e-8)
    assert float(post.sum()) == pytest.approx(sum(LENGTHS))  # padded rows are zero
    # Viterbi: the path and log p(x, path) of every sequence
    best = h.viterbi(x, lengths)
    for i, s in enumerate(seqs):
        log_prob, path = ref.decode(_flat([s]), algorithm="viterbi")
        assert best.paths[: len(s), i].tolist() == path.tolist()
        assert float(best.log_joint[i]) == pytest.approx(log_prob, abs=1e-8)
    assert bool((best.paths[lengths.unsqueeze(0) <= torch.arange(len(x))[:, None]] == -1).all())


def _baum_welch(h: HMM, seqs: list[torch.Tensor], steps: int) -> None:
    """genppl's and hmmlearn's trajectories and fitted tables after ``steps`` iterations."""
    ref = _reference(h)
    ref.n_iter, ref.tol = steps, -np.inf
    x, lengths = pack_sequences(seqs)
    run = h.fit(x, lengths, steps=steps, tol=0.0)
    ref.fit(_flat(seqs), lengths=lengths.numpy())
    np.testing.assert_allclose(run.log_likelihood, list(ref.monitor_.history), rtol=0,
                               atol=1e-6)
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(run.log_likelihood))
    fitted = {k: v.numpy() for k, v in h.tables().items()}
    np.testing.assert_allclose(fitted["start"], ref.startprob_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fitted["trans"], ref.transmat_, rtol=0, atol=1e-6)
    if h.symbols is not None:
        np.testing.assert_allclose(fitted["emit"], ref.emissionprob_, rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(fitted["means"], ref.means_[:, 0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(fitted["scales"] ** 2, ref.covars_[:, 0, 0], rtol=0,
                                   atol=1e-6)


@pytest.mark.parametrize(("kind", "k", "seed"), [("categorical", 3, 5), ("gaussian", 2, 6)])
def test_baum_welch_equal_lengths_equals_hmmlearn(kind: str, k: int, seed: int) -> None:
    truth = _build(kind, k, seed + 100)  # data from other tables, so EM has work to do
    h = _build(kind, k, seed)
    _baum_welch(h, _sequences(truth, seed, lengths=(30,) * 4), steps=5)


@pytest.mark.parametrize(("kind", "k", "seed"), [("categorical", 3, 7), ("gaussian", 2, 8)])
def test_baum_welch_different_lengths_equals_hmmlearn(kind: str, k: int, seed: int) -> None:
    truth = _build(kind, k, seed + 100)
    h = _build(kind, k, seed)
    _baum_welch(h, _sequences(truth, seed, lengths=(40, 13, 27, 5)), steps=5)


def test_baum_welch_never_decreases_and_stops_at_tol() -> None:
    truth, h = _categorical(3, 5, seed=10), _categorical(3, 5, seed=11)
    x, _ = truth.sample(8, 60, seed=0)
    run = h.fit(x, steps=60, tol=1e-7)
    ll = run.log_likelihood
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(ll))
    assert ll[-1] > ll[0] + 1.0
    assert run.converged == (len(ll) < 60)
    assert h.score(x) >= ll[-1] - 1e-9  # the last M-step did not make things worse


def test_padded_batch_answers_as_each_sequence_alone() -> None:
    h = _categorical(3, 4, seed=12)
    seqs = _sequences(h, seed=3)
    x, lengths = pack_sequences(seqs)
    x[lengths.unsqueeze(0) <= torch.arange(len(x))[:, None]] = 3  # padding content is ignored
    post, best = h.posterior(x, lengths), h.viterbi(x, lengths)
    total = 0.0
    for i, s in enumerate(seqs):
        alone = s.reshape(-1, 1)
        torch.testing.assert_close(post[: len(s), i], h.posterior(alone)[:, 0], rtol=0,
                                   atol=1e-12)
        single = h.viterbi(alone)
        assert torch.equal(best.paths[: len(s), i], single.paths[:, 0])
        assert float(best.log_joint[i]) == pytest.approx(float(single.log_joint[0]),
                                                         abs=1e-12)
        total += h.score(alone)
    assert h.score(x, lengths) == pytest.approx(total, abs=1e-10)
    # a list of sequences is packed the same way
    torch.testing.assert_close(h.log_likelihood(seqs), h.log_likelihood(x, lengths))


def test_sampling_recovers_the_tables_within_binomial_error() -> None:
    h = _categorical(2, 3, seed=13)
    x, z = h.sample(400, 40, seed=1)
    assert x.shape == z.shape == (40, 400)
    t = h.tables()

    def check(counts: torch.Tensor, probs: torch.Tensor) -> None:
        """Each row's frequencies within 4.5 binomial standard errors of its probabilities."""
        n = counts.sum(-1, keepdim=True)
        se = (probs * (1 - probs) / n).sqrt()
        assert bool(((counts / n - probs).abs() < 4.5 * se).all()), (counts / n, probs)

    check(torch.bincount(z[0], minlength=2).to(F64), t["start"])
    pairs = torch.bincount((2 * z[:-1] + z[1:]).reshape(-1), minlength=4).to(F64)
    check(pairs.reshape(2, 2), t["trans"])
    emitted = torch.bincount((3 * z + x).reshape(-1), minlength=6).to(F64)
    check(emitted.reshape(2, 3), t["emit"])
    # same seed, same draws; another seed, other draws
    assert torch.equal(h.sample(400, 40, seed=1)[0], x)
    assert not torch.equal(h.sample(400, 40, seed=2)[0], x)


def test_float32_follows_the_model_and_agrees_with_float64() -> None:
    h64, h32 = _categorical(3, 4, seed=14), _categorical(3, 4, seed=14, dtype=torch.float32)
    seqs = _sequences(h64, seed=4)
    post = h32.posterior(seqs)
    assert post.dtype == torch.float32 and h32.log_likelihood(seqs).dtype == torch.float32
    torch.testing.assert_close(post.double(), h64.posterior(seqs), rtol=0, atol=1e-5)
    assert h32.score(seqs) == pytest.approx(h64.score(seqs), rel=1e-5)


def test_constructors_are_reproducible_and_fixed_tables_are_not_params() -> None:
    a, b, c = (HMM.categorical(3, 4, seed=s).tables() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["trans"], c["trans"])
    for table in a.values():
        torch.testing.assert_close(table.sum(-1), torch.ones(table.shape[:-1]))
    fixed = categorical_hmm(2, 2, trans=[[0.9, 0.1], [0.2, 0.8]], learnable=False)
    assert fixed.names("param") == []
    assert fixed["trans"].kind == "deterministic"
    with pytest.raises(ModelError, match="learnable=True"):
        HMM(fixed, states=2, symbols=2).fit(torch.zeros(3, 1, dtype=torch.long))


@pytest.mark.parametrize(("call", "match"), [
    (lambda h: h.score(torch.tensor([[0], [4]])), "symbols 0..4 .*symbols 0..3"),
    (lambda h: h.score(torch.tensor([[-1], [2]])), "symbols -1..2"),
    (lambda h: h.score(torch.zeros(3, 2, dtype=torch.long), [2, 4]), "lengths must lie in 1..3"),
    (lambda h: h.score(torch.zeros(3, 2, dtype=torch.long), [2]), "lengths has shape"),
    (lambda h: h.score(torch.zeros(3, dtype=torch.long)), r"x has shape \(3,\); pass \(T, N\)"),
    (lambda h: h.score(torch.zeros(3, 1)), "x has dtype torch.float32"),
    (lambda h: h.sample(0, 3), "num_sequences=0"),
])
def test_bad_input_is_a_model_error_naming_the_argument(call: object, match: str) -> None:
    h = _categorical(2, 4, seed=0)
    with pytest.raises(ModelError, match=match):
        call(h)  # type: ignore[operator]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"trans": [[0.5, 0.6], [0.5, 0.5]]}, "trans= must have non-negative rows summing to 1"),
    ({"emit": [[1.0, 0.0]]}, r"emit= has shape \(1, 2\); this HMM needs \(2, 3\)"),
    ({"start": [0.5, math.nan]}, "start= has non-finite"),
])
def test_bad_tables_are_model_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        categorical_hmm(2, 3, **kwargs)  # type: ignore[arg-type]


def test_pack_and_unpack_sequences_round_trip() -> None:
    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4]), torch.tensor([5, 6])]
    x, lengths = pack_sequences(seqs, pad=-7)
    assert x.tolist() == [[1, 4, 5], [2, -7, 6], [3, -7, -7]]
    assert lengths.tolist() == [3, 1, 2]
    assert [s.tolist() for s in unpack_sequences(x, lengths)] == [s.tolist() for s in seqs]
    with pytest.raises(ModelError, match="sequence 1 has shape"):
        pack_sequences([torch.tensor([1]), torch.tensor([])])

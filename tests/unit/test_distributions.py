"""``genppl.distributions``: ``WordCounts``'s probs and logits forms are one distribution;
``exact_log_probs`` gives -inf to a probability of 0 (and log p to one below eps), against
closed forms, in float32 and float64."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

from genppl.distributions import WordCounts, exact_log_probs

pytestmark = pytest.mark.unit

F64 = torch.float64


def test_probs_and_logits_give_one_density_and_expand_alike() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, 5, generator=g, dtype=F64), -1)
    total = torch.tensor([4.0, 0.0, 7.0], dtype=F64)
    counts = torch.tensor([[1.0, 0, 2, 0, 1], [0, 0, 0, 0, 0], [3, 1, 0, 2, 1]], dtype=F64)
    a, b = WordCounts(total, probs=probs), WordCounts(total, probs.log() + 1.0)  # unnormalised
    torch.testing.assert_close(a.log_prob(counts), b.log_prob(counts), rtol=0, atol=1e-12)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-12)
    assert a.probs is not None and torch.equal(a.probs, probs)
    wide = a.expand(torch.Size([2, 3]))
    assert wide.batch_shape == (2, 3) and torch.equal(wide.probs[1], probs)
    torch.testing.assert_close(wide.log_prob(counts), a.log_prob(counts).expand(2, 3))


def test_exactly_one_parameterisation_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        WordCounts(torch.ones(1), torch.zeros(1, 2), probs=torch.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="exactly one"):
        WordCounts(torch.ones(1))


# ----------------------------------------------------------------------- exact_log_probs
DTYPES = [torch.float32, F64]


def _closed_form(kind: str, p: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """log-probabilities in float64 by the textbook formulas, with 0 log 0 = 0."""
    p, v = p.double(), value.double()
    log_p, log_q = p.log(), (-p).log1p()

    def times(k: torch.Tensor, log: torch.Tensor) -> torch.Tensor:
        return torch.where(k == 0, torch.zeros_like(log), k * log)

    if kind == "bernoulli":
        return times(v, log_p) + times(1 - v, log_q)
    if kind == "binomial":  # total_count 3
        coef = math.log(6) - torch.lgamma(v + 1) - torch.lgamma(4 - v)
        return coef + times(v, log_p) + times(3 - v, log_q)
    return times(v, log_q) + log_p  # geometric: failures before the first success


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "make", "values"), [
    ("bernoulli", lambda p: dist.Bernoulli(p), [0.0, 1.0]),
    ("binomial", lambda p: dist.Binomial(3, p), [0.0, 1.0, 3.0]),
    ("geometric", lambda p: dist.Geometric(p), [0.0, 2.0]),
])
def test_exact_log_probs_of_binary_kinds_match_the_closed_form(
        kind: str, make: object, values: list[float], dtype: torch.dtype) -> None:
    """At p = 0, p = 1 and p below eps, where torch's clamped logits give log eps (or NaN
    at logits of +-inf): -inf for the impossible, the closed form elsewhere."""
    p = torch.tensor([1e-20, 0.3, 1.0] + ([0.0] if kind != "geometric" else []), dtype=dtype)
    original = make(p)  # type: ignore[operator]
    exact = exact_log_probs(original)
    assert type(exact).__name__ == type(original).__name__ and isinstance(exact, type(original))
    assert exact.probs is original.probs and type(original).__module__.startswith("pyro")
    torch_right = True  # whether torch's own log_prob gets the impossible ones
    for v in values:
        value = torch.full_like(p, v)
        got = exact.log_prob(value)
        assert got.dtype == dtype
        expected = _closed_form(kind, p, value)
        assert torch.equal(got.isinf(), expected.isinf()), (v, got, expected)
        finite = expected.isfinite()
        torch.testing.assert_close(got[finite].double(), expected[finite],
                                   rtol=4 * torch.finfo(dtype).eps, atol=0)
        torch_right &= torch.equal(original.log_prob(value).isneginf(), expected.isinf())
    assert not torch_right  # log eps (or NaN) where the conversion gives -inf
    # kept through expand, and the support is drawn from the same probs
    wide = exact.expand(torch.Size([2, len(p)]))
    assert type(wide) is type(exact)
    torch.testing.assert_close(wide.log_prob(torch.zeros(2, len(p), dtype=dtype))[1],
                               exact.log_prob(torch.zeros(len(p), dtype=dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_log_probs_of_categorical_kinds_keep_class_and_probs(dtype: torch.dtype) -> None:
    """Categorical, OneHotCategorical and Multinomial (through the Categorical inside) keep
    their class and their ``probs`` tensor; their logits become exact, under wrappers too."""
    p = torch.tensor([[0.5, 0.5, 0.0], [1e-20, 0.25, 0.75]], dtype=dtype)
    log_p = torch.tensor([[math.log(0.5), math.log(0.5), -math.inf],
                          [math.log(1e-20), math.log(0.25), math.log(0.75)]], dtype=F64)
    cat = dist.Categorical(p)
    exact = exact_log_probs(cat)
    assert type(exact) is type(cat) and exact.probs is cat.probs
    states = torch.arange(3).unsqueeze(-1)
    torch.testing.assert_close(exact.log_prob(states).T.double(), log_p, rtol=1e-6, atol=0)
    assert bool((cat.log_prob(states) > -40).all())  # torch's: log eps, not -inf
    onehot = exact_log_probs(dist.OneHotCategorical(p))
    torch.testing.assert_close(onehot.log_prob(torch.eye(3, dtype=dtype).unsqueeze(1)).T
                               .double(), log_p, rtol=1e-6, atol=0)
    counts = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]], dtype=dtype)
    multi = exact_log_probs(dist.Multinomial(3, p)).log_prob(counts)
    assert float(multi[0]) == -math.inf
    expected = math.log(3) + 2 * math.log(0.25) + math.log(0.75)
    assert float(multi[1]) == pytest.approx(expected, rel=1e-6)
    wrapped = dist.Categorical(p).expand([4, 2]).mask(torch.tensor([True, False])).to_event(1)
    exact = exact_log_probs(wrapped)
    value = torch.full((4, 2), 2)
    assert bool((exact.log_prob(value) == -math.inf).all())  # row 0 impossible, row 1 masked
    assert bool(wrapped.log_prob(value).isfinite().all())
    assert type(exact) is type(wrapped) and type(exact.base_dist) is type(wrapped.base_dist)


def test_exact_log_probs_leaves_logits_subclasses_and_the_original_alone() -> None:
    logits = torch.tensor([0.0, -800.0], dtype=F64)
    given = dist.Categorical(logits=logits)
    assert exact_log_probs(given) is given
    assert float(exact_log_probs(dist.Bernoulli(logits=torch.tensor(-800.0))).log_prob(
        torch.tensor(1.0))) == pytest.approx(-800.0)

    class Mine(dist.Categorical):
        pass

    mine = Mine(torch.tensor([1.0, 0.0]))
    assert exact_log_probs(mine) is mine
    original = dist.Categorical(torch.tensor([1.0, 0.0]))
    exact_log_probs(original)
    assert "logits" not in vars(original)  # a new object; the factory's is unchanged
    normal = dist.Normal(0.0, 1.0)
    assert exact_log_probs(normal) is normal


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_at_a_zero_are_finite(dtype: torch.dtype) -> None:
    """Summing over every state (as enumeration does), the impossible one has weight 0; a
    log whose gradient is 1/0 there would give 0 * inf = NaN."""
    p = torch.tensor([0.7, 0.3, 0.0], dtype=dtype, requires_grad=True)
    exact_log_probs(dist.Categorical(p)).log_prob(torch.arange(3)).logsumexp(0).backward()
    assert p.grad is not None and bool(p.grad.isfinite().all())
    q = torch.tensor([0.0, 1.0, 0.4], dtype=dtype, requires_grad=True)
    b = exact_log_probs(dist.Bernoulli(q))
    torch.stack([b.log_prob(torch.zeros(3, dtype=dtype)),
                 b.log_prob(torch.ones(3, dtype=dtype))]).logsumexp(0).sum().backward()
    assert q.grad is not None and bool(q.grad.isfinite().all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_word_counts_with_a_zero_probability(dtype: torch.dtype) -> None:
    """A word of probability 0: -inf where it is counted, the multinomial elsewhere (not
    0 * -inf = NaN), and no NaN gradient."""
    probs = torch.tensor([0.5, 0.5, 0.0], dtype=dtype, requires_grad=True)
    d = WordCounts(torch.tensor([3.0, 3.0], dtype=dtype), probs=probs)
    lp = d.log_prob(torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=dtype))
    assert float(lp[0].detach()) == pytest.approx(math.log(3) + 3 * math.log(0.5), rel=1e-6)
    assert float(lp[1].detach()) == -math.inf
    lp[0].backward()
    assert probs.grad is not None and bool(probs.grad.isfinite().all())
    assert bool((d.sample(torch.Size([50]))[..., 2] == 0).all())

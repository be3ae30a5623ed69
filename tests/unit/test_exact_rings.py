"""Each semiring of ``genppl.exact.rings`` against its definition and the brute-force
references of ``genppl.exact.naive``: its reduction, its matrix product (values and backward
pass), and a whole elimination in it (log Z, the MAP value, exact posterior draws)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from genppl.exact import Factor, naive_log_partition, naive_map
from genppl.exact.contract import eliminate
from genppl.exact.naive import naive_joint
from genppl.exact.rings import MAX, SAMPLE, SUM, Ring
from genppl.exact.scan import choose_method

pytestmark = pytest.mark.unit
F64 = torch.float64
NEG = -float("inf")

#: Each ring's sum, as its definition: what its reduction must compute.
DEFINITIONS: dict[Ring, Callable[[torch.Tensor, int], torch.Tensor]] = {
    SUM: torch.logsumexp, MAX: lambda x, d: x.amax(d), SAMPLE: torch.logsumexp}


def _table(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random log weights with some impossible (-inf) entries."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=gen, dtype=F64)
    return t.masked_fill(torch.rand(*shape, generator=gen, dtype=F64) < 0.2, NEG)


@pytest.mark.parametrize("ring", [SUM, MAX, SAMPLE], ids=lambda r: r.name)
@pytest.mark.parametrize("differentiable", [True, False])
def test_reduction_is_the_rings_sum(ring: Ring, differentiable: bool) -> None:
    x = _table(3, 4, 5)
    reduce = ring.reducer(differentiable)
    for dim in (0, 1, 2):
        torch.testing.assert_close(reduce(x, dim), DEFINITIONS[ring](x, dim))
    both = reduce(x.reshape(3, 4, 5), (0, 1))  # several axes reduced as one
    torch.testing.assert_close(both, DEFINITIONS[ring](x.reshape(12, 5), 0))


@pytest.mark.parametrize("ring", [SUM, MAX, SAMPLE], ids=lambda r: r.name)
def test_matrix_product_is_the_rings(ring: Ring) -> None:
    """``reduce_j x_ij + y_jk``, impossible rows included; the sum's gradient is the plain
    product's (d/dx of the sum of exp(x) @ exp(y) is exp(x) times y's row sums of exp)."""
    x, y = _table(2, 3, 4, seed=1), _table(4, 5, seed=2)
    x[0, 0] = NEG
    torch.testing.assert_close(ring.matmul(x, y),
                               DEFINITIONS[ring](x.unsqueeze(-1) + y.unsqueeze(-3), -2))
    if ring is SUM:
        xs = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(SUM.matmul(xs, y).exp().sum(), xs)
        torch.testing.assert_close(g, x.exp() * y.exp().sum(-1))


@pytest.mark.parametrize("ring", [SUM, MAX, SAMPLE], ids=lambda r: r.name)
def test_backward_pass_of_the_reduction_answers_the_rings_query(ring: Ring) -> None:
    """The gradient of a reduction: each term's share (sum; 0, not NaN, on an impossible
    slice); one-hot at a best term (max); one-hot at a possible term (sample)."""
    terms = _table(2, 3, 4, 5, seed=4)
    terms[0, 0, :, 1] = NEG  # a wholly impossible slice
    leaf = terms.clone().requires_grad_()
    out = ring.reducer(True)(leaf, -2)
    finite = torch.isfinite(out)
    (g,) = torch.autograd.grad(out.masked_fill(~finite, 0).sum(), leaf)
    assert torch.isfinite(g).all()
    if ring is SUM:
        torch.testing.assert_close(g, torch.softmax(terms, -2).nan_to_num())
        return
    assert set(g.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(g.sum(-2)[finite], torch.ones_like(out)[finite])
    chosen = terms.gather(-2, g.argmax(-2).unsqueeze(-2)).squeeze(-2)
    assert torch.isfinite(chosen[finite]).all()  # never an impossible term
    if ring is MAX:
        torch.testing.assert_close(chosen[finite], out.detach()[finite])


def _network() -> list[Factor]:
    """Three variables (2, 3, 2 states) in a cycle, with a forbidden pair."""
    gen = torch.Generator().manual_seed(3)
    ab = torch.randn(2, 3, generator=gen, dtype=F64)
    ab[1, 2] = NEG
    return [Factor(("a", "b"), ab), Factor(("b", "c"), torch.randn(3, 2, generator=gen,
                                                                 dtype=F64)),
            Factor(("c", "a"), torch.randn(2, 2, generator=gen, dtype=F64)),
            Factor(("a",), torch.randn(2, generator=gen, dtype=F64))]


def _eliminated(factors: list[Factor], ring: Ring
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    cards = {v: k for f in factors for v, k in f.cardinalities().items()}
    leaves = {v: torch.zeros(k, dtype=F64, requires_grad=True) for v, k in cards.items()}
    with torch.enable_grad():
        left = eliminate([*factors, *(Factor((v,), t) for v, t in leaves.items())], cards,
                         ring=ring)
    value = sum(f.log_table for f in left)
    assert isinstance(value, torch.Tensor)
    return value, leaves


def test_sum_ring_eliminates_to_log_z() -> None:
    factors = _network()
    value, _ = _eliminated(factors, SUM)
    torch.testing.assert_close(value.detach(), naive_log_partition(factors))


def test_max_ring_eliminates_to_the_map_value_and_backtracks_to_its_assignment() -> None:
    factors = _network()
    value, leaves = _eliminated(factors, MAX)
    best, assignment = naive_map(factors)
    torch.testing.assert_close(value.detach(), best)
    grads = torch.autograd.grad(value, list(leaves.values()))
    for (v, _), g in zip(leaves.items(), grads, strict=True):
        assert int(g.argmax()) == int(assignment[v])


def test_sample_ring_draws_the_exact_joint_posterior() -> None:
    """Forward: log Z. Each backward pass: one joint state, drawn with its posterior
    probability (4,000 draws: each frequency within 4 standard errors of the brute-force
    joint's)."""
    factors = _network()
    value, leaves = _eliminated(factors, SAMPLE)
    torch.testing.assert_close(value.detach(), naive_log_partition(factors))
    names, states, logw = naive_joint(factors)
    expected = torch.softmax(logw, -1)
    counts = dict.fromkeys(states, 0)
    draws = 4000
    torch.manual_seed(0)
    for i in range(draws):
        grads = torch.autograd.grad(value, list(leaves.values()), retain_graph=i < draws - 1)
        drawn = {v: int(g.argmax()) for v, g in zip(leaves, grads, strict=True)}
        assert all(int(g.sum()) == 1 for g in grads)  # one state per variable
        counts[tuple(drawn[v] for v in names)] += 1
    for state, p in zip(states, expected.tolist(), strict=True):
        se = max((p * (1 - p) / draws) ** 0.5, 1e-12)
        assert abs(counts[state] / draws - p) <= 4 * se + 1e-12, (state, counts[state], p)
    forbidden = [s for s in states if s[names.index("a")] == 1 and s[names.index("b")] == 2]
    assert all(counts[s] == 0 for s in forbidden)


def test_rings_that_materialise_products_keep_long_chains_sequential() -> None:
    """The scan's cost model reads ``materialises_products``: pairing K x K matrices costs
    K^2 entries per pair in the sum's one matmul, K^3 in max and sample. A long chain of
    few states, whose pairs fit the budget at K^2 but not at K^3, runs in parallel in the
    sum only; with room for K^3, every ring runs it in parallel."""
    budget = 100_000  # 5,000 pairs of 4 x 4: 80,000 entries at K^2, 320,000 at K^3
    assert choose_method(10_000, 4, 1, ring=SUM, budget_entries=budget) == "parallel"
    for ring in (MAX, SAMPLE):
        assert choose_method(10_000, 4, 1, ring=ring, budget_entries=budget) == "sequential"
        assert choose_method(10_000, 4, 1, ring=ring) == "parallel"

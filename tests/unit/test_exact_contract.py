"""The elimination engine against brute-force enumeration of the joint, on random factor
graphs: log Z, every single-variable and family marginal, and the MAP assignment (the gradient
of the max-product, as the engine computes it), batched and unbatched, under every elimination
heuristic."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genppl import ModelError
from genppl.exact import (
    Factor,
    log_partition,
    marginals,
    naive_log_partition,
    naive_map,
    naive_marginals,
    plan,
)
from genppl.exact.contract import eliminate, evidence_factor
from genppl.exact.rings import MAX

pytestmark = pytest.mark.unit
F64 = torch.float64


@st.composite
def factor_graphs(draw: st.DrawFn, batch: tuple[int, ...] = ()) -> list[Factor]:
    """Up to 6 variables with 2-3 states and up to 6 factors over 1-3 of them."""
    n = draw(st.integers(1, 6))
    names = [f"v{i}" for i in range(n)]
    cards = {v: draw(st.integers(2, 3)) for v in names}
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    factors = [Factor((v,), torch.randn(*batch, cards[v], generator=gen, dtype=F64))
               for v in names]  # every variable in some factor
    for _ in range(draw(st.integers(0, 6))):
        scope = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        shape = (*batch, *(cards[v] for v in scope))
        factors.append(Factor(tuple(scope), 2 * torch.randn(*shape, generator=gen, dtype=F64)))
    return factors


def _map(factors: list[Factor], heuristic: str | None = None
         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Max log joint and argmax: eliminate everything by max-product, then differentiate
    with respect to a zero table over each variable (the indicator of its MAP state)."""
    batch = torch.broadcast_shapes(*(f.batch_shape for f in factors))
    cards = {v: k for f in factors for v, k in f.cardinalities().items()}
    leaves = {v: torch.zeros(*batch, k, dtype=F64, requires_grad=True) for v, k in cards.items()}
    with torch.enable_grad():
        left = eliminate([*factors, *(Factor((v,), t) for v, t in leaves.items())], cards,
                         ring=MAX, heuristic=heuristic)
        value = sum(f.log_table for f in left)  # one per connected component
        grads = torch.autograd.grad(value.sum(), list(leaves.values()))
    return value.detach(), {v: g.argmax(-1) for v, g in zip(leaves, grads, strict=True)}


@settings(max_examples=60, deadline=None)
@given(factor_graphs(), st.sampled_from(["min_fill", "min_weight", "min_degree"]))
def test_every_query_equals_brute_force(factors: list[Factor], heuristic: str) -> None:
    order = plan(factors, heuristic=heuristic).order
    log_z, single, family = marginals(factors, order=order)
    torch.testing.assert_close(log_z, naive_log_partition(factors), rtol=0, atol=1e-10)
    expected = naive_marginals(factors)
    assert set(single) == set(expected)
    for v in expected:
        torch.testing.assert_close(single[v], expected[v], rtol=0, atol=1e-10)
    # Family marginals: sum the brute-force joint onto each factor's scope.
    for f, fam in zip(factors, family, strict=True):
        torch.testing.assert_close(fam, _naive_family(factors, f.vars), rtol=0, atol=1e-10)
    value, assignment = _map(factors, heuristic)
    best_value, best = naive_map(factors)
    torch.testing.assert_close(value, best_value, rtol=0, atol=1e-10)
    assert {v: int(s) for v, s in assignment.items()} == {v: int(s) for v, s in best.items()}


@st.composite
def conditional_networks(draw: st.DrawFn) -> list[Factor]:
    """Bayesian networks as factors marked with their ``child`` (up to 7 variables), with
    indicator evidence on some and an unmarked factor on others: unobserved leaves and
    whole unobserved sub-networks are summed to exactly 1 and skipped."""
    n = draw(st.integers(1, 7))
    cards = [draw(st.integers(2, 3)) for _ in range(n)]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    factors = []
    for i in range(n):
        parents = [j for j in range(i) if draw(st.booleans())]
        w = 0.05 + torch.rand(*(cards[j] for j in parents), cards[i], generator=gen,
                              dtype=F64)
        factors.append(Factor((*(f"v{j}" for j in parents), f"v{i}"),
                              (w / w.sum(-1, keepdim=True)).log(), child=f"v{i}"))
    for i in draw(st.lists(st.integers(0, n - 1), max_size=2, unique=True)):
        factors.append(evidence_factor(f"v{i}", draw(st.integers(0, cards[i] - 1)), cards[i],
                                       like=factors[0].log_table))
    for i in draw(st.lists(st.integers(0, n - 1), max_size=1)):
        factors.append(Factor((f"v{i}",), torch.randn(cards[i], generator=gen, dtype=F64)))
    return factors


@settings(max_examples=60, deadline=None)
@given(conditional_networks(), st.booleans())
def test_networks_with_unobserved_leaves_equal_brute_force(factors: list[Factor],
                                                           leaves_first: bool) -> None:
    """Leaves first (reverse topological order) makes every unobserved sub-network a
    barren step; the planned order mixes them with ordinary ones."""
    names = sorted({v for f in factors for v in f.vars}, key=lambda v: int(v[1:]))
    order = names[::-1] if leaves_first else None
    log_z, single, family = marginals(factors, order=order)
    torch.testing.assert_close(log_z, naive_log_partition(factors), rtol=0, atol=1e-10)
    for v, probs in naive_marginals(factors).items():
        torch.testing.assert_close(single[v], probs, rtol=0, atol=1e-10)
    for f, fam in zip(factors, family, strict=True):
        torch.testing.assert_close(fam, _naive_family(factors, f.vars), rtol=0, atol=1e-10)


def test_a_factor_names_its_child_among_its_variables() -> None:
    with pytest.raises(ModelError, match=r"'c'.*not one of its variables"):
        Factor(("a", "b"), torch.zeros(2, 2), child="c")


@settings(max_examples=25, deadline=None)
@given(factor_graphs(batch=(4,)))
def test_batched_cases_equal_one_case_at_a_time(factors: list[Factor]) -> None:
    log_z, single, _ = marginals(factors)
    value, assignment = _map(factors)
    for b in range(4):
        case = [Factor(f.vars, f.log_table[b]) for f in factors]
        torch.testing.assert_close(log_z[b], naive_log_partition(case), rtol=0, atol=1e-10)
        for v, probs in naive_marginals(case).items():
            torch.testing.assert_close(single[v][b], probs, rtol=0, atol=1e-10)
        best_value, best = naive_map(case)
        torch.testing.assert_close(value[b], best_value, rtol=0, atol=1e-10)
        assert all(int(assignment[v][b]) == int(best[v]) for v in best)


def test_batched_evidence_indicators_condition_each_case() -> None:
    """A chain a - b - c with c observed in three different states at once."""
    gen = torch.Generator().manual_seed(1)
    ab = Factor(("a", "b"), torch.randn(2, 3, generator=gen, dtype=F64))
    bc = Factor(("b", "c"), torch.randn(3, 4, generator=gen, dtype=F64))
    states = torch.tensor([0, 2, 3])
    evidence = evidence_factor("c", states, 4, like=ab.log_table)
    log_z, single, _ = marginals([ab, bc, evidence])
    for i, s in enumerate(states.tolist()):
        fixed = Factor(("b",), bc.log_table[:, s])
        torch.testing.assert_close(log_z[i], naive_log_partition([ab, fixed]), rtol=0,
                                   atol=1e-12)
        torch.testing.assert_close(single["a"][i], naive_marginals([ab, fixed])["a"], rtol=0,
                                   atol=1e-12)
        assert single["c"][i, s] == pytest.approx(1.0)


def test_eliminating_in_any_order_gives_the_same_answer() -> None:
    gen = torch.Generator().manual_seed(2)
    factors = [Factor(("a", "b"), torch.randn(2, 2, generator=gen, dtype=F64)),
               Factor(("b", "c", "d"), torch.randn(2, 3, 2, generator=gen, dtype=F64)),
               Factor(("d", "a"), torch.randn(2, 2, generator=gen, dtype=F64))]
    values = [log_partition(factors, order=order)
              for order in itertools.permutations(["a", "b", "c", "d"])]
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], rtol=0, atol=1e-12)


def test_a_chain_of_hundreds_of_binary_variables_has_width_one() -> None:
    """Beyond Pyro's 64 enumerated variables: a 500-variable chain, exact against a
    forward recursion."""
    gen = torch.Generator().manual_seed(3)
    n = 500
    pair = torch.randn(n - 1, 2, 2, generator=gen, dtype=F64)
    factors = [Factor((f"x{i}", f"x{i + 1}"), pair[i]) for i in range(n - 1)]
    p = plan(factors)
    assert p.width == 1 and p.max_table == 4
    alpha = torch.zeros(2, dtype=F64)
    for i in range(n - 1):
        alpha = torch.logsumexp(alpha[:, None] + pair[i], 0)
    torch.testing.assert_close(log_partition(factors, order=p.order), torch.logsumexp(alpha, 0),
                               rtol=1e-12, atol=1e-9)


def test_memory_guard_refuses_before_allocating() -> None:
    gen = torch.Generator().manual_seed(4)
    clique = [f"v{i}" for i in range(12)]
    factors = [Factor((u, v), torch.randn(4, 4, generator=gen, dtype=F64))
               for u, v in itertools.combinations(clique, 2)]
    with pytest.raises(ModelError, match=r"induced width 11.*approximate engine"):
        plan(factors, budget_bytes=1024**2)


def test_float32_tables_stay_float32() -> None:
    gen = torch.Generator().manual_seed(5)
    factors = [Factor(("a", "b"), torch.randn(2, 3, generator=gen)),
               Factor(("b",), torch.randn(3, generator=gen))]
    log_z, single, _ = marginals(factors)
    assert log_z.dtype == torch.float32 and single["a"].dtype == torch.float32
    torch.testing.assert_close(log_z, naive_log_partition(factors))


def test_inconsistent_cardinalities_are_reported() -> None:
    with pytest.raises(ModelError, match="'a' has 2 states in one factor and 3"):
        plan([Factor(("a",), torch.zeros(2)), Factor(("a",), torch.zeros(3))])


def _naive_family(factors: list[Factor], scope: tuple[str, ...]) -> torch.Tensor:
    """Brute-force marginal of a scope: the joint summed onto it."""
    from genppl.exact.naive import naive_joint

    names, states, logw = naive_joint(factors)
    p = torch.softmax(logw, -1)
    cards = [max(s[names.index(v)] for s in states) + 1 for v in scope]
    out = torch.zeros(*p.shape[:-1], *cards, dtype=p.dtype)
    for j, s in enumerate(states):
        out[(..., *(s[names.index(v)] for v in scope))] += p[..., j]
    return out


def _mixed_batches() -> list[Factor]:
    """Tables with batch shapes (2, 3), (3,) and none, over a cycle a-b-c-a plus d."""
    gen = torch.Generator().manual_seed(6)
    return [Factor(("a", "b"), torch.randn(2, 3, 2, 3, generator=gen, dtype=F64)),
            Factor(("c", "b"), torch.randn(3, 4, 3, generator=gen, dtype=F64)),
            Factor(("a", "c", "d"), torch.randn(2, 4, 2, generator=gen, dtype=F64)),
            evidence_factor("d", torch.tensor([0, 1, 1]), 2, like=torch.zeros((), dtype=F64))]


def test_mixed_batch_shapes_answer_every_case_and_family() -> None:
    """Shared tables broadcast against per-case ones; each case gets its own marginals and its
    own family marginal even for a table that all cases share."""
    factors = _mixed_batches()
    log_z, single, family = marginals(factors)
    assert log_z.shape == (2, 3) and single["a"].shape == (2, 3, 2)
    assert [fam.shape for fam in family] == [(2, 3, 2, 3), (2, 3, 4, 3), (2, 3, 2, 4, 2),
                                             (2, 3, 2)]
    for i, j in itertools.product(range(2), range(3)):
        case = [Factor(f.vars, f.log_table[(i, j)[2 - len(f.batch_shape):]]) for f in factors]
        torch.testing.assert_close(log_z[i, j], naive_log_partition(case), rtol=0, atol=1e-10)
        for v, probs in naive_marginals(case).items():
            torch.testing.assert_close(single[v][i, j], probs, rtol=0, atol=1e-10)
        for f, fam in zip(case, family, strict=True):
            torch.testing.assert_close(fam[i, j], _naive_family(case, f.vars), rtol=0,
                                       atol=1e-10)


def test_eliminate_keeps_batch_shapes_and_differentiates_to_family_marginals() -> None:
    factors = _mixed_batches()
    kept = eliminate(factors[:3], {"b"})
    # b couples the (2, 3)-batched and the (3,)-batched tables; the third is not touched.
    assert sorted((set(f.vars), tuple(f.batch_shape)) for f in kept) == [
        ({"a", "c"}, (2, 3)), ({"a", "c", "d"}, ())]
    leaves = [Factor(f.vars, f.log_table.clone().requires_grad_(True)) for f in factors]
    rest = eliminate(leaves, {"a", "b", "c", "d"})
    assert all(not f.vars for f in rest)
    log_z = sum(f.log_table for f in rest)
    grads = torch.autograd.grad(log_z.sum(), [f.log_table for f in leaves])
    _, _, family = marginals(factors)
    for f, grad, fam in zip(factors, grads, family, strict=True):
        # A shared table's gradient sums its per-case family marginals over the cases.
        shared = tuple(range(2 - len(f.batch_shape)))
        torch.testing.assert_close(grad, fam.sum(shared) if shared else fam, rtol=0,
                                   atol=1e-10)


def test_impossible_slices_give_zero_not_nan() -> None:
    """A state ruled out by every factor: its marginal and gradient are exactly 0."""
    table = torch.tensor([[0.0, -math.inf], [0.5, -math.inf]], dtype=F64)
    factors = [Factor(("a", "b"), table), Factor(("b",), torch.zeros(2, dtype=F64))]
    _, single, family = marginals(factors)
    assert float(single["b"][1]) == 0.0 and not torch.isnan(family[0]).any()
    leaf = table.clone().requires_grad_(True)
    (value,) = eliminate([Factor(("a", "b"), leaf), factors[1]], {"a", "b"})
    (grad,) = torch.autograd.grad(value.log_table, [leaf])
    assert not torch.isnan(grad).any() and float(grad[:, 1].abs().sum()) == 0.0


def test_tables_beyond_the_float_range_fall_back_to_log_space() -> None:
    """The pass on probabilities scales each table to a largest entry of 1; where the scaled
    Z would underflow (the tables' peaks disagree by 800 nats), log space answers, and
    entries of e^500 do not overflow."""
    for dtype, gap in ((F64, 800.0), (torch.float32, 100.0)):
        a = Factor(("a",), torch.tensor([0.0, -gap], dtype=dtype))
        a_again = Factor(("a",), torch.tensor([-gap, 0.0], dtype=dtype))
        ab = Factor(("a", "b"), torch.tensor([[gap / 2, 0.0], [0.0, gap / 2]], dtype=dtype))
        factors = [a, a_again, ab]
        log_z, single, _ = marginals(factors)
        assert math.isfinite(float(log_z))
        tol = 1e-10 if dtype == F64 else 1e-4
        torch.testing.assert_close(log_z, naive_log_partition(factors), rtol=tol, atol=tol)
        for v, probs in naive_marginals(factors).items():
            torch.testing.assert_close(single[v], probs, rtol=0, atol=tol)
    big = [Factor(("a", "b"), torch.full((2, 3), 500.0, dtype=F64)),
           Factor(("b",), torch.tensor([500.0, 0.0, -3.0], dtype=F64))]
    log_z, single, _ = marginals(big)
    torch.testing.assert_close(log_z, naive_log_partition(big), rtol=1e-14, atol=0)
    torch.testing.assert_close(single["b"], naive_marginals(big)["b"], rtol=0, atol=1e-12)


def test_cases_of_very_different_scale_each_get_their_own() -> None:
    """Per-case scaling: one case 700 nats below another still answers exactly (or falls
    back to log space for the whole batch when it must)."""
    gen = torch.Generator().manual_seed(11)
    ab = Factor(("a", "b"), torch.randn(3, 2, generator=gen, dtype=F64))
    shift = torch.tensor([0.0, -700.0, 300.0], dtype=F64)
    b = Factor(("b",), torch.randn(3, 2, generator=gen, dtype=F64) + shift[:, None])
    log_z, single, _ = marginals([ab, b])
    for i in range(3):
        case = [ab, Factor(("b",), b.log_table[i])]
        torch.testing.assert_close(log_z[i], naive_log_partition(case), rtol=1e-14, atol=0)
        torch.testing.assert_close(single["a"][i], naive_marginals(case)["a"], rtol=0,
                                   atol=1e-12)


def test_a_table_changed_in_place_is_not_answered_from_before() -> None:
    """Tables derived from a factor are kept with it for repeated queries, until its table
    changes."""
    gen = torch.Generator().manual_seed(12)
    factors = [Factor(("a", "b"), torch.randn(2, 3, generator=gen, dtype=F64)),
               Factor(("b", "c"), torch.randn(3, 2, generator=gen, dtype=F64))]
    first, _, _ = marginals(factors)
    factors[1].log_table[0, 1] += 2.0
    second, single, _ = marginals(factors)
    assert float(second) != pytest.approx(float(first))
    torch.testing.assert_close(second, naive_log_partition(factors), rtol=0, atol=1e-12)
    torch.testing.assert_close(single["c"], naive_marginals(factors)["c"], rtol=0, atol=1e-12)

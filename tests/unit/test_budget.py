"""The memory budget: engines refuse, before allocating, work whose largest table exceeds it;
``genppl.memory_limit`` sets the default for a block and nothing outside it."""

from __future__ import annotations

import pytest
import torch

import genppl
from genppl import ModelError
from genppl.budget import DEFAULT_BUDGET_BYTES, memory_budget
from genppl.tabulation.prepared import enumeration_bytes, prepare

pytestmark = pytest.mark.unit


def _star(parents: int) -> genppl.Model:
    """``parents`` binary roots all read by one observed child: Pyro's enumeration holds
    one table over all of them (the child is observed: no axis of its own), 2**parents
    entries."""
    m = genppl.Model("star")
    for i in range(parents):
        m.cpt(f"x{i}", [], [0.5, 0.5])
    m.cpt("y", [f"x{i}" for i in range(parents)],
          torch.full((2,) * parents + (2,), 0.5, dtype=torch.float64), observed=True)
    return m.to(dtype=torch.float64)


def test_the_enumeration_estimate_is_the_largest_table() -> None:
    for parents in (3, 12):
        need = enumeration_bytes(prepare(_star(parents), {"y": torch.tensor(1)}))
        assert need == 2**parents * 8  # y's table over its parents, in float64


def test_enum_refuses_before_allocating_and_names_the_way_out() -> None:
    model, data = _star(12), {"y": torch.tensor(1)}
    with pytest.raises(ModelError, match=r"needs 32 KiB, over the memory budget of 1000 B\. "
                       "Use engine 'exact'"):
        genppl.infer(model, data, engine="enum", budget_bytes=1000)
    with genppl.memory_limit(1000), pytest.raises(ModelError, match="over the memory budget"):
        genppl.infer(model, data, engine="enum")
    # outside the block the default is back, and the same query answers
    assert memory_budget() == DEFAULT_BUDGET_BYTES
    answer = genppl.infer(model, data, engine="enum")
    assert answer.log_evidence == pytest.approx(float(torch.log(torch.tensor(0.5))), abs=1e-6)


def test_memory_limit_nests_and_restores() -> None:
    with genppl.memory_limit(10**6):
        assert memory_budget() == 10**6
        with genppl.memory_limit(None):
            assert memory_budget() == 10**6
        with genppl.memory_limit(5):
            assert memory_budget() == 5
        assert memory_budget() == 10**6
    assert memory_budget() == DEFAULT_BUDGET_BYTES


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1GB"])
def test_a_budget_must_be_a_positive_number_of_bytes(bad: object) -> None:
    with pytest.raises(ModelError, match="budget_bytes must be a positive int"):
        memory_budget(bad)  # type: ignore[arg-type]


def _grid(side: int) -> genppl.Model:
    """An Ising-like grid of ``side`` x ``side`` binary variables coupled to their right and
    lower neighbours: Gibbs grounds 2 * side * (side - 1) pair factors."""
    m = genppl.Model("grid")
    coupling = torch.tensor([[0.5, -0.5], [-0.5, 0.5]], dtype=torch.float64)
    for i in range(side):
        for j in range(side):
            m.variable(f"v{i}_{j}", 2)
    for i in range(side):
        for j in range(side):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < side and j + dj < side:
                    m.factor(f"f{i}_{j}_{di}", lambda a, b: coupling[a, b],
                             scope=[f"v{i}_{j}", f"v{i + di}_{j + dj}"])
    return m.to(dtype=torch.float64)


def test_gibbs_refuses_a_grounding_or_draws_over_the_budget() -> None:
    model = _grid(4)
    with pytest.raises(ModelError, match=r"grounding 16 latent instances for Gibbs sampling "
                       r"needs .*, over the memory budget of 100 B"):
        genppl.infer(model, engine="gibbs", num_samples=5, budget_bytes=100, progress=False)
    with pytest.raises(ModelError, match="keeping 100,000 draws of 16 latent instances"):
        genppl.infer(model, engine="gibbs", num_samples=100_000, budget_bytes=10**6,
                     progress=False)
    draws = genppl.infer(model, engine="gibbs", num_samples=5, seed=0, progress=False,
                         budget_bytes=10**6)
    assert draws.samples["v0_0"].shape == (1, 5)


def test_em_reads_the_budget_for_its_e_steps() -> None:
    model = _star(12)
    with genppl.memory_limit(1000), pytest.raises(ModelError, match="over the memory budget"):
        genppl.fit(model, {"y": torch.tensor(1)}, engine="em", steps=1, progress=False)
    with pytest.raises(ModelError, match="over the memory budget"):
        genppl.fit(model, {"y": torch.tensor(1)}, engine="em", steps=1, progress=False,
                   budget_bytes=1000)


@pytest.mark.parametrize("engine", ["svi", "nuts"])
def test_svi_and_nuts_check_their_enumeration_too(engine: str) -> None:
    """The finite latents SVI and NUTS sum out by Pyro's enumeration count against the
    budget: the star's 32 KiB table, beside a continuous latent for them to handle."""
    import pyro.distributions as dist

    m = _star(12)
    m.latent("s", lambda: dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    m.observed("w", lambda s: dist.Normal(s, 1.0))
    data = {"y": torch.tensor(1), "w": torch.tensor(0.5, dtype=torch.float64)}
    options = ({"steps": 1} if engine == "svi" else {"num_samples": 2, "warmup_steps": 1})
    call = genppl.fit if engine == "svi" else genppl.infer
    with pytest.raises(ModelError, match="Pyro's enumeration of 'star' needs 32 KiB"):
        call(m, data, engine=engine, budget_bytes=1000, progress=False, **options)
    call(m, data, engine=engine, budget_bytes=10**5, progress=False, **options)

"""Options an engine accepts reach its kernel: NUTS's ``step_size``, HMC's
``target_accept_prob`` (and ``hmc_gibbs``'s kernel options) change what the sampler does, and
an option of the other kernel is refused rather than dropped. ``Posterior.probs`` has one
shape, the node's number of states, whatever states the draws happen to hold."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit
F64 = torch.float64


def _normal() -> genppl.Model:
    m = genppl.Model("normal")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    return m.to(dtype=F64)


X = torch.tensor([0.3, -0.2, 1.1, 0.7], dtype=F64)


def _step_sizes(engine: str, **options: object) -> list[float]:
    post = genppl.infer(_normal(), {"x": X}, engine=engine, num_samples=30, seed=1,
                        progress=False, **options)
    return [d["step_size"] for d in post.info["diagnostics"]]


@pytest.mark.parametrize("engine", ["nuts", "hmc"])
def test_step_size_is_the_kernels_without_adaptation(engine: str) -> None:
    assert _step_sizes(engine, step_size=0.0123, adapt_step_size=False,
                       warmup_steps=5) == [0.0123]
    short = {"max_tree_depth": 3} if engine == "nuts" else {}  # tiny steps: short trees
    post = genppl.infer(_normal(), {"x": X}, engine=engine, num_samples=30, warmup_steps=0,
                        step_size=1e-6, adapt_step_size=False, seed=1, progress=False,
                        **short)
    # steps of 1e-6 hardly move the chain from its start (the posterior sd is 0.45)
    assert float(post["mu"].max() - post["mu"].min()) < 0.05


@pytest.mark.parametrize("engine", ["nuts", "hmc"])
def test_target_accept_prob_steers_the_adapted_step_size(engine: str) -> None:
    cautious, = _step_sizes(engine, target_accept_prob=0.99, warmup_steps=100)
    bold, = _step_sizes(engine, target_accept_prob=0.5, warmup_steps=100)
    assert cautious < bold


@pytest.mark.parametrize(("engine", "option"), [("nuts", {"num_steps": 5}),
                                                ("hmc", {"max_tree_depth": 3})])
def test_an_option_of_the_other_kernel_is_refused(engine: str, option: dict) -> None:
    with pytest.raises(ModelError, match="belongs to kernel"):
        genppl.infer(_normal(), {"x": X}, engine=engine, num_samples=2, progress=False,
                     **option)


@pytest.mark.parametrize(("option", "value"), [("step_size", 0.0), ("target_accept_prob", 1.0)])
def test_kernel_options_out_of_range_are_refused(option: str, value: float) -> None:
    with pytest.raises(ModelError, match=option):
        genppl.infer(_normal(), {"x": X}, engine="nuts", num_samples=2, progress=False,
                     **{option: value})


def test_probs_has_the_nodes_number_of_states_whatever_was_drawn() -> None:
    """A 4-state node whose top state has probability zero: no draw holds it, and the table
    still has four columns (a zero in the last)."""
    m = genppl.Model("four")
    m.cpt("z", [], [0.5, 0.3, 0.2, 0.0])
    post = genppl.infer(m, engine="prior", num_samples=200, seed=0, progress=False)
    probs = post.probs("z")
    assert probs.shape == (4,)
    assert float(probs[3]) == 0.0
    assert float(probs.sum()) == pytest.approx(1.0)
    with pytest.raises(ModelError, match=r"outside 0\.\.1"):
        post.probs("z", states=2)


def test_hmc_gibbs_passes_its_kernel_options_and_reports_the_step_size() -> None:
    m = genppl.Model("shifted")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        m.latent("z", lambda: dist.Bernoulli(torch.tensor(0.5)))
        m.observed("x", lambda mu, z: dist.Normal(mu + 2.0 * z, 1.0))
    m.to(dtype=F64)
    post = genppl.infer(m, {"x": X}, engine="hmc_gibbs", num_samples=5, warmup_steps=2,
                        step_size=0.0123, adapt_step_size=False, seed=0, progress=False)
    assert [d["step_size"] for d in post.info["diagnostics"]] == [0.0123]
    with pytest.raises(ModelError, match="belongs to kernel 'hmc'"):
        genppl.infer(m, {"x": X}, engine="hmc_gibbs", num_samples=2, num_steps=4,
                     progress=False)

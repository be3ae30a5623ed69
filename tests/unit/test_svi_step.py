"""``fit(engine="svi")``'s own step (``genppl.variational.step``, ``joint``, ``multi_tensor``)
against its oracle, ``pyro.infer.SVI`` with the equivalent ``pyro.optim`` optimiser: from the
same random numbers, the same losses and params, for every named optimiser, with clipping and
schedules, in float32 and float64 (bit for bit except Adam and Adagrad, whose fused kernels
round otherwise), with parameters that first appear after the first step or under two names;
the multi-tensor ClippedAdam and per-parameter clipping against Pyro's one-tensor versions;
and ``validate=``."""

from __future__ import annotations

import copy
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim.clipped_adam import ClippedAdam as PyroClippedAdam
from torch import nn

import genppl
from genppl.engines.svi import build_guide
from genppl.runtime.progress import seed_everything
from genppl.tabulation.prepared import prepare
from genppl.variational import multi_tensor
from genppl.variational.joint import JointOptimiser
from genppl.variational.optim import make_optimiser, recipe
from genppl.variational.step import SVIStep

pytestmark = pytest.mark.unit

STEPS = 6
#: float32: a few units in the 7th digit after several updates; float64: rounding only
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}


def regression(dtype: torch.dtype) -> tuple[genppl.Model, dict[str, torch.Tensor]]:
    """y_i ~ N(net(z_i), sigma), z_i ~ N(w, 1): a network (a module), a constrained param
    and global and local latents (for AutoNormal), 12 items."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    m = genppl.Model("regression")
    m.module("net", net)
    m.param("sigma", torch.tensor(0.7), constraint=dist.constraints.positive)
    m.latent("w", lambda: dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with m.plate("items"):
        m.latent("z", lambda w: dist.Normal(w, 1.0).to_event(1))
        m.observed("y", lambda net, z, sigma: dist.Normal(net(z), sigma).to_event(1))
    m.to(dtype=dtype)
    y = torch.randn(12, 3, dtype=dtype)
    return m, {"y": y}


def pyro_oracle(model: genppl.Model, data: dict[str, Any], seed: int,
                **options: Any) -> tuple[list[float], dict[str, torch.Tensor]]:
    """What ``fit`` computed before it had a step of its own: the same preparation, then
    ``pyro.infer.SVI`` with ``make_optimiser``'s ``pyro.optim`` object."""
    seed_everything(seed)
    pyro.clear_param_store()
    prep = prepare(model, data)
    guide = build_guide(prep, "normal")
    optimiser = make_optimiser(options.pop("optimizer"), steps=STEPS, **options)
    svi = SVI(prep.program, guide, optimiser.optim, Trace_ELBO(max_plate_nesting=1))
    losses = []
    for _ in range(STEPS):
        losses.append(svi.step(**prep.data))
        optimiser.after_step()
    return losses, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", [
    {"optimizer": "clipped_adam", "lr": 0.05},  # the default, clip_norm 10
    {"optimizer": "clipped_adam", "lr": 0.05, "clip_norm": 0.01, "lrd": 0.9},
    {"optimizer": "adam", "lr": 0.05, "clip_norm": None, "schedule": "cosine"},
    {"optimizer": "adam", "lr": 0.05, "clip_norm": 0.3},  # some gradients clipped
    {"optimizer": "sgd", "lr": 0.01, "clip_norm": 0.3, "schedule": "step",
     "schedule_options": {"step_size": 2, "gamma": 0.5}},
    {"optimizer": "adagrad", "lr": 0.1, "lrd": 0.8},
    {"optimizer": "rmsprop", "lr": 0.01, "clip_norm": 1.0},
])
def test_fit_steps_like_pyro_svi(dtype: torch.dtype, options: dict[str, Any]) -> None:
    losses, params = pyro_oracle(*regression(dtype), seed=3, **options)
    model, data = regression(dtype)  # the same initial weights: the oracle trained its own
    result = genppl.fit(model, data, engine="svi", guide="normal", steps=STEPS, seed=3,
                        progress=False, **options)
    tol = TOLERANCE[dtype]
    assert result.losses == pytest.approx(losses, rel=tol)
    assert set(result.params) == set(params) and len(params) == 9  # 4 net tensors, sigma, 4
    moved = 0
    for name, value in params.items():
        assert value.dtype == dtype, name
        torch.testing.assert_close(result.params[name], value, rtol=tol, atol=tol)
        moved += not torch.equal(value, model_start(regression(dtype)[0], name, dtype))
    assert moved >= 5  # the comparison is not of untouched initial values
    if options["optimizer"] not in ("adam", "adagrad"):  # their fused kernels round otherwise
        assert result.losses == losses  # the same operations on the same numbers: bit for bit
        assert all(torch.equal(result.params[name], value) for name, value in params.items())


def model_start(model: genppl.Model, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A param's initial value where the model holds one (else a value no param equals)."""
    if name.startswith("net$$$"):
        return dict(model["net"].value.named_parameters())[name.split("$$$")[1]].detach()
    if name == "sigma":
        return torch.tensor(0.7, dtype=dtype)
    return torch.full((), float("nan"), dtype=dtype)


def late_model(step: list[int]) -> None:
    """A model whose param ``b`` first appears at the third step (as a param created by a
    branch does): Pyro gives it an optimiser and a schedule from that step on."""
    a = pyro.param("a", torch.tensor([0.5, -0.2], dtype=torch.float64))
    loc = a.sum()
    if step[0] >= 2:
        loc = loc + pyro.param("b", torch.tensor(0.3, dtype=torch.float64))
    pyro.sample("x", dist.Normal(loc, 1.0), obs=torch.tensor(2.0, dtype=torch.float64))
    step[0] += 1


def empty_guide(step: list[int]) -> None:
    return None


@pytest.mark.parametrize("name", ["adam", "clipped_adam"])
def test_a_param_first_seen_later_gets_its_own_optimiser_and_schedule(name: str) -> None:
    r = recipe(name, lr=0.1, clip_norm=None, schedule="exponential",
               schedule_options={"gamma": 0.5}, steps=STEPS)
    results = []
    for joint in (False, True):
        pyro.clear_param_store()
        counter = [0]
        optimiser: Any
        if joint:
            optimiser = JointOptimiser(r)
            step: Any = SVIStep(late_model, empty_guide, Trace_ELBO(), optimiser)
        else:
            optimiser = make_optimiser(name, lr=0.1, clip_norm=None, schedule="exponential",
                                       schedule_options={"gamma": 0.5}, steps=STEPS)
            step = SVI(late_model, empty_guide, optimiser.optim, Trace_ELBO()).step
        losses = []
        for _ in range(STEPS):
            losses.append(step(step=counter))
            optimiser.after_step()
        store = pyro.get_param_store()
        results.append((losses, store["a"].detach().clone(), store["b"].detach().clone(),
                        sorted(optimiser.learning_rates())))
    (pyro_losses, pyro_a, pyro_b, pyro_rates), (losses, a, b, rates) = results
    assert losses == pytest.approx(pyro_losses, rel=1e-12)
    torch.testing.assert_close(a, pyro_a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b, pyro_b, rtol=1e-12, atol=1e-12)
    # a's rate halved 6 times, b's (first stepped at the third step) 4 times
    assert rates == pytest.approx(pyro_rates, rel=1e-15)
    assert rates == pytest.approx([0.1 / 2**6, 0.1 / 2**4], rel=1e-15)
    assert len(optimiser.cohorts) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", [
    {"clip_norm": 10.0},
    {"clip_norm": 0.05, "lrd": 0.9, "weight_decay": 0.1},
    {"clip_norm": float("inf"), "centered_variance": True},
])
def test_multi_tensor_clipped_adam_is_pyros_clipped_adam(dtype: torch.dtype,
                                                         options: dict[str, Any]) -> None:
    """Bit for bit: the same elementwise operations in the same order, over lists."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (), (2, 2, 2)]
    start = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=dtype) for s in shapes] for _ in range(5)]
    out = []
    for cls in (PyroClippedAdam, multi_tensor.ClippedAdam):
        params = [p.clone().requires_grad_() for p in start]
        optim = cls(params, lr=0.1, **options)
        for step, gs in enumerate(grads):
            for i, (p, g) in enumerate(zip(params, gs, strict=True)):
                p.grad = None if (step == 2 and i == 1) else g.clone()  # one param skips a step
            optim.step()
        out.append((params, optim.state_dict()))
    (ref, ref_state), (got, got_state) = out
    for p, q, p0 in zip(ref, got, start, strict=True):
        assert torch.equal(p, q)
        assert not torch.equal(p, p0)
    assert got_state["state"][1]["step"] == 4 and ref_state["state"][1]["step"] == 4
    for i, s in ref_state["state"].items():
        assert torch.equal(got_state["state"][i]["exp_avg_sq"], s["exp_avg_sq"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_norms_clips_each_gradient_as_clip_grad_norm_does(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(s, generator=gen, dtype=dtype) * scale
             for s, scale in (((4, 4), 3.0), ((10,), 0.01), ((), 5.0), ((3,), 0.2))]
    expected = [g.clone() for g in grads]
    for g in expected:
        p = torch.zeros_like(g, requires_grad=True)
        p.grad = g
        torch.nn.utils.clip_grad_norm_(p, 0.5)
    multi_tensor.clip_norms_(grads, 0.5)
    tol = TOLERANCE[dtype]
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=tol, atol=0)
    norms = [float(torch.linalg.vector_norm(g)) for g in grads]
    assert norms[0] == pytest.approx(0.5, rel=1e-5) and norms[2] == pytest.approx(0.5, rel=1e-5)
    assert norms[1] < 0.5 and norms[3] < 0.5  # left as they were


def test_validate_false_drops_pyros_checks_and_none_follows_the_global_setting() -> None:
    """A Bernoulli observed at 2 (outside its support): Pyro's validation rejects it;
    ``validate=False`` runs (the loss is finite: genppl's own check stays)."""
    m = genppl.Model("coin")
    m.latent("p", lambda: dist.Beta(torch.tensor(2.0, dtype=torch.float64), 2.0))
    with m.plate("flips"):
        m.observed("x", lambda p: dist.Bernoulli(p))
    m.to(dtype=torch.float64)
    data = {"x": torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)}
    run = {"engine": "svi", "guide": "normal", "steps": 3, "seed": 0, "progress": False}
    with pytest.raises((ValueError, genppl.ModelError), match="support"):
        genppl.fit(m, data, **run)  # Pyro's default: validation on
    result = genppl.fit(m, data, validate=False, **run)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    assert pyro.infer.util.is_validation_enabled()  # the setting is put back
    with pyro.validation_enabled(False):
        assert len(genppl.fit(m, data, **run).losses) == 3
        with pytest.raises((ValueError, genppl.ModelError), match="support"):
            genppl.fit(m, data, validate=True, **run)


def test_a_module_registered_under_two_names_is_stepped_once() -> None:
    """Model and guide share a network under two names (the VQ-VAE's codebook): one tensor,
    two store entries; Pyro steps it once per step, and so must the joint optimiser."""
    torch.manual_seed(0)
    start = nn.Linear(3, 2).to(torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)

    def model(net: nn.Module) -> None:
        pyro.module("decoder", net)
        z = pyro.sample("z", dist.Normal(torch.zeros(4, 2, dtype=torch.float64), 1.0)
                        .to_event(2))
        pyro.sample("y", dist.Normal(net(x) + z, 1.0).to_event(2), obs=torch.ones(4, 2,
                                                                                  dtype=x.dtype))

    def guide(net: nn.Module) -> None:
        pyro.module("encoder", net)
        pyro.sample("z", dist.Normal(net(x), 0.5).to_event(2))

    results = []
    for joint in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        net = copy.deepcopy(start)
        if joint:
            step: Any = SVIStep(model, guide, Trace_ELBO(),
                                JointOptimiser(recipe("adam", lr=0.1, clip_norm=None)))
        else:
            step = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO()).step
        losses = [step(net) for _ in range(STEPS)]
        assert len(pyro.get_param_store().keys()) == 4  # 2 tensors, 2 names each
        results.append((losses, [p.detach().clone() for p in net.parameters()]))
    (pyro_losses, pyro_params), (losses, params) = results
    assert losses == pytest.approx(pyro_losses, rel=1e-12)
    for p, q, p0 in zip(params, pyro_params, start.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(p, p0)

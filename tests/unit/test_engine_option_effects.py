"""Every option of every engine is used or refused.

One parametrised test runs over every registered engine and every field of its options
dataclass (read from the contracts, so a new option or engine without a case here fails
``test_every_option_has_a_case``): a run with the option changed from its base value must
differ from the run without the change in something a caller can see -- draws, marginals,
evidence, params, losses, info, the files of a checkpoint directory, the progress bars on a
terminal -- or, where the option does not apply to the combination, be refused with a
``ModelError`` naming it. Tiny models and a few draws or steps keep it fast.
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

import genppl
from genppl import ModelError
from genppl.results import FitResult, Posterior

pytestmark = pytest.mark.unit
F64 = torch.float64
CHECKPOINT = "<checkpoint directory>"  # replaced by the test's own directory


def _mixture() -> genppl.Model:
    """Finite latents only: a two-component mixture with params (weights, locations)."""
    m = genppl.Model("mixture")
    m.param("weights", torch.tensor([0.4, 0.6]), constraint=constraints.simplex)
    m.param("loc", torch.tensor([0.0, 2.0]))
    with m.plate("data"):
        m.latent("z", lambda weights: dist.Categorical(weights))
        m.observed("x", lambda z, loc: dist.Normal(loc[..., z], 1.0))
    return m.to(dtype=F64)


def _weighted_mixture() -> genppl.Model:
    """A global Dirichlet latent that EM point-estimates, starting from a prior draw."""
    m = genppl.Model("weighted")
    m.latent("weights", lambda: dist.Dirichlet(torch.ones(2)))
    with m.plate("data"):
        m.latent("z", lambda weights: dist.Categorical(weights))
        m.observed("x", lambda z: dist.Normal(torch.tensor([0.0, 2.0])[..., z], 1.0))
    return m.to(dtype=F64)


def _shifted() -> genppl.Model:
    """A continuous and a finite latent and a param: for the Hamiltonian samplers."""
    m = genppl.Model("shifted")
    m.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        m.latent("z", lambda: dist.Bernoulli(torch.tensor(0.5)))
        m.observed("x", lambda mu, z, scale: dist.Normal(mu + 2.0 * z, scale))
    return m.to(dtype=F64)


def _normal() -> genppl.Model:
    m = genppl.Model("normal")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    return m.to(dtype=F64)


def _scaled() -> genppl.Model:
    """A continuous latent and a param (for AIS)."""
    m = genppl.Model("scaled")
    m.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        m.observed("x", lambda mu, scale: dist.Normal(mu, scale))
    return m.to(dtype=F64)


def _coin() -> genppl.Model:
    m = genppl.Model("coin")
    m.latent("p", lambda: dist.Beta(torch.tensor(1.0), 1.0))
    with m.plate("data"):
        m.observed("x", lambda p: dist.Bernoulli(p))
    return m.to(dtype=F64)


def _coins() -> genppl.Model:
    """A conjugate mixture of coins (for CAVI)."""
    m = genppl.Model("coins")
    m.latent("w", lambda: dist.Dirichlet(torch.ones(2)))
    m.latent("p", lambda: dist.Beta(1.5, 1.5).expand([2]).to_event(1))
    with m.plate("flips", 8):
        m.latent("z", lambda w: dist.Categorical(w))
        m.observed("x", lambda z, p: dist.Bernoulli(p[..., z]))
    return m.to(dtype=F64)


def _pair() -> genppl.Model:
    """Potentials over finite variables with two learnable tables (for CD)."""
    m = genppl.Model("pair")
    m.param("theta", torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]))
    m.param("bias", torch.zeros(3))
    m.variable("a", 2)
    m.variable("z", 3)
    m.factor("coupling", lambda a, z, theta: Vindex(theta)[a, z])
    m.factor("prior_z", lambda z, bias: bias[z])
    return m.to(dtype=F64)


X4 = torch.tensor([0.1, 2.2, 1.9, -0.3], dtype=F64)
MODELS: dict[str, tuple[Callable[[], genppl.Model], dict[str, Any]]] = {
    "mixture": (_mixture, {"x": X4}),
    "weighted": (_weighted_mixture, {"x": X4}),
    "shifted": (_shifted, {"x": X4}),
    "normal": (_normal, {"x": X4}),
    "scaled": (_scaled, {"x": X4}),
    "coin": (_coin, {"x": torch.tensor([1.0, 0.0, 1.0], dtype=F64)}),
    "coins": (_coins, {"x": torch.tensor([1.0, 1, 0, 1, 0, 0, 1, 1], dtype=F64)}),
    "pair": (_pair, {"a": torch.tensor([0, 1, 1, 0, 1]).repeat(4)}),
}

#: Each engine's model and base options: small and quiet, seeded where the engine draws.
BASE: dict[str, tuple[str, dict[str, Any]]] = {
    "exact": ("mixture", {}),
    "enum": ("mixture", {}),
    "prior": ("mixture", {"num_samples": 5, "seed": 0, "progress": False}),
    "gibbs": ("mixture", {"num_samples": 6, "seed": 0, "progress": False}),
    "nuts": ("shifted", {"num_samples": 6, "warmup_steps": 4, "seed": 0, "progress": False}),
    "hmc": ("shifted", {"num_samples": 6, "warmup_steps": 4, "seed": 0, "progress": False}),
    "hmc_gibbs": ("shifted", {"num_samples": 6, "warmup_steps": 4, "seed": 0,
                              "progress": False}),
    "em": ("mixture", {"steps": 3, "progress": False}),
    "cavi": ("coins", {"steps": 4, "progress": False}),
    "cd": ("pair", {"steps": 2, "batch_size": 5, "seed": 0, "progress": False}),
    "svi": ("normal", {"steps": 3, "seed": 0, "progress": False}),
    "ais": ("scaled", {"num_temperatures": 3, "num_chains": 4, "leapfrog_steps": 2, "seed": 0,
                       "progress": False}),
}


@dataclass(frozen=True)
class Case:
    """``change`` applied to the engine's base options (with ``base`` added to both runs);
    ``refused``: the change must be refused, naming the option."""

    change: dict[str, Any]
    base: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    refused: bool = False
    before: Callable[[], None] | None = None
    call: str | None = None  # "infer" or "fit" (default: fit where the engine fits)
    naming: str | None = None  # what the refusal names (default: the option)


def _stop(*_: Any) -> bool:
    """A CAVI callback that stops the run at once."""
    return True


def _called(*_: Any) -> None:
    """A callback that shows it was called (CD's callbacks return nothing)."""
    raise _Called


class _Called(Exception):
    """Raised by a callback to show it was called."""


def _stale_param() -> None:
    pyro.clear_param_store()
    pyro.param("stale", torch.tensor(1.0))


_SAMPLERS_COMMON = {
    "num_samples": Case({"num_samples": 3}),
    "warmup_steps": Case({"warmup_steps": 1}),
    "num_chains": Case({"num_chains": 2}),
    "seed": Case({"seed": 1}),
    # the chains' draws are the same wherever they run (tested in test_chains); a value no
    # executor has is refused by the chain runner, which reads it
    "executor": Case({"executor": "elsewhere"}, refused=True),
    "progress": Case({"progress": True}),
    "checkpoint": Case({"checkpoint": CHECKPOINT}),
    # more than one save leaves the previous one beside the latest
    "checkpoint_every": Case({"checkpoint_every": 1}, base={"checkpoint": CHECKPOINT}),
}
_KERNEL = {
    "step_size": Case({"step_size": 0.01}, base={"adapt_step_size": False}),
    "adapt_step_size": Case({"adapt_step_size": False}),
    "target_accept_prob": Case({"target_accept_prob": 0.99}),
    "max_tree_depth": Case({"max_tree_depth": 1}),
    "num_steps": Case({"num_steps": 2}, refused=True),
}

CASES: dict[str, dict[str, Case]] = {
    "ais": {
        "params": Case({"params": {"scale": torch.tensor(0.5, dtype=F64)}}),
        "num_temperatures": Case({"num_temperatures": 2}),
        "schedule": Case({"schedule": "linear"}),
        "num_chains": Case({"num_chains": 2}),
        "leapfrog_steps": Case({"leapfrog_steps": 1}),
        "step_size": Case({"step_size": 0.01}),
        "adapt_step_size": Case({"adapt_step_size": False}),
        # (steps this long are accepted about half the time: below 0.65, above 0.05)
        "target_accept_prob": Case({"target_accept_prob": 0.05}, base={"step_size": 1.0}),
        # (the scaled model's latent is global: per item does not apply)
        "per": Case({"per": "data"}, refused=True, naming="outside plate 'data'"),
        "reverse_from": Case({"reverse_from": {"mu": 0.5}}),
        "finite": Case({"finite": "gibbs"}, model="shifted"),
        # (each run builds its model afresh, so a guide declared beforehand is another
        # model's; the effect of a right one is tested in test_ais.py)
        "guide": Case({"guide": _scaled().guide()}, refused=True,
                      naming="was declared for model"),
        "base_from": Case({"base_from": {"a": torch.tensor([1, 1, 1, 0])}}, model="pair"),
        "from_data": Case({"from_data": True}, model="pair"),
        "seed": Case({"seed": 1}),
        "progress": Case({"progress": True}),
    },
    "exact": {
        "params": Case({"params": {"loc": torch.tensor([0.0, 1.0], dtype=F64)}}),
        "map": Case({"map": True}),
        "marginals": Case({"marginals": False}, base={"map": True}),
        "num_samples": Case({"num_samples": 3}),
        "seed": Case({"seed": 1}, base={"num_samples": 3, "seed": 0}),
        "chain_method": Case({"chain_method": "forwards"}, refused=True),
        "evidence_per": Case({"evidence_per": "data"}),
    },
    "enum": {"params": Case({"params": {"loc": torch.tensor([0.0, 1.0], dtype=F64)}})},
    "prior": {
        "params": Case({"params": {"loc": torch.tensor([0.0, 1.0], dtype=F64)}}),
        "num_samples": Case({"num_samples": 3}),
        "sizes": Case({"sizes": {"data": 2}}, base={"sizes": {"data": 3}}, model="nodata"),
        "seed": Case({"seed": 1}),
        "progress": Case({"progress": True}),
    },
    "gibbs": {
        **_SAMPLERS_COMMON,
        "params": Case({"params": {"loc": torch.tensor([0.0, 1.0], dtype=F64)}}),
        "executor": Case({"executor": "vectorized"}, base={"num_chains": 2}),
        "schedule": Case({"schedule": "sequential"}),
        "blocks": Case({"blocks": [["z"]]}),
        # (the mixture's assignments are independent given its params, so a sweep forgets
        # where it started; with the weights integrated out they are not)
        "init": Case({"init": {"z": 1}}, base={"warmup_steps": 0}, model="weighted"),
    },
    "nuts": {
        **_SAMPLERS_COMMON, **_KERNEL,
        "params": Case({"params": {"scale": torch.tensor(0.5, dtype=F64)}}),
        "init": Case({"init": {"mu": 3.0}}, base={"warmup_steps": 0}),
        "marginalise": Case({"marginalise": "exact"}),
    },
    "hmc": {
        **_SAMPLERS_COMMON, **_KERNEL,
        "params": Case({"params": {"scale": torch.tensor(0.5, dtype=F64)}}),
        "max_tree_depth": Case({"max_tree_depth": 1}, refused=True),
        "num_steps": Case({"num_steps": 2}),
        "init": Case({"init": {"mu": 3.0}}, base={"warmup_steps": 0}),
        "marginalise": Case({"marginalise": "exact"}),
    },
    "hmc_gibbs": {
        **_SAMPLERS_COMMON, **_KERNEL,
        "params": Case({"params": {"scale": torch.tensor(0.5, dtype=F64)}}),
        "kernel": Case({"kernel": "hmc"}),
        "discrete": Case({"discrete": "exact"}),
        "init": Case({"init": {"mu": 3.0}}, base={"warmup_steps": 0}),
    },
    "em": {
        "steps": Case({"steps": 1}),
        "tol": Case({"tol": 10.0}),
        "pseudo_counts": Case({"pseudo_counts": 5.0}),
        "learn": Case({"learn": ["weights"]}),
        "init": Case({"init": {"loc": torch.tensor([1.0, 1.5], dtype=F64)}}),
        "seed": Case({"seed": 1}, model="weighted"),
        "progress": Case({"progress": True}),
        "checkpoint": Case({"checkpoint": CHECKPOINT}),
        "checkpoint_every": Case({"checkpoint_every": 1}, base={"checkpoint": CHECKPOINT}),
    },
    "cavi": {
        "steps": Case({"steps": 2}),
        "tol": Case({"tol": 10.0}),
        "init": Case({"init": "prior"}),
        "seed": Case({"seed": 1}),
        "hold": Case({"hold": {"p": dist.Beta(torch.tensor([9.0, 1.0], dtype=F64),
                                               torch.tensor([1.0, 9.0], dtype=F64))}}),
        "local": Case({"local": ["w"]}),
        "local_steps": Case({"local_steps": 0}, base={"local": ["w"]}),
        "local_tol": Case({"local_tol": 0.0}, base={"local": ["w"], "local_tol": 1e9}),
        "callback": Case({"callback": _stop}),
        "progress": Case({"progress": True}),
        "num_samples": Case({"num_samples": 3}, base={"num_samples": 5}, call="infer"),
    },
    "cd": {
        "k": Case({"k": 3}),
        "persistent": Case({"persistent": True}),
        "steps": Case({"steps": 1}),
        "lr": Case({"lr": 0.5}),
        "momentum": Case({"momentum": 0.9}),
        "batch_size": Case({"batch_size": 10}),
        "positive_sweeps": Case({"positive_sweeps": 3}),
        "learn": Case({"learn": ["theta"]}),
        "init": Case({"init": {"bias": torch.ones(3, dtype=F64)}}),
        "seed": Case({"seed": 1}),
        "progress": Case({"progress": True}),
        "callback": Case({"callback": _called}),
    },
    "svi": {
        "guide": Case({"guide": "delta"}),
        "steps": Case({"steps": 2}),
        "lr": Case({"lr": 0.5}),
        "clip_norm": Case({"clip_norm": 1e-4}),
        "lrd": Case({"lrd": 0.1}),
        "optimizer": Case({"optimizer": "sgd"}),
        "schedule": Case({"schedule": "cosine"}),
        "schedule_options": Case({"schedule_options": {"gamma": 0.01}},
                                 base={"schedule": "exponential",
                                       "schedule_options": {"gamma": 0.9}}),
        "elbo": Case({"elbo": "meanfield"}),
        "num_particles": Case({"num_particles": 3}),
        "batch_size": Case({"batch_size": 2}),
        "validation": Case({"validation": {"x": X4[:2]}}),
        "eval_every": Case({"eval_every": 2}, base={"validation": {"x": X4[:2]},
                                                    "eval_every": 1}),
        "eval_particles": Case({"eval_particles": 2}, base={"validation": {"x": X4[:2]},
                                                            "eval_every": 1}),
        "patience": Case({"patience": 1}),
        "checkpoint": Case({"checkpoint": CHECKPOINT}),
        "checkpoint_every": Case({"checkpoint_every": 1}, base={"checkpoint": CHECKPOINT}),
        "seed": Case({"seed": 1}),
        "num_samples": Case({"num_samples": 3}),
        "init": Case({"init": {"mu": 3.0}}),
        "progress": Case({"progress": True}),
        "clear_params": Case({"clear_params": False}, before=_stale_param),
        # Pyro's checks, data against supports included, run unless validate=False
        "validate": Case({"validate": True}, base={"validate": False}, model="coin_outside",
                         refused=True, naming="outside its support"),
    },
}


def _model(name: str) -> tuple[genppl.Model, dict[str, Any] | None]:
    if name == "nodata":  # nothing observed: the plate's size comes from sizes=
        return _mixture(), None
    if name == "coin_outside":  # a datum outside the Bernoulli's support
        return _coin(), {"x": torch.tensor([1.0, 0.0, 2.0], dtype=F64)}
    make, data = MODELS[name]
    return make(), data


def _every_option() -> list[tuple[str, str]]:
    return [(name, f.name) for name, engine in genppl.ENGINES.items()
            for f in dataclasses.fields(engine.options)]


def test_every_option_has_a_case() -> None:
    assert sorted(_every_option()) == sorted((e, o) for e, cases in CASES.items()
                                             for o in cases)


class _Terminal(io.StringIO):
    """Standard error as a terminal would be: progress bars are drawn on it."""

    def isatty(self) -> bool:
        return True


def _outcome(engine: str, model_name: str, options: dict[str, Any], case: Case,
             directory: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What a caller sees of one run: its results, its refusal, its files, its bars."""
    model, data = _model(case.model or model_name)
    options = {k: (str(directory) if v == CHECKPOINT else v) for k, v in options.items()}
    if case.before is not None:
        case.before()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run = getattr(genppl, case.call or ("fit" if genppl.ENGINES[engine].fit else "infer"))
    try:
        result = run(model, data, engine=engine, **options)
    except ModelError as e:
        seen: Any = ("refused", type(e).__name__, str(e))
    except _Called:
        seen = ("called back",)
    else:
        seen = _plain(result)
    finally:
        monkeypatch.undo()
    files = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    return seen, files, bool(terminal.getvalue())


def _plain(value: Any) -> Any:
    """``value`` as numbers, strings and containers of them (objects by their type only)."""
    if isinstance(value, (Posterior, FitResult)):
        fields = {k: v for k, v in vars(value).items() if k != "seconds"}
        return type(value).__name__, _plain(fields)
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.detach().cpu().reshape(-1).tolist()
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return type(value).__name__


@pytest.mark.parametrize(("engine", "option"), _every_option())
def test_an_option_changes_the_run_or_is_refused(engine: str, option: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[engine][option]
    model_name, base = BASE[engine]
    base = {**base, **case.base}
    before = _outcome(engine, model_name, base, case, tmp_path / "before", monkeypatch)
    after = _outcome(engine, model_name, {**base, **case.change}, case, tmp_path / "after",
                     monkeypatch)
    assert before[0][0] != "refused", before
    if case.refused:
        assert after[0][0] == "refused" and after[0][1] == "ModelError", after
        assert (case.naming or option) in after[0][2]
    else:
        assert after[0][0] != "refused", after
        assert after != before

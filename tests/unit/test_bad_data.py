"""Bad data gets a clear error when it is bound, never a traceback from deep in Pyro or torch
and never a silent NaN: NaN and infinite values (naming the node and the first bad index),
complex, empty, mistyped, misshaped, missing and unknown entries. A hypothesis fuzzer throws
random data dictionaries at ``genppl.infer``/``genppl.fit`` under several engines: each call
must answer or raise ``ModelError``."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _discrete() -> genppl.Model:
    m = genppl.Model("discrete")
    m.cpt("a", [], [0.3, 0.7])
    with m.plate("cases"):
        m.cpt("b", ["a"], [[0.9, 0.1], [0.2, 0.8]], observed=True)
    return m


def _continuous() -> genppl.Model:
    m = genppl.Model("continuous")
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    return m


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("engine", ["nuts", "svi", "prior"])
def test_non_finite_data_names_the_node_and_the_first_bad_index(bad: float,
                                                                  engine: str) -> None:
    x = torch.zeros(6)
    x[4] = bad
    x[5] = math.nan
    options: dict[str, Any] = {"progress": False}
    with pytest.raises(ModelError, match=r"observed node 'x' \(.*test_bad_data.py:\d+\) "
                       r"holds .* at index \(4,\) \(2 non-finite entries in all\); drop"):
        if engine == "svi":
            genppl.fit(_continuous(), {"x": x}, engine="svi", steps=1, **options)
        else:
            genppl.infer(_continuous(), {"x": x}, engine=engine, num_samples=2, **options)


def test_nan_in_a_latents_evidence_leaves_that_entry_unobserved_but_inf_is_refused() -> None:
    m = genppl.Model("hidden")
    m.cpt("a", [], [0.3, 0.7])
    with m.plate("cases"):
        m.cpt("b", ["a"], [[0.9, 0.1], [0.2, 0.8]])
    both = genppl.infer(m, {"b": torch.tensor([1.0, math.nan])}, engine="exact")
    one = genppl.infer(m, {"b": torch.tensor([1.0])}, engine="exact")
    assert both.log_evidence == pytest.approx(one.log_evidence, abs=1e-12)
    with pytest.raises(ModelError, match=r"latent node 'b' .* holds inf at index \(1,\)"):
        genppl.infer(m, {"b": torch.tensor([1.0, math.inf])}, engine="exact")


@pytest.mark.parametrize(("value", "message"), [
    (np.array([1j, 0]), "is complex"),
    (np.zeros(0), r"is empty \(shape \(0,\)\)"),
    ("abc", "cannot become a tensor"),
    ([[0.0], [1.0, 2.0]], "cannot become a tensor"),
])
@pytest.mark.parametrize("engine", ["exact", "enum", "gibbs", "prior"])
def test_unusable_values_are_refused_when_bound(value: Any, message: str, engine: str) -> None:
    options = {} if engine in ("exact", "enum") else {"num_samples": 2, "progress": False}
    with pytest.raises(ModelError, match=message):
        genppl.infer(_discrete(), {"b": value}, engine=engine, **options)


def test_a_simulation_refuses_held_data_outside_the_support() -> None:
    with pytest.raises(ModelError, match=r"node 'b' .* holds 5 at index \(1,\), outside"):
        genppl.infer(_discrete(), {"b": [0, 5]}, engine="prior", num_samples=1,
                     progress=False)
    with pytest.raises(ModelError, match="got data 'zzz', which is not a random node"):
        genppl.infer(_discrete(), {"b": [0, 1], "zzz": [1]}, engine="prior", num_samples=1,
                     progress=False)


def test_boolean_data_scores_as_zero_and_one() -> None:
    flags = torch.tensor([True, False, True])
    got = genppl.infer(_discrete(), {"b": flags}, engine="exact").log_evidence
    want = genppl.infer(_discrete(), {"b": flags.long()}, engine="exact").log_evidence
    assert got == pytest.approx(want, abs=1e-12)
    fit = genppl.fit(_continuous(), {"x": flags}, engine="svi", steps=2, progress=False)
    assert all(math.isfinite(loss) for loss in fit.losses)


# ---------------------------------------------------------------------------- fuzzing
_numbers = st.one_of(st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
                     st.booleans())
_arrays = st.builds(
    lambda shape, dtype, seed: np.random.default_rng(seed).normal(size=shape).astype(dtype)
    if dtype != "int64" else np.random.default_rng(seed).integers(-1, 3, size=shape),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.sampled_from(["float32", "float64", "int64", "bool", "complex64", "uint8"]),
    st.integers(0, 2**16))
_values = st.one_of(st.none(), _numbers, st.text(max_size=3), _arrays,
                    st.lists(_numbers, max_size=4),
                    st.lists(st.lists(_numbers, max_size=3), max_size=3))


def _data(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from([*names, "zzz"]), _values, max_size=3)


def _only_model_errors(call: Any) -> None:
    """Answering is fine and so is a ModelError; any other exception fails the test."""
    with contextlib.suppress(ModelError):
        call()


@pytest.mark.parametrize("engine", ["exact", "prior"])
@FUZZ
@given(data=_data(["a", "b"]))
def test_fuzzed_data_for_a_discrete_model(engine: str, data: dict[str, Any]) -> None:
    options = {} if engine == "exact" else {"num_samples": 1, "progress": False}
    _only_model_errors(lambda: genppl.infer(_discrete(), data, engine=engine, **options))


@pytest.mark.parametrize("engine", ["svi", "prior"])
@FUZZ
@given(data=_data(["mu", "x"]))
def test_fuzzed_data_for_a_continuous_model(engine: str, data: dict[str, Any]) -> None:
    if engine == "svi":
        _only_model_errors(lambda: genppl.fit(_continuous(), data, engine="svi", steps=1,
                                              progress=False))
    else:
        _only_model_errors(lambda: genppl.infer(_continuous(), data, engine="prior",
                                                num_samples=1, progress=False))


@pytest.mark.parametrize("engine", ["nuts", "svi", "enum", "prior"])
def test_data_of_the_wrong_shape_is_refused_by_every_engine(engine: str) -> None:
    """An extra axis: Pyro-based engines would broadcast it into another model (enum, prior)
    or fail deep in Pyro (nuts, svi); exact reads extra leading axes as evidence cases only
    where there are no plates, and says so."""
    model, data = ((_discrete(), {"b": [[0, 1], [1, 1]]}) if engine in ("enum", "prior")
                   else (_continuous(), {"x": torch.zeros(3, 2)}))
    options: dict[str, Any] = {"progress": False}
    with pytest.raises(ModelError, match=r"has shape \((2, 2|3, 2)\), which does not fit its "
                       r"distribution's shape \((2|3),\) \(plates \['(cases|data)'\]"):
        if engine == "svi":
            genppl.fit(model, data, engine="svi", steps=1, **options)
        elif engine == "enum":
            genppl.infer(model, data, engine="enum")
        else:
            genppl.infer(model, data, engine=engine, num_samples=1, **options)


@pytest.mark.parametrize("engine", ["nuts", "svi", "exact"])
def test_observed_values_outside_a_factorys_support_name_the_node(engine: str) -> None:
    m = genppl.Model("coins")
    m.cpt("biased", [], [0.5, 0.5])
    with m.plate("flips"):
        m.observed("x", lambda biased: dist.Bernoulli(torch.tensor([0.5, 0.9])[biased]))
    if engine == "nuts":
        m.latent("s", lambda: dist.Normal(0.0, 1.0))  # (something continuous to sample)
    data = {"x": torch.tensor([0.0, 1.0, 2.0])}
    with pytest.raises(ModelError, match=r"observed node 'x' .* holds 2.0 at index \(2,\), "
                       "outside its support"):
        if engine == "svi":
            genppl.fit(m, data, engine="svi", steps=1, progress=False)
        elif engine == "nuts":
            genppl.infer(m, data, engine="nuts", num_samples=1, progress=False)
        else:
            genppl.infer(m, data, engine="exact")

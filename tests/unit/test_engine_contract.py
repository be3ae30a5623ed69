"""The engine contract: options built and checked from each engine's dataclass, models refused
by what engines declare they run, and every list of engines (the default engine, the
gallery's samplers and their options, ``genppl engines``, ``docs/engines.md``) derived from
the declarations."""

from __future__ import annotations

import json
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl import ModelError
from genppl.cli import engines_markdown, main
from genppl.engines import ENGINES, PREFERENCE, Feature, Returns, model_features
from genppl.engines.contract import listing
from genppl.gallery import SAMPLERS, RunConfig, engine_options
from genppl.inference import default_engine

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[2] / "docs" / "engines.md"


def _normal() -> genppl.Model:
    m = genppl.Model("normal")
    m.latent("mu", lambda: dist.Normal(torch.tensor(0.0), 1.0))
    with m.plate("data"):
        m.observed("x", lambda mu: dist.Normal(mu, 1.0))
    return m


def _local_level() -> genppl.Model:
    """Continuous latents that all form one linear-Gaussian chain."""
    m = genppl.Model("level")
    with m.chain("t"):
        m.latent("level", lambda level_prev: dist.Normal(level_prev, 0.5),
                 init=lambda: dist.Normal(0.0, 2.0))
        m.observed("y", lambda level: dist.Normal(level, 1.0))
    return m


def _params_only() -> genppl.Model:
    m = genppl.Model("params")
    m.param("loc", torch.tensor(0.0))
    with m.plate("data"):
        m.observed("x", lambda loc: dist.Normal(loc, 1.0))
    return m


X = torch.tensor([0.3, -0.2, 1.1])


def test_docs_engine_table_is_generated_from_the_contracts() -> None:
    """docs/engines.md is what ``genppl engines --markdown`` prints; regenerate it with
    ``python -m genppl engines --markdown > docs/engines.md`` when this fails."""
    assert DOCS.read_text() == engines_markdown(listing())


def test_the_docs_table_follows_a_changed_contract() -> None:
    """The check above is not vacuous: another default changes the generated table."""
    rows = listing()
    nuts = next(r for r in rows if r["name"] == "nuts")
    next(o for o in nuts["options"] if o["name"] == "num_samples")["default"] = "501"
    assert engines_markdown(rows) != DOCS.read_text()


def test_genppl_engines_lists_returns_accepts_and_options(capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    assert main(["engines"]) == 0
    out = capsys.readouterr().out
    assert "returns draws; accepts finite, continuous" in out
    assert "num_samples=500" in out and "max_tree_depth=None" in out
    assert main(["engines", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["engines"]}
    assert sorted(rows) == sorted(ENGINES)
    gibbs = rows["gibbs"]
    assert gibbs["returns"] == ["draws"] and gibbs["provides"] == ["infer"]
    assert {"name": "checkpoint_every", "type": "int", "default": "200",
            "doc": "sweeps between two checkpoint saves"} in gibbs["options"]


def test_an_option_of_the_wrong_type_names_the_option_and_the_engine() -> None:
    with pytest.raises(ModelError, match=r"engine 'nuts': option num_samples= must be an int, "
                                         r"got '10'"):
        genppl.infer(_normal(), {"x": X}, engine="nuts", num_samples="10")
    with pytest.raises(ModelError, match=r"engine 'gibbs': option progress= must be a bool"):
        genppl.infer(_normal(), {"x": X}, engine="gibbs", progress=1)
    with pytest.raises(ModelError, match=r"option chain_method= must be one of 'auto', "
                                         r"'sequential', 'parallel'"):
        genppl.infer(_normal(), {"x": X}, engine="exact", chain_method="fast")


def test_a_model_an_engine_does_not_run_is_refused_naming_one_that_does() -> None:
    with pytest.raises(ModelError, match=r"model 'normal' holds continuous \(latent 'mu'\), "
                                         r"which engine 'cd' does not run.*use engine 'nuts'"):
        genppl.fit(_normal(), {"x": X}, engine="cd")
    with pytest.raises(ModelError, match=r"engine 'enum' does not run.*use engine 'nuts'"):
        genppl.infer(_normal(), {"x": X}, engine="enum")


def test_model_features_come_from_the_graph_and_the_data() -> None:
    assert model_features(_normal(), {"x": X}) == Feature.CONTINUOUS
    assert model_features(_normal(), {"x": X, "mu": torch.tensor(0.5)}) == Feature.NONE
    y = torch.tensor([0.1, 0.4, 0.2])
    assert model_features(_local_level(), {"y": y}) == Feature.GAUSSIAN_CHAINS


def test_the_default_engine_is_the_first_preferred_engine_that_runs_the_model() -> None:
    assert PREFERENCE == ("exact", "nuts", "svi")
    # linear-Gaussian chains: answered exactly (the Kalman filter)
    y = torch.tensor([0.1, 0.4, 0.2])
    assert default_engine(_local_level(), {"y": y}) == "exact"
    post = genppl.infer(_local_level(), {"y": y})
    assert post.engine == "exact" and post.log_evidence is not None
    # nothing latent: only params to fit
    assert default_engine(_params_only(), {"x": X}) == "svi"


def test_the_gallerys_samplers_and_their_options_come_from_the_contracts() -> None:
    assert set(SAMPLERS) == {"gibbs", "nuts", "hmc", "hmc_gibbs", "prior"}
    for name in SAMPLERS:
        assert Returns.DRAWS in ENGINES[name].returns
    config = RunConfig(seed=3, progress=False)
    assert engine_options("gibbs", config, draws=40) == {"num_samples": 40, "seed": 3,
                                                         "progress": False}
    assert engine_options("exact", config) == {}


def test_a_finite_latent_left_unsummed_is_still_finite_to_the_exact_engine() -> None:
    """``enumerate=False`` tells Pyro's engines to sample a finite latent rather than sum it
    out; its support is still finite, so the exact engine (which tabulates it) runs the model
    and is its default, and the answer is Bayes' rule."""
    m = genppl.Model("sampled_class")
    prior = torch.tensor([0.3, 0.7], dtype=torch.float64)
    m.latent("c", lambda: dist.Categorical(prior), enumerate=False)
    m.observed("x", lambda c: dist.Normal(c.double(), 1.0))
    m.to(dtype=torch.float64)
    data = {"x": torch.tensor(0.2, dtype=torch.float64)}
    assert model_features(m, data) == Feature.FINITE
    assert default_engine(m, data) == "exact"
    like = torch.distributions.Normal(torch.tensor([0.0, 1.0], dtype=torch.float64), 1.0)
    bayes = prior * like.log_prob(data["x"]).exp()
    got = genppl.infer(m, data, engine="exact").marginals["c"]
    torch.testing.assert_close(got, bayes / bayes.sum(), rtol=1e-12, atol=1e-12)

"""The engine contract, and the engines by name.

Every engine module declares one ``Engine`` (as NumPyro's ``MCMCKernel`` or BlackJAX's
``SamplingAlgorithm`` declare a sampler): what it returns (``Returns``), which models it
runs (``Feature``: what a model may hold, and what it must hold for the engine to have
anything to do), its options as a typed frozen dataclass (``genppl.runtime.options``) and its
drivers, ``infer(model, data, options) -> Posterior`` and/or ``fit(model, data, options) ->
FitResult``. Everything that lists or chooses engines reads these declarations: option
checking and the default engine (``genppl.inference``), the gallery's samplers and their
options (``genppl.gallery``), ``genppl engines`` and ``docs/engines.md``
(``genppl.engines.table``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest
from genppl.runtime.options import Role, build_options, fields, with_role
from genppl.runtime.params import FixedParams, param_values
from genppl.tabulation.prepared import prepare


class Returns(enum.Flag):
    """What an engine's answer holds."""

    DRAWS = enum.auto()  # Monte Carlo draws of the latents are the answer (a sampler)
    EXACT_DRAWS = enum.auto()  # exact joint posterior draws, on request
    MARGINALS = enum.auto()  # exact (or variational) marginals of the finite latents
    EVIDENCE = enum.auto()  # log p(data), exactly
    EVIDENCE_BOUND = enum.auto()  # a lower bound on log p(data) (an ELBO)
    MAP = enum.auto()  # the most probable joint assignment
    FIT = enum.auto()  # fitted params (or variational factors): a FitResult


class Feature(enum.Flag):
    """What a model (given its data) holds, as far as choosing an engine goes."""

    FINITE = enum.auto()  # finite latents (enumerable)
    CONTINUOUS = enum.auto()  # other latents, outside linear-Gaussian chains
    GAUSSIAN_CHAINS = enum.auto()  # continuous latents that all form linear-Gaussian chains
    FACTORS = enum.auto()  # undirected factors (potentials)
    NEURAL = enum.auto()  # neural modules
    IMPLICIT = enum.auto()  # implicit nodes: a sampler with no density (GAN generators)
    NONE = 0

    def names(self) -> list[str]:
        return _names(self)


#: The engine ``genppl.infer`` runs when none is named: the first of these that runs the
#: model and has something to do in it (exact where it can, then NUTS, then SVI).
PREFERENCE = ("exact", "nuts", "svi")


@dataclass(frozen=True)
class Engine:
    """An inference engine as ``genppl.infer``/``genppl.fit``, the CLI and the docs see it.

    ``accepts``: the features a model may hold for this engine to run it (anything else is
    refused by ``check``, naming an engine that runs it); ``needs``: features of which the
    model must hold at least one for the engine to have something to do (used when choosing
    the default engine; an engine refuses such a model itself, saying why)."""

    name: str
    description: str
    returns: Returns
    accepts: Feature
    needs: Feature
    options: type[Any]
    infer: Callable[[Model, dict[str, Any] | None, Any], Any] | None = None
    fit: Callable[[Model, dict[str, Any] | None, Any], Any] | None = None

    def build(self, given: Mapping[str, Any]) -> Any:
        """The engine's options from a caller's keywords (checked: see ``build_options``)."""
        return build_options(self.options, self.name, given)

    def runs(self, features: Feature) -> bool:
        """Whether this engine runs a model with ``features`` and has something to do in it."""
        return features in self.accepts and (not self.needs or bool(features & self.needs))

    def check(self, model: Model, data: Mapping[str, Any] | None) -> None:
        """Refuse a model holding what this engine cannot run, naming one that can. From the
        static graph alone, so it costs nothing (see ``model_features``)."""
        features = model_features(model, data, precise=False)
        extra = features & ~self.accepts
        if extra:
            raise ModelError(f"model {model.name!r} holds {', '.join(extra.names())} "
                             f"({_example(model, data, extra)}), which engine {self.name!r} "
                             f"does not run (it runs {', '.join(self.accepts.names())}); use "
                             f"engine {default_engine_for(features)!r}.")

    def call(self, driver: Callable[..., Any], model: Model, data: dict[str, Any] | None,
             options: Any) -> Any:
        """``driver(model, data, options)``; an engine that fits nothing (its options derive
        from ``FixedParams``) runs in a param store of its own holding ``options.params``
        (see ``param_values``)."""
        if not isinstance(options, FixedParams):
            return driver(model, data, options)
        with param_values(model, options.params):
            return driver(model, data, options)

    def option_with(self, role: Role) -> str | None:
        """The name of this engine's option that plays ``role``."""
        return with_role(self.options, role)


ENGINES: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    if engine.name in ENGINES:
        raise ValueError(f"engine {engine.name!r} is registered twice")
    ENGINES[engine.name] = engine
    return engine


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ModelError(f"unknown engine {name!r}." + suggest(name, ENGINES))
    return ENGINES[name]


def samplers() -> tuple[str, ...]:
    """Engines whose answer is Monte Carlo draws and that fit nothing."""
    return tuple(e.name for e in ENGINES.values()
                 if Returns.DRAWS in e.returns and Returns.FIT not in e.returns)


def listing() -> list[dict[str, Any]]:
    """Every registered engine as plain data (for ``genppl engines`` and
    ``docs/engines.md``): what it provides, returns, accepts and needs, and each option's
    type, default and documentation."""
    return [{"name": e.name, "description": e.description,
             "provides": [k for k in ("infer", "fit") if getattr(e, k) is not None],
             "returns": _names(e.returns), "accepts": e.accepts.names(),
             "needs": e.needs.names(),
             "options": [{"name": f.name, "type": str(f.type), "default": repr(f.default),
                          "doc": f.metadata["doc"]} for f in fields(e.options)]}
            for e in ENGINES.values()]


def _names(flags: enum.Flag) -> list[str]:
    return [f.name.lower() for f in type(flags) if f.value and f in flags]  # type: ignore[union-attr]


def default_engine_for(features: Feature) -> str:
    """The first engine of ``PREFERENCE`` that runs a model with ``features``."""
    for name in PREFERENCE:
        if ENGINES[name].runs(features):
            return name
    return PREFERENCE[-1]


def model_features(model: Model, data: Mapping[str, Any] | None, *,
                   precise: bool = True) -> Feature:
    """What ``model`` holds given ``data`` (a latent given a value counts as data), read from
    the static graph. Continuous latents on chains (linear-Gaussian or not) and latents whose
    family the graph could not see without data need a look at the compiled model with its
    data (a trace of it: a pass over the data); ``precise=False`` leaves them out instead, for
    a check that must cost nothing (the engine that runs the model says what is wrong with
    them)."""
    given = {k for k, v in (data or {}).items() if v is not None}
    features = Feature.NONE
    unknown = False
    for name, attrs in model.graph.nodes(data=True):
        kind, support = attrs["kind"], attrs["support"]
        if kind == "factor":
            features |= Feature.FACTORS
        elif kind == "module":
            features |= Feature.NEURAL
        elif kind == "latent" and name not in given:
            if support is None or (attrs["chain"] is not None and support != "finite"):
                unknown = True
            elif support == "finite":  # (summed or sampled: the engine's business)
                features |= Feature.FINITE
            else:
                features |= Feature.CONTINUOUS
    if unknown and precise:
        prep = prepare(model, data, collapse=True)
        features |= Feature.FINITE if prep.enumerated else Feature.NONE
        features |= Feature.CONTINUOUS if prep.continuous else Feature.NONE
        features |= Feature.GAUSSIAN_CHAINS if prep.gaussian is not None else Feature.NONE
    return features


def _example(model: Model, data: Mapping[str, Any] | None, features: Feature) -> str:
    """A node that gives ``model`` one of ``features``, for an error message."""
    given = {k for k, v in (data or {}).items() if v is not None}
    for name, attrs in model.graph.nodes(data=True):
        kind, support = attrs["kind"], attrs["support"]
        if ((Feature.FACTORS in features and kind == "factor")
                or (Feature.NEURAL in features and kind == "module")
                or (kind == "latent" and name not in given
                    and (Feature.FINITE in features) == (support == "finite"))):
            return f"{kind} {name!r}"
    return "see its graph"

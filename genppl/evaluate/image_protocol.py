"""The images protocol: held-out nats per test image of the 1,000 binarised test digits, for
any DSL model.

``images(model, estimator=...)`` scores a user's model of binary images on the digits of
``genppl.data.digits.binarised()`` (the images scale of ``genppl leaderboard images``) and
returns a ``Row``: the cost -log p(x) averaged over the test images, in nats per image, with
the estimator's standard error and the direction of its bound. Every estimator is the
library's own, run per image (the model's plate of images):

- ``"exact"``: ``genppl.infer(engine="exact", evidence_per=plate)``, finite latents summed
  out exactly (a mixture);
- ``"elbo"`` and ``"iwae"``: ``genppl.variational.evaluate(..., items=plate)`` under a guide
  (a fitted ``FitResult`` or an amortised DSL ``Guide``), lower bounds on log p(x);
- ``"ais"``: ``genppl.infer(engine="ais", per=plate)`` from the prior (Wu et al. 2017's
  evaluation of a decoder), or from ``guide`` when one is given (the encoder starts each
  image's chains near its posterior), a stochastic lower bound, usually tighter than IWAE.

``bdmc(model)`` says how far AIS is from the truth on the model itself: it simulates digits
(z, x) from the model, and anneals forwards (a stochastic lower bound on log p(x)) and in
reverse from the simulating z, an exact posterior draw (a stochastic upper bound); the gap
between the two sandwiches the true log-likelihood of those digits (Grosse et al. 2015, Wu
et al. 2017).

A conditional model (a CVAE) reads the label of each image as an input: name it with
``labels=``, and its row is in nats of log p(x | y).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import torch

from genppl.data import digits
from genppl.dsl.guide import Guide
from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest
from genppl.evaluate.rows import Row
from genppl.inference import infer
from genppl.results import FitResult
from genppl.variational.evaluate import evaluate, whole_plates

__all__ = ["BOUNDS", "UNIT", "AISSettings", "Sandwich", "bdmc", "images"]

UNIT = "nats/image"
#: Each estimator and the relation of its value to the true cost (``genppl.evaluate.rows``).
BOUNDS = {"exact": "exact", "elbo": "lower", "iwae": "lower", "ais": "lower"}


@dataclass(frozen=True)
class AISSettings:
    """The options of ``engine="ais"`` that the protocol passes on (docs/ais.md)."""

    num_temperatures: int = 500
    num_chains: int = 16
    leapfrog_steps: int = 10
    schedule: str = "sigmoid"


def images(model: Model, *, estimator: str,
           guide: FitResult | Guide | Callable[..., Any] | None = None,
           observed: str = "pixels", plate: str = "images", labels: str | None = None,
           test_images: torch.Tensor | None = None, test_labels: torch.Tensor | None = None,
           particles: int = 16, k: int = 1000, batch: int = 100,
           ais: AISSettings | None = None, params: Mapping[str, Any] | None = None,
           seed: int = 0, name: str | None = None, entry: str = "",
           command: str | None = None, settings: dict[str, Any] | None = None,
           diagnostics: dict[str, Any] | None = None) -> Row:
    """``model``'s cost on the test digits (``test_images``, default the 1,000 of
    ``genppl.data.digits``) by ``estimator`` (one of ``BOUNDS``; module docstring), as a
    ``Row`` in nats per image.

    ``observed`` is the model's node of an image's pixels, inside ``plate``; ``labels`` the
    input that reads each image's label (``test_labels``, default the test digits') in a
    conditional model. ``guide`` is needed by ``"elbo"`` (``particles`` draws per image)
    and ``"iwae"`` (IWAE-``k``), drawn ``batch`` at a time, and starts ``"ais"``'s path
    when given; ``ais`` sets the annealing
    (default ``AISSettings()``); ``params`` are the values of the model's params for
    ``"exact"`` and ``"ais"`` (a
    ``FitResult`` guide carries its own). ``settings`` and ``diagnostics`` are added to the
    row's (an AIS row's diagnostics hold the weights' effective sample sizes)."""
    if estimator not in BOUNDS:
        raise ValueError(f"genppl.evaluate.images: estimator={estimator!r}; pass one of "
                         f"{sorted(BOUNDS)}.")
    needs_guide = estimator in ("elbo", "iwae")
    if needs_guide and guide is None:
        raise ModelError(f"genppl.evaluate.images: estimator={estimator!r} draws from a guide; "
                         "pass guide= (a FitResult of engine='svi' or an amortised DSL Guide).")
    if estimator == "exact" and guide is not None:
        raise ValueError("genppl.evaluate.images: estimator='exact' uses no guide (it sums "
                         "the latents out); drop guide=.")
    data = _test_data(model, observed, plate, labels, test_images, test_labels)
    n = len(data[observed])
    ais = AISSettings() if ais is None else ais
    row_settings: dict[str, Any] = {"estimator": estimator, "images": n, "seed": seed}
    extra: dict[str, Any] = {}
    with pyro.get_param_store().scope():  # the model's own modules, whatever the store holds
        if estimator == "exact":
            post = infer(model, data, engine="exact", evidence_per=plate, params=params)
            log_p, stderr = float(post.info["log_evidence_per"].sum()), None
        elif estimator == "ais":
            post = infer(model, data, engine="ais", per=plate, params=params, seed=seed,
                         guide=guide, progress=False, **dataclasses.asdict(ais))
            log_p, stderr = post.log_evidence, post.info["stderr"] / n
            row_settings |= dataclasses.asdict(ais) | {"start": "prior" if guide is None
                                                      else "guide"}
            ess = post.info["ess_per"]
            extra = {"ess_mean": float(ess.mean()), "ess_min": float(ess.min()),
                     "acceptance": post.info["acceptance"]}
        else:
            assert guide is not None
            iwae = estimator == "iwae"
            ev = evaluate(model, guide, data, num_particles=particles,
                          iwae=k if iwae else None, batch=batch, items=plate, seed=seed)
            if iwae:
                assert ev.iwae is not None and ev.iwae_se is not None
                log_p, stderr = ev.iwae, ev.iwae_se / n
                row_settings |= {"k": k}
            else:
                log_p, stderr = ev.elbo, ev.elbo_se / n
                row_settings |= {"particles": particles}
    return Row(name or model.name, entry, _estimator_name(estimator, k), BOUNDS[estimator],
               -log_p / n, stderr, UNIT,
               command or f"genppl.evaluate.images(model, estimator={estimator!r})",
               dict(row_settings, **(settings or {})), dict(extra, **(diagnostics or {})))


def _estimator_name(estimator: str, k: int) -> str:
    return {"elbo": "ELBO", "iwae": f"IWAE-{k}", "ais": "AIS"}.get(estimator, estimator)


@dataclass(frozen=True)
class Sandwich:
    """Bidirectional Monte Carlo on ``images`` digits simulated from a model, in nats per
    image (costs, -log p): ``forward`` from forward AIS (at least the true cost, in
    expectation) and ``reverse`` from reverse AIS (at most), each with its standard error;
    ``simulated`` holds the simulated nodes (the images and the latents that drew them)."""

    forward: float
    forward_stderr: float
    reverse: float
    reverse_stderr: float
    images: int
    simulated: dict[str, torch.Tensor]

    @property
    def gap(self) -> float:
        """forward - reverse: how far either bound can be from the truth on these digits."""
        return self.forward - self.reverse

    def diagnostics(self) -> dict[str, float | int]:
        """The sandwich as a row's diagnostics (``bdmc_*``)."""
        return {"bdmc_forward": self.forward, "bdmc_forward_stderr": self.forward_stderr,
                "bdmc_reverse": self.reverse, "bdmc_reverse_stderr": self.reverse_stderr,
                "bdmc_gap": self.gap, "bdmc_images": self.images}


def bdmc(model: Model, *, num_images: int = 100, observed: str = "pixels",
         plate: str = "images", labels: str | None = None,
         test_labels: torch.Tensor | None = None, ais: AISSettings | None = None,
         params: Mapping[str, Any] | None = None, seed: int = 0) -> Sandwich:
    """Simulate ``num_images`` digits (z, x) from ``model`` (engine ``prior``; a conditional
    model draws them for the first ``num_images`` of ``test_labels``, default the test
    digits' labels) and anneal on them forwards and in reverse from the simulating latents,
    with the same ``ais`` settings (module docstring)."""
    if num_images < 1:
        raise ValueError(f"bdmc: num_images={num_images}; simulate at least one image.")
    _check_model(model, observed, plate, labels)
    ais = AISSettings() if ais is None else ais
    inputs = {} if labels is None else {labels: _labels(test_labels)[:num_images]}
    with pyro.get_param_store().scope(), whole_plates(model):
        draws = infer(model, inputs, engine="prior", sizes={plate: num_images},
                      num_samples=1, params=params, seed=seed, progress=False)
    latents = {name: draws[name][0] for name in model.names("latent")}
    data = {**inputs, observed: draws[observed][0]}
    bounds = []
    for reverse_from in (None, latents):
        with pyro.get_param_store().scope():
            post = infer(model, data, engine="ais", per=plate, params=params, seed=seed,
                         reverse_from=reverse_from, progress=False, **dataclasses.asdict(ais))
        bounds.append((-post.log_evidence / num_images, post.info["stderr"] / num_images))
    (forward, forward_se), (reverse, reverse_se) = bounds
    return Sandwich(forward, forward_se, reverse, reverse_se, num_images,
                    {**latents, observed: data[observed]})


def _labels(test_labels: torch.Tensor | None) -> torch.Tensor:
    return digits.binarised().test_labels if test_labels is None else test_labels


def _test_data(model: Model, observed: str, plate: str, labels: str | None,
               test_images: torch.Tensor | None, test_labels: torch.Tensor | None
               ) -> dict[str, torch.Tensor]:
    """The evaluation's data: the images (and labels) in the model's dtype and device."""
    _check_model(model, observed, plate, labels)
    if test_images is None:
        split = digits.binarised(model.dtype, model.device)
        test_images = split.test_images
        test_labels = split.test_labels if test_labels is None else test_labels
    if test_images.dim() < 2 or len(test_images) < 1:
        raise ValueError(f"genppl.evaluate.images: test_images of shape "
                         f"{tuple(test_images.shape)}; pass a batch of images, one per row.")
    data = {observed: test_images.to(model.device, model.dtype)}
    if labels is not None:
        if test_labels is None or len(test_labels) != len(test_images):
            raise ValueError(f"genppl.evaluate.images: labels={labels!r} needs test_labels, "
                             f"one per test image ({len(test_images)}).")
        data[labels] = test_labels.to(model.device)
    return data


def _check_model(model: Model, observed: str, plate: str, labels: str | None) -> None:
    """Refuse, by name, a plate, observed node or label input the model does not have (and
    what is not a model: a gallery entry's rows come from ``entry_rows``)."""
    where = "genppl.evaluate.images"
    if not isinstance(model, Model):
        hint = (f" A gallery entry's rows, computed together: "
                f"genppl.evaluate.entry_rows({model!r})." if isinstance(model, str) else "")
        raise ModelError(f"{where}: model must be a genppl.Model, not "
                         f"{type(model).__name__}.{hint}")
    if plate not in model.plates:
        raise ModelError(f"{where}: plate={plate!r} is not a plate of model {model.name!r}; "
                         "name the plate of images." + suggest(plate, model.plates))
    observed_names = model.names("observed")
    if observed not in observed_names:
        raise ModelError(f"{where}: observed={observed!r} is not an observed node of model "
                         f"{model.name!r}; name the node of an image's pixels."
                         + suggest(observed, observed_names))
    if plate not in model[observed].plates:
        raise ModelError(f"{where}: observed node {observed!r} is not inside plate "
                         f"{plate!r}; declare it in the plate of images.")
    inputs = model.names("input")
    if labels is None and inputs:
        raise ModelError(f"{where}: model {model.name!r} reads input {inputs[0]!r}; pass "
                         f"labels={inputs[0]!r} if it takes each image's label (a "
                         "conditional model, scored on log p(x | y)).")
    if labels is not None and labels not in inputs:
        raise ModelError(f"{where}: labels={labels!r} is not an input of model "
                         f"{model.name!r}." + suggest(labels, inputs))

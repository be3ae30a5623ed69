"""The DSL's overhead on a VAE: one SVI step of genppl (``fit``'s own step, and its compiled
model and guide under Pyro's ``SVI``) vs the same step written by hand in PyTorch and in Pyro.

The networks are ``models_gallery/vae_mnist.py``'s VAE (784 pixels, 256 hidden units, a
16-d latent), each contender with its own copy of the same initial weights; the data the
entry's 4,000 binarised MNIST training images (float32, on ``--device``); a step is one
minibatch of ``BATCH`` images drawn by a shared index stream, one reparameterised draw of z
per image, ``-ELBO`` scaled by N / batch (Bernoulli log-likelihood, and the KL term *sampled*
as log q(z) - log p(z), as Pyro's ``Trace_ELBO`` does: like with like), backward, and Adam
(lr 1e-3, no clipping). Each timed call makes ``STEPS`` steps. Contenders:

* **torch** (the baseline): the ELBO written out with ``torch.distributions`` and one
  ``torch.optim.Adam`` over both networks (torch's default implementation on the CPU, one
  parameter at a time); and the same with ``Adam(fused=True)``, the implementation genppl's
  step uses, to show what of genppl's figure is the optimiser's kernel;
* **pyro SVI, hand-written**: a plain Pyro model and guide (``pyro.module``, ``pyro.plate``
  with the batch's indices) under ``pyro.infer.SVI`` with ``Trace_ELBO`` and
  ``pyro.optim.Adam``: Pyro's own overhead;
* **genppl program, SVI**: the entry's compiled model and guide (``model.pyro_model``,
  ``guide.pyro_guide``) under the same ``SVI``: the compiled program's overhead on top of
  Pyro's;
* **genppl program, genppl step**: the same program stepped as ``genppl.fit`` steps it
  (``genppl.variational.step.SVIStep``: the ELBO's ``loss_and_grads``, then one
  ``JointOptimiser`` over all parameters, no ``pyro.infer.SVI``/``PyroOptim``);
* **genppl.fit**: ``genppl.fit(engine="svi", optimizer="adam", clip_norm=None)`` for
  ``STEPS`` steps, its own minibatch loader: everything a user runs, set-up included; with
  Pyro's default (validation on) and with ``validate=False``;
* the Pyro and genppl steps again with Pyro's validation off: the share of checking in
  Pyro's overhead.

The step functions compute the same loss from the same random numbers (unit-tested: equal
losses over several steps, so equal updates too). Pyro-based contenders each run in a param
store scope of their own (the names coincide), a few microseconds a step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import genppl
from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from genppl.variational.joint import JointOptimiser
from genppl.variational.minibatch import on_indices
from genppl.variational.optim import recipe
from genppl.variational.step import SVIStep
from models_gallery import vae_mnist

BATCH = vae_mnist.BATCH
STEPS, QUICK_STEPS = 50, 3
LR = 1e-3
TORCH = "torch ELBO step (hand-written)"
TORCH_FUSED = "torch ELBO step (hand-written), fused Adam"
PYRO = "pyro SVI step (hand-written model/guide)"
PROGRAM = "genppl compiled model/guide, pyro SVI step"
GENPPL = "genppl compiled model/guide, genppl step"
FIT = "genppl.fit svi (STEPS steps, set-up included)"
UNCHECKED = ", validation off"
Step = Callable[[torch.Tensor], float]


class Networks:
    """A copy of the entry's initial encoder and decoder on ``device`` (float32)."""

    def __init__(self, device: str, seed: int) -> None:
        model = vae_mnist.build(seed=seed)
        guide = vae_mnist.build_guide(model, seed=seed + 1)
        self.decoder: nn.Module = copy.deepcopy(model["decoder"].value).to(device, torch.float32)
        self.encoder: nn.Module = copy.deepcopy(guide["encoder"].value).to(device, torch.float32)


def torch_step(nets: Networks, pixels: torch.Tensor, fused: bool | None = None) -> Step:
    """The ELBO step by hand: z = loc + scale * eps (``rsample``), log p(x | z) + log p(z)
    - log q(z), scaled by N / batch, Adam (``fused``: torch's choice when None)."""
    optim = torch.optim.Adam([*nets.encoder.parameters(), *nets.decoder.parameters()], lr=LR,
                             fused=fused)
    size = len(pixels)
    zeros = torch.zeros(vae_mnist.LATENT_DIM, device=pixels.device)

    def step(idx: torch.Tensor) -> float:
        x = pixels[idx]
        loc, scale = nets.encoder(x)
        q = dist.Normal(loc, scale).to_event(1)
        z = q.rsample()
        log_px = dist.Bernoulli(logits=nets.decoder(z)).to_event(1).log_prob(x)
        log_pz = dist.Normal(zeros, 1.0).to_event(1).log_prob(z)
        loss = -(size / len(idx)) * (log_px + log_pz - q.log_prob(z)).sum()
        optim.zero_grad()
        loss.backward()
        optim.step()
        return float(loss.detach())

    return step


def _scoped(run: Callable[[torch.Tensor], Any]) -> Step:
    """``run`` in a param store of its own, kept from call to call."""
    state: dict[str, Any] = {"params": {}, "constraints": {}}

    def step(idx: torch.Tensor) -> float:
        with pyro.get_param_store().scope(state):
            return float(run(idx))
    return step


def pyro_step(nets: Networks, pixels: torch.Tensor) -> Step:
    """A plain Pyro model and guide with the same networks under ``SVI``."""
    size = len(pixels)
    zeros = torch.zeros(vae_mnist.LATENT_DIM, device=pixels.device)

    def model(idx: torch.Tensor) -> None:
        decoder = pyro.module("decoder", nets.decoder)
        with pyro.plate("images", size, subsample=idx):
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("pixels", dist.Bernoulli(logits=decoder(z)).to_event(1),
                        obs=pixels[idx])

    def guide(idx: torch.Tensor) -> None:
        encoder = pyro.module("encoder", nets.encoder)
        with pyro.plate("images", size, subsample=idx):
            pyro.sample("z", dist.Normal(*encoder(pixels[idx])).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), Trace_ELBO())
    return _scoped(svi.step)


def program_step(nets: Networks, pixels: torch.Tensor, genppl_step: bool = False) -> Step:
    """The gallery's compiled model and guide (minibatch plate of ``BATCH``), the batch's
    indices given to the plate as ``genppl.fit`` gives them; stepped by Pyro's ``SVI`` with
    ``pyro.optim.Adam``, or (``genppl_step``) as ``genppl.fit`` steps it."""
    model = vae_mnist.build(decoder=nets.decoder).to(pixels.device, torch.float32)
    guide = vae_mnist.build_guide(model, encoder=nets.encoder)
    indices: dict[str, torch.Tensor] = {}
    model_fn = on_indices(model.pyro_model, indices)
    guide_fn = on_indices(guide.pyro_guide, indices)
    if genppl_step:
        svi: Any = SVIStep(model_fn, guide_fn, Trace_ELBO(),
                           JointOptimiser(recipe("adam", lr=LR, clip_norm=None)))
    else:
        svi = SVI(model_fn, guide_fn, pyro.optim.Adam({"lr": LR}), Trace_ELBO()).step

    def run(idx: torch.Tensor) -> Any:
        indices["images"] = idx
        return svi(pixels=pixels)

    return _scoped(run)


def fit_run(nets: Networks, pixels: torch.Tensor, steps: int, seed: int,
            validate: bool | None = None) -> Callable[[], float]:
    """``steps`` steps of ``genppl.fit``; returns its last loss."""
    model = vae_mnist.build(decoder=nets.decoder).to(pixels.device, torch.float32)
    guide = vae_mnist.build_guide(model, encoder=nets.encoder)
    state: dict[str, Any] = {"params": {}, "constraints": {}}

    def run() -> float:
        with pyro.get_param_store().scope(state):
            result = genppl.fit(model, {"pixels": pixels}, engine="svi", guide=guide,
                                steps=steps, optimizer="adam", lr=LR, clip_norm=None,
                                seed=seed, progress=False, validate=validate)
        return result.losses[-1]

    return run


def unchecked(step: Step) -> Step:
    """``step`` with Pyro's validation off (``pyro.validation_enabled(False)``: no checks of
    distribution arguments, supports, site shapes, NaN and inf): how much of Pyro's cost
    over torch is checking. The torch row validates its distributions' arguments (torch's
    default) either way."""
    def run(idx: torch.Tensor) -> float:
        with pyro.validation_enabled(False):
            return step(idx)
    return run


def contenders(config: BenchConfig) -> list[Contender]:
    steps = QUICK_STEPS if config.quick else STEPS
    pixels = vae_mnist.load_mnist(torch.float32)[0].to(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    batches = [torch.randperm(len(pixels), generator=generator)[:BATCH].to(config.device)
               for _ in range(steps)]

    def timed(step: Step) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            losses = [step(idx) for idx in batches]
            return {"loss_per_image": losses[-1] / len(pixels), "steps": steps}
        return run

    def nets() -> Networks:
        return Networks(config.device, config.seed)

    def fit(validate: bool | None) -> Callable[[], dict[str, Any]]:
        run = fit_run(nets(), pixels, steps, config.seed, validate)
        return lambda: {"loss_per_image": run() / len(pixels), "steps": steps}

    fit_name = FIT.replace("STEPS", str(steps))
    return [
        Contender(TORCH, timed(torch_step(nets(), pixels))),
        Contender(TORCH_FUSED, timed(torch_step(nets(), pixels, fused=True))),
        Contender(PYRO, timed(pyro_step(nets(), pixels))),
        Contender(PROGRAM, timed(program_step(nets(), pixels))),
        Contender(GENPPL, timed(program_step(nets(), pixels, genppl_step=True))),
        Contender(fit_name, fit(None)),
        Contender(PYRO + UNCHECKED, timed(unchecked(pyro_step(nets(), pixels)))),
        Contender(PROGRAM + UNCHECKED, timed(unchecked(program_step(nets(), pixels)))),
        Contender(GENPPL + UNCHECKED,
                  timed(unchecked(program_step(nets(), pixels, genppl_step=True)))),
        Contender(fit_name + ", validate=False", fit(False)),
    ]


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The last call's training loss per image (same start, same kind of batches: the
    contenders train alike)."""
    return {name: {"loss_per_image": r["loss_per_image"]} for name, r in results.items()}


def notes(results: dict[str, Any]) -> list[str]:
    steps = next(iter(results.values()))["steps"]
    return [f"one timed call = {steps} SVI steps of {BATCH} of the 4,000 binarised MNIST "
            "images; time ratio = per-step cost relative to the hand-written torch step.",
            "networks: models_gallery/vae_mnist.py's VAE (784-256-16 MLPs), float32; Adam "
            "lr 1e-3 unclipped; the KL term sampled (Trace_ELBO) in every row.",
            "the genppl step (as genppl.fit steps) uses one fused torch Adam over all "
            "parameters where the device has the kernel; the torch row with fused Adam shows "
            "what of its figure is that kernel. Pyro's rows use pyro.optim.Adam (one torch "
            "Adam per parameter).",
            "genppl.fit's call includes its set-up (data preparation, a trace of the model, "
            "the param store and optimiser) and draws its own minibatches.",
            "target: genppl.fit's step within 1.15x of the torch step."]


CASE = register(Case(
    name="vae_svi_step",
    description="VAE on binarised MNIST: one SVI step, genppl vs hand-written Pyro and torch",
    baseline=TORCH,
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("loss_per_image", "last loss / image", ".1f"),),
    notes=notes,
))

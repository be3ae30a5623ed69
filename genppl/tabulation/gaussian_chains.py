"""A DSL chain read as a linear-Gaussian state-space model, and marginalised exactly.

A chain qualifies when every latent in it is a scalar ``dist.Normal`` whose ``loc`` is
affine in the chain's latents at the previous step and whose ``scale`` does not depend on
them (``level = Normal(level_prev, sigma_level)``, with an ``init=`` Normal for the first
step), and every observed node in it is a scalar ``dist.Normal`` whose ``loc`` is affine in
the latents at the same step, scale again free of them. The factories may read anything
else (params, global latents, inputs, the step index): they are called once per probe
point with every step at once (time as a tensor axis), and the coefficients are read off
the answers -- loc at 0, at each unit vector, and at a random point to check that it is
affine -- as EM reads parameter roles by probing (``genppl.engines.em``).

``GaussianChains(model).program`` is the model's Pyro program with each such chain replaced
by one ``pyro.factor`` of its exact log-likelihood (the Kalman filter of
``genppl.exact.gaussian``); it is what NUTS samples the global latents with, and what the
exact engine runs to get log p(data). ``last`` keeps each chain's state-space form from the
latest run, for smoothing and for posterior draws of the chain (FFBS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch

from genppl.dsl.model import Model
from genppl.dsl.nodes import Node
from genppl.errors import ModelError
from genppl.exact.gaussian import LinearGaussianChain, kalman_filter
from genppl.pyro.program import PyroProgram

_FIX = ("Declare latent chain nodes as dist.Normal(loc, scale) with loc affine in the "
        "previous step's latents (e.g. a * z_prev + b) and scale free of them, observed chain "
        "nodes likewise in the same step's latents, or use engine='nuts' or 'svi'.")


@dataclass(frozen=True)
class StateSpace:
    """One chain as a state-space model: its parameters, the observations ``y`` (T, M), and
    which node each state (``latents``) and observation (``observed``) coordinate is."""

    chain: LinearGaussianChain
    y: torch.Tensor
    latents: tuple[str, ...]
    observed: tuple[str, ...]


class GaussianChains:
    """The model with its linear-Gaussian chains marginalised (see the module docstring)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.last: dict[str, StateSpace] = {}
        self.program = PyroProgram(model, model.name, collapse=self._collapse)

    def _collapse(self, chain: str, values: dict[str, Any], data: dict[str, torch.Tensor],
                  length: int) -> None:
        space = state_space(self.model, chain, values, data, length)
        self.last[chain] = space
        pyro.factor(f"{chain}.log_likelihood",
                    kalman_filter(space.chain, space.y).log_likelihood)


def state_space(model: Model, chain: str, values: dict[str, Any],
                data: dict[str, torch.Tensor], length: int) -> StateSpace:
    """Read chain ``chain`` as a linear-Gaussian state-space model at the given values of
    the nodes outside it (``ModelError`` naming the node when it is not one)."""
    spec = model.chains[chain]
    nodes = [n for n in model.nodes.values() if n.chain == chain]
    where = f"chain {chain!r} ({spec.declared_at})"
    if spec.plates or spec.reverse:
        raise ModelError(f"{where}: linear-Gaussian chains are supported outside plates and "
                         "running forwards only; declare one sequence per model.")
    latents = tuple(n.name for n in nodes if n.kind == "latent")
    observed = tuple(n.name for n in nodes if n.kind == "observed")
    for n in nodes:
        if n.kind not in ("latent", "observed", "input"):
            raise ModelError(f"{n.kind} {n.name!r} ({n.declared_at}) is in {where}, which "
                             "is marginalised as a linear-Gaussian chain; only latent, "
                             "observed and input nodes can be. " + _FIX)
    probe = _Prober(model, chain, values, data, length, latents)
    trans = [probe.affine(model[name], lag=1) for name in latents]
    first = [probe.affine(model[name], lag=1, first=True) for name in latents]
    emit = [probe.affine(model[name], lag=0) for name in observed]
    steps = slice(1, None)
    chain_params = LinearGaussianChain(
        torch.stack([f[1][0] for f in first]),
        torch.diag_embed(torch.stack([f[2][0] for f in first]) ** 2),
        torch.stack([t[0][steps] for t in trans], -2),
        torch.stack([t[1][steps] for t in trans], -1),
        torch.diag_embed(torch.stack([t[2][steps] for t in trans], -1) ** 2),
        torch.stack([e[0] for e in emit], -2),
        torch.stack([e[1] for e in emit], -1),
        torch.diag_embed(torch.stack([e[2] for e in emit], -1) ** 2))
    y = torch.stack([data[name].reshape(length) for name in observed], -1)
    return StateSpace(chain_params, y, latents, observed)


class _Prober:
    """Calls chain factories with every step at once and chosen values of the latents."""

    def __init__(self, model: Model, chain: str, values: dict[str, Any],
                 data: dict[str, torch.Tensor], length: int, latents: tuple[str, ...]) -> None:
        self.model, self.chain, self.values, self.data = model, chain, values, data
        self.length, self.latents = length, latents
        self.like = torch.zeros(length, dtype=model.dtype, device=model.device)

    def affine(self, node: Node, *, lag: int, first: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(matrix (T, D), offset (T,), scale (T,))`` with loc = matrix @ z + offset, where
        z are the latents at step t - lag; ``first`` evaluates the first step's factory."""
        fn, parents = node.fn, node.parents
        if first and node.init_fn is not None:
            fn, parents = node.init_fn, node.init_parents
        wrong = [p.arg for p in parents if p.node in self.latents and p.lag != lag]
        if wrong:
            at = "the previous step" if lag else "the same step"
            raise ModelError(f"node {node.name!r} ({node.declared_at}) reads {wrong[0]!r}; in "
                             f"a linear-Gaussian chain a {node.kind} node reads latents at "
                             f"{at} only. " + _FIX)

        def call(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self._normal(node, fn, parents, dict(zip(self.latents, point, strict=True)))

        d = len(self.latents)
        zero = self.like.new_zeros(d)
        offset, scale = call(zero)
        columns = []
        for j, name in enumerate(self.latents):
            unit = zero.clone()
            unit[j] = 1.0
            loc, s = call(unit)
            columns.append(loc - offset)
            _same_scale(node, scale, s, name)
        matrix = torch.stack(columns, -1) if columns else self.like.new_zeros(self.length, 0)
        point = torch.linspace(-1.3, 2.1, d, dtype=zero.dtype, device=zero.device)
        loc, s = call(point)
        _same_scale(node, scale, s, "its latents")
        expected = offset + matrix @ point
        if not torch.allclose(loc, expected, rtol=1e-6, atol=1e-6 * float(
                expected.abs().max().clamp(min=1))):
            raise ModelError(f"node {node.name!r} ({node.declared_at}): its loc is not affine "
                             "in the chain's latents. " + _FIX)
        return matrix, offset, scale

    def _normal(self, node: Node, fn: Any, parents: tuple, point: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        from genppl.pyro.program import default_tensor_context

        steps = torch.arange(self.length, device=self.model.device)
        args = {}
        for p in parents:
            if p.node is None:
                args[p.arg] = steps
            elif p.node in point:
                args[p.arg] = point[p.node].expand(self.length)
            elif self.model[p.node].chain == self.chain:
                args[p.arg] = self.data[p.node]
            else:
                args[p.arg] = self.values[p.node]
        with default_tensor_context(self.model.device, self.model.dtype):
            try:
                d = fn(**args)
            except (ValueError, RuntimeError, TypeError, IndexError) as e:
                raise ModelError(f"node {node.name!r} ({node.declared_at}): its factory "
                                 f"failed when called with every step at once: {e}") from e
        if type(d) is not dist.Normal:
            raise ModelError(f"node {node.name!r} ({node.declared_at}) is "
                             f"{type(d).__name__}, not dist.Normal. " + _FIX)
        loc, scale = (x.expand(self.length) if x.dim() == 0 else x for x in (d.loc, d.scale))
        if loc.shape != (self.length,) or scale.shape != (self.length,):
            raise ModelError(f"node {node.name!r} ({node.declared_at}): a linear-Gaussian "
                             f"chain node is a scalar per step, got batch shape "
                             f"{tuple(d.batch_shape)} for {self.length} steps. " + _FIX)
        return loc, scale


def _same_scale(node: Node, scale: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if not torch.allclose(scale, other, rtol=1e-9, atol=0):
        raise ModelError(f"node {node.name!r} ({node.declared_at}): its scale changes with "
                         f"{name}. " + _FIX)

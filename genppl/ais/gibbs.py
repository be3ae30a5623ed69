"""Gibbs moves for the finite latents annealing carries in its state (``finite="gibbs"``).

Summing finite latents out of each particle's likelihood (``summed``) is exact but needs
their joint enumeration to fit in memory, and cannot put a continuous latent below a finite
one. Carried in the state instead, each finite latent is redrawn after every HMC transition
from its full conditional under the tempered target f_b: its own prior term and those of
its latent children at full weight, the data's terms at weight b (so at b = 0 the draw is
from the prior's conditional, at b = 1 from the posterior's). Each such draw leaves f_b
invariant, which is all the weights need (Neal 2001).

One draw updates a latent at every entry of its plates and in every chain at once: the
model runs with that latent alone enumerated in parallel (on the dim left of the chains'
plate) and the others fixed, and each site's log-probability is summed over the plates the
latent is not in. Entries of a plate are conditionally independent given everything
outside it, so their draws are independent. The latents are swept in the model's order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pyro.poutine.util import site_is_subsample

from genppl.errors import ModelError
from genppl.pyro.values import split_site

if TYPE_CHECKING:
    from genppl.ais.hmc import Point
    from genppl.ais.target import State, TemperedTarget


def gibbs_sweep(target: TemperedTarget, point: Point, beta: float) -> State:
    """New values of every finite latent the state carries, each drawn in turn from its
    full conditional under f_beta given the others' latest values (module docstring)."""
    finite = dict(point.finite)
    with torch.no_grad():
        for name in target.finite:
            finite[name] = _draw(target, point, finite, name, beta)
    return finite


def _draw(target: TemperedTarget, point: Point, finite: State, name: str, beta: float
          ) -> torch.Tensor:
    """Latent ``name`` redrawn at every entry and chain from its tempered conditional (a
    latent with event dimensions, which Pyro does not enumerate, coordinate by coordinate:
    each coordinate's states set in turn on the enumeration dim, the others held)."""
    others = {k: v for k, v in finite.items() if k != name}
    current = finite[name]
    fn = target.finite_fns[name]
    event_dim = fn.event_dim
    if event_dim == 0:
        _, trace = target._run(point.values, enumerate=True, fixed=others)
        trace.compute_log_prob()
        support = trace.nodes[name]["value"].reshape(-1)
        index = _conditional_draw(target, trace, trace.nodes[name], current.shape,
                                  len(support), beta)
        return support[index]
    support = _coordinate_support(target, name, fn)
    batch = current.shape[:current.dim() - event_dim]
    flat = current.reshape(*batch, -1).clone()
    for j in range(flat.shape[-1]):
        candidates = flat.unsqueeze(0).repeat(len(support), *([1] * flat.dim()))
        candidates[..., j] = support.reshape(-1, *([1] * (flat.dim() - 1)))
        fixed = others | {name: candidates.reshape(len(support), *current.shape)}
        _, trace = target._run(point.values, fixed=fixed)
        trace.compute_log_prob()
        index = _conditional_draw(target, trace, trace.nodes[name], batch, len(support), beta)
        flat[..., j] = support[index]
    return flat.reshape(current.shape)


def _coordinate_support(target: TemperedTarget, name: str, fn: Any) -> torch.Tensor:
    """The states every coordinate of finite latent ``name`` (distribution ``fn``, with
    event dimensions) takes: its base distribution's enumeration, shared by the
    coordinates."""
    base = getattr(fn, "base_dist", None)
    if base is None or not base.has_enumerate_support:
        node = target.model[split_site(name)[0]]
        raise ModelError(f"engine 'ais': latent {node.name!r} ({node.declared_at}) is finite "
                         "with event dimensions but not an independent product of "
                         "enumerable coordinates (.to_event of a Categorical or Bernoulli); "
                         "finite='gibbs' cannot move it.")
    return base.enumerate_support(expand=False).reshape(-1)


def _conditional_draw(target: TemperedTarget, trace: Any, site: dict[str, Any],
                      batch: torch.Size, states: int, beta: float) -> torch.Tensor:
    """Indices of the ``states`` a latent takes on the enumeration dim of ``trace``, drawn
    at every entry and chain (the latent's ``batch`` shape) from the tempered conditional."""
    width = target.nesting + 2  # the enumeration dim, the chains' dim, the plates'
    own = {f.dim for f in site["cond_indep_stack"] if f.dim is not None}
    total: torch.Tensor | None = None
    for node in trace.nodes.values():
        if node["type"] != "sample" or site_is_subsample(node):
            continue
        term = node["log_prob"]
        if term.dim() < width or term.shape[-width] == 1:
            continue  # it does not depend on the latent drawn
        term = term.reshape(term.shape[-width:]) if term.dim() > width else term
        plates = [d for d in range(-target.nesting, 0) if d not in own and term.shape[d] > 1]
        if plates:
            term = term.sum(plates, keepdim=True)
        weight = beta if node["is_observed"] else 1.0
        total = weight * term if total is None else total + weight * term
    if total is None:  # a support of one state: nothing to draw
        return torch.zeros(batch, dtype=torch.long, device=site["value"].device)
    shape = torch.broadcast_shapes(total.shape[1:], _padded(batch, width - 1))
    logits = total.expand(states, *shape).movedim(0, -1)
    if not bool(torch.isfinite(logits.max(-1).values).all()):
        node = target.model[split_site(site["name"])[0]]
        raise ModelError(f"engine 'ais': latent {node.name!r} ({node.declared_at}) has no "
                         "state of positive probability given the others and the data; the "
                         "data may have probability zero under the model.")
    return torch.distributions.Categorical(logits=logits).sample().reshape(batch)


def _padded(shape: Any, width: int) -> tuple[int, ...]:
    """``shape`` with ones on the left up to ``width`` dims."""
    return (1,) * (width - len(shape)) + tuple(shape)

"""Children of conjugate latents: expected log-likelihood tables and sufficient statistics.

A tabulated node (one ``Use`` of ``genppl.tabulation.uses``) whose distribution reads a
conjugate latent gets, from CAVI, its *expected* log table ``E_q[log p(value | parents)]``
in place of the factory's, and after the exact local step sends that latent the
expected sufficient statistics weighted by its cells' posterior probabilities. Both are
closed forms per child family (Categorical, Multinomial counts, Bernoulli, Normal, Poisson)
in the moments of
the latents it reads; which element of a latent each cell of the table reads is found once
by probing (``row_map``), so a factory may index its latents any way it likes
(``probs[z]``, ``theta[doc]``, ``mu[..., z]``) as long as the distribution's attribute *is*
the latent's element, as in EM's M-step (``genppl.engines.em``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import MaskedDistribution

from genppl.conjugacy.families import (
    BetaFactor,
    ConjugateFactor,
    DirichletFactor,
    GammaFactor,
    NormalFactor,
)
from genppl.distributions import COUNT_VECTORS, WordCounts
from genppl.errors import ModelError
from genppl.tabulation.uses import Use

#: (child distribution, attribute) -> the conjugate family that attribute may read.
READS: dict[tuple[type, str], type[ConjugateFactor]] = {
    (dist.Categorical, "probs"): DirichletFactor,
    (dist.Multinomial, "probs"): DirichletFactor,
    (WordCounts, "probs"): DirichletFactor,
    (dist.Bernoulli, "probs"): BetaFactor,
    (dist.Normal, "loc"): NormalFactor,
    (dist.Normal, "scale"): GammaFactor,  # as a precision: scale = precision ** -0.5
    (dist.Poisson, "rate"): GammaFactor,
}
#: The attribute a conjugate family is read through, by child distribution.
ATTRIBUTE = {(child, family): attr for (child, attr), family in READS.items()}


@dataclass(frozen=True)
class Reading:
    """A child reads latent ``target`` as ``attr``: table cell ``i`` reads row ``rows[i]``
    (``rows`` broadcasts against the child's table, own-state axis excluded)."""

    target: str
    attr: str
    rows: torch.Tensor


def _encode(q: ConjugateFactor, like: torch.Tensor, attr: str) -> torch.Tensor:
    """A value of latent ``q`` whose element in row ``r`` is recognisable from the child's
    attribute: probabilities ``(r + 1, 1, ..., 1) / (r + K)`` or ``(r + 1) / (R + 1)``,
    locations ``r``, scales ``r + 1`` (a precision of ``(r + 1) ** -2``), rates ``r + 1``."""
    r = torch.arange(q.rows, dtype=like.dtype, device=like.device)
    if isinstance(q, DirichletFactor):
        k = q.shape[-1]
        value = torch.ones(q.rows, k, dtype=like.dtype, device=like.device)
        value[:, 0] = r + 1
        return q.shaped(value / (r + k).unsqueeze(-1))
    if isinstance(q, BetaFactor):
        return q.shaped((r + 1) / (q.rows + 1))
    if isinstance(q, NormalFactor):
        return q.shaped(r)
    return q.shaped((r + 1) ** -2 if attr == "scale" else r + 1)


def _decode(q: ConjugateFactor, seen: torch.Tensor, attr: str) -> torch.Tensor:
    if isinstance(q, DirichletFactor):
        rows = seen[..., 0] / seen[..., 1] - 1
    elif isinstance(q, BetaFactor):
        rows = seen * (q.rows + 1) - 1
    elif isinstance(q, NormalFactor):
        rows = seen
    else:  # a precision read as a scale arrives as (r + 1) ** -2
        rows = (seen.rsqrt() if attr == "scale" else seen) - 1
    return rows.round().long()


def _random(q: ConjugateFactor, like: torch.Tensor, seed: int) -> torch.Tensor:
    """A random valid value of ``q``'s latent (to verify a decoded row map)."""
    g = torch.Generator(device=like.device).manual_seed(seed)
    u = torch.rand(q.shape, generator=g, dtype=like.dtype, device=like.device)
    if isinstance(q, DirichletFactor):
        u = u + 0.1
        return u / u.sum(-1, keepdim=True)
    if isinstance(q, BetaFactor):
        return 0.05 + 0.9 * u
    return 4 * u - 2 if isinstance(q, NormalFactor) else 0.5 + u


def _attribute(d: Any, attr: str, q: ConjugateFactor) -> torch.Tensor:
    """The child's attribute as the latent's element it reads (a scale as a precision)."""
    value = getattr(d, attr)
    return value ** -2 if isinstance(q, GammaFactor) and attr == "scale" else value


def find_readings(use: Use, factors: dict[str, ConjugateFactor], engine: str
                  ) -> dict[str, Reading]:
    """How ``use``'s factory reads the latents of ``factors``, by attribute (empty when it
    reads none of them); ``engine`` names the caller in errors."""
    readings: dict[str, Reading] = {}
    for p in use.parents:
        q = factors.get(p.node)
        if q is None:
            continue
        reading = row_map(use, p.arg, q, engine)
        if reading.attr in readings:
            raise ModelError(f"engine {engine!r}: node {use.node.name!r} "
                             f"({use.node.declared_at}) reads two latents as its "
                             f"{reading.attr}; one per parameter has a conjugate update.")
        readings[reading.attr] = reading
    return readings


def row_map(use: Use, arg: str, q: ConjugateFactor, engine: str = "cavi") -> Reading:
    """Which row of latent ``q`` each cell of ``use``'s table reads through factory argument
    ``arg``: decoded from the child's attribute at an encoded value of the latent, then
    verified at a random value (the attribute must *be* the element, e.g. no softmax)."""
    node = use.node
    base = use.base
    attr = ATTRIBUTE.get((type(base), type(q)))
    if attr is None:
        readable = sorted(f"{c.__name__}.{a}" for (c, a), f in READS.items() if f is type(q))
        raise ModelError(
            f"engine {engine!r}: node {node.name!r} ({node.declared_at}) is a "
            f"{type(base).__name__} reading latent {q.name!r}, whose {q.family} prior is "
            f"conjugate only as {' or '.join(readable)}. Use engine 'svi' or 'nuts', or "
            "give the latent a prior conjugate to how it is read.")
    like = getattr(base, attr)
    if not torch.is_floating_point(like):
        like = like.to(use.table.dtype)

    def call(value: torch.Tensor) -> torch.Tensor:
        d = use.fn(**{**use.args, arg: value})
        return _attribute(d.base_dist if isinstance(d, MaskedDistribution) else d, attr, q)

    rows = _verified_rows(q, like, attr, call)
    if rows is None:
        child = type(base).__name__
        raise ModelError(
            f"engine {engine!r}: node {node.name!r} ({node.declared_at}) reads latent {q.name!r}, "
            f"whose {q.family} prior is conjugate to a {child} only as its {attr}, but its "
            f"{attr} is not an element of {q.name!r} (a transform, sum or network of it has "
            f"no conjugate update). Read it directly, e.g. dist.{child}({attr}={q.name}[z]), "
            "or use engine 'svi'.")
    return Reading(q.name, attr, rows)


def _verified_rows(q: ConjugateFactor, like: torch.Tensor, attr: str,
                   call: Any) -> torch.Tensor | None:
    """The decoded row map, or None when the attribute is not the latent's element (the
    decoding is checked at a random value; a factory that rejects a value fails it too)."""
    probe = _random(q, like, seed=0)
    try:
        rows = _decode(q, call(_encode(q, like, attr)), attr)
        if not bool((rows >= 0).all() and (rows < q.rows).all()):
            return None
        seen, expected = call(probe), probe.reshape(q.stat_shape)[rows]
    except (ValueError, RuntimeError, IndexError):
        return None
    if seen.shape != expected.shape or not torch.allclose(seen, expected, rtol=1e-5, atol=0):
        return None
    return rows


# ----------------------------------------------------------------------- child families
def _cells(use: Use) -> tuple[torch.Tensor, bool]:
    """The values the table is evaluated at, broadcast like the table, and whether the node
    is a latent (its states then run along the table's last axis)."""
    if use.value is not None:
        return use.value, False
    states = use.table.shape[-1]
    grid = torch.arange(states, device=use.table.device).to(use.table.dtype)
    return grid.reshape((1,) * (use.table.dim() - 1) + (states,)), True


def _own(t: torch.Tensor, latent: bool) -> torch.Tensor:
    """A per-cell tensor aligned with the table (a latent's own-state axis added)."""
    return t.unsqueeze(-1) if latent else t


def _normal_moments(use: Use, readings: dict[str, Reading],
                    moments: dict[str, dict[str, torch.Tensor]], latent: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """E[loc], E[loc**2], E[precision], E[log precision] per cell."""
    base = use.base
    if "loc" in readings:
        r = readings["loc"]
        m = _own(moments[r.target]["mean"][r.rows], latent)
        m2 = _own(moments[r.target]["second"][r.rows], latent)
    else:
        m = _own(base.loc, latent)
        m2 = m ** 2
    if "scale" in readings:
        r = readings["scale"]
        tau = _own(moments[r.target]["mean"][r.rows], latent)
        log_tau = _own(moments[r.target]["log_mean"][r.rows], latent)
    else:
        scale = _own(base.scale, latent)
        tau, log_tau = scale ** -2, -2 * scale.log()
    return m, m2, tau, log_tau


def expected_table(use: Use, readings: dict[str, Reading],
                   moments: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """``E_q[log p(value | parents)]`` per cell of ``use``'s table."""
    base = use.base
    x, latent = _cells(use)
    shape = use.table.shape
    if isinstance(base, COUNT_VECTORS):  # observed count vectors (a latent one is not tabulated)
        r = readings["probs"]
        log_probs = moments[r.target]["log_probs"][r.rows]
        table = (x * log_probs).sum(-1) + _log_coefficient(x)
    elif isinstance(base, dist.Categorical):
        r = readings["probs"]
        log_probs = moments[r.target]["log_probs"]
        if latent:
            table = log_probs[r.rows]
        else:
            k = log_probs.shape[-1]
            index = r.rows * k + x.long()
            table = log_probs.reshape(-1)[index]
    elif isinstance(base, dist.Bernoulli):
        r = readings["probs"]
        lp = _own(moments[r.target]["log_p"][r.rows], latent)
        l1p = _own(moments[r.target]["log_1mp"][r.rows], latent)
        table = x * lp + (1 - x) * l1p
    elif isinstance(base, dist.Normal):
        m, m2, tau, log_tau = _normal_moments(use, readings, moments, latent)
        table = 0.5 * (log_tau - math.log(2 * math.pi)) - 0.5 * tau * (x * x - 2 * x * m + m2)
    else:  # Poisson
        r = readings["rate"]
        rate = _own(moments[r.target]["mean"][r.rows], latent)
        log_rate = _own(moments[r.target]["log_mean"][r.rows], latent)
        table = x * log_rate - rate - torch.lgamma(x + 1)
    return torch.broadcast_to(table, shape)


def _log_coefficient(x: torch.Tensor) -> torch.Tensor:
    """``log n! - sum_v log x_v!`` of count vectors ``x`` (last axis)."""
    return torch.lgamma(x.sum(-1) + 1) - torch.lgamma(x + 1).sum(-1)


def _scatter(sums: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> None:
    full = torch.broadcast_shapes(index.shape, weight.shape)
    sums.view(-1).index_add_(0, torch.broadcast_to(index, full).reshape(-1),
                             torch.broadcast_to(weight, full).reshape(-1))


def add_statistics(use: Use, reading: Reading, readings: dict[str, Reading],
                   weight: torch.Tensor, moments: dict[str, dict[str, torch.Tensor]],
                   sums: dict[str, torch.Tensor]) -> None:
    """Add to ``sums`` (latent ``reading.target``'s) the expected sufficient statistics of
    ``use``'s cells, weighted by their posterior probabilities ``weight`` (the gradient of
    the local log Z with respect to the table)."""
    base = use.base
    x, latent = _cells(use)
    rows = _own(reading.rows, latent)
    if isinstance(base, COUNT_VECTORS):
        k = sums["counts"].shape[-1]
        index = reading.rows.unsqueeze(-1) * k + torch.arange(k, device=weight.device)
        _scatter(sums["counts"], index, weight.unsqueeze(-1) * x)
    elif isinstance(base, dist.Categorical):
        k = sums["counts"].shape[-1]
        index = reading.rows.unsqueeze(-1) * k + torch.arange(k, device=weight.device) \
            if latent else reading.rows * k + x.long()
        _scatter(sums["counts"], index, weight)
    elif isinstance(base, dist.Bernoulli):
        _scatter(sums["ones"], rows, weight * x)
        _scatter(sums["zeros"], rows, weight * (1 - x))
    elif isinstance(base, dist.Normal):
        m, m2, tau, _ = _normal_moments(use, readings, moments, latent)
        if reading.attr == "loc":
            _scatter(sums["precision"], rows, weight * tau)
            _scatter(sums["weighted"], rows, weight * tau * x)
        else:
            _scatter(sums["shape"], rows, 0.5 * weight)
            _scatter(sums["rate"], rows, 0.5 * weight * (x * x - 2 * x * m + m2))
    else:  # Poisson rate
        _scatter(sums["shape"], rows, weight * x)
        _scatter(sums["rate"], rows, weight)

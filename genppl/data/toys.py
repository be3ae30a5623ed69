"""Two-dimensional toy densities for density estimation: two moons and concentric rings.

Written in torch rather than taken from scikit-learn's ``make_moons`` / ``make_circles`` for
two reasons: scikit-learn is not a dependency of genppl, and those functions place points at
evenly spaced angles, which is not an i.i.d. sample, so a held-out log-likelihood on them
would not estimate anything. Here every point is an independent draw (component, angle, and
Gaussian noise), so train and test sets come from one well-defined density.

Every generator draws on the CPU in float64 from its own ``torch.Generator`` seeded by
``seed`` (the global RNG is untouched), then moves the points to ``device``/``dtype``: the same
seed gives the same points on every device and in every precision (up to rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _finish(points: torch.Tensor, dtype: torch.dtype,
            device: str | torch.device) -> torch.Tensor:
    if not dtype.is_floating_point:
        raise ValueError(f"toy data: dtype must be floating point, got {dtype}.")
    return points.to(device=device, dtype=dtype)


def _check(n: int, noise: float) -> None:
    if n < 1:
        raise ValueError(f"toy data: n must be a positive number of points, got {n}.")
    if noise < 0:
        raise ValueError(f"toy data: noise is a standard deviation and must be >= 0, got {noise}.")


def two_moons(n: int, *, noise: float = 0.1, seed: int = 0,
              dtype: torch.dtype = torch.float64,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """``n`` i.i.d. points, shape (n, 2), from the two interleaved half circles of
    scikit-learn's ``make_moons`` (upper moon ``(cos t, sin t)``, lower moon
    ``(1 - cos t, 1/2 - sin t)``), each point on either moon with probability 1/2, at an
    angle ``t ~ U(0, π)``, plus isotropic Gaussian noise of standard deviation ``noise``."""
    _check(n, noise)
    g = torch.Generator().manual_seed(seed)
    lower = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
    t = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    upper_moon = torch.stack([torch.cos(t), torch.sin(t)], -1)
    lower_moon = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], -1)
    points = torch.where(lower[:, None], lower_moon, upper_moon)
    points = points + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return _finish(points, dtype, device)


def rings(n: int, *, radii: Sequence[float] = (1.0, 2.0), noise: float = 0.1, seed: int = 0,
          dtype: torch.dtype = torch.float64,
          device: str | torch.device = "cpu") -> torch.Tensor:
    """``n`` i.i.d. points, shape (n, 2), on concentric circles centred at the origin: each
    point picks a circle with probability proportional to its radius (so the points are
    equally dense along every circle), an angle ``θ ~ U(0, 2π)``, and gets isotropic Gaussian
    noise of standard deviation ``noise``. ``radii=(0.5, 1.0)`` is ``make_circles``' shape."""
    _check(n, noise)
    r = torch.as_tensor(list(radii), dtype=torch.float64)
    if r.dim() != 1 or len(r) == 0 or bool((r <= 0).any()):
        raise ValueError(f"rings: radii must be a non-empty list of positive numbers, "
                         f"got {list(radii)}.")
    g = torch.Generator().manual_seed(seed)
    which = torch.multinomial(r / r.sum(), n, replacement=True, generator=g)
    theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    points = r[which, None] * torch.stack([torch.cos(theta), torch.sin(theta)], -1)
    points = points + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return _finish(points, dtype, device)

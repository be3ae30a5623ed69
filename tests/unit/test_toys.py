"""The 2-D toy generators: reproducible by seed, in the asked dtype and device, and drawn from
the density they document (checked by exact moments with Monte Carlo z-tests, and exactly on
the noise-free curves)."""

from __future__ import annotations

import math

import pytest
import torch

from genppl.data.toys import rings, two_moons

pytestmark = pytest.mark.unit

GENERATORS = {"two_moons": two_moons, "rings": rings}


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_same_points_other_seed_other_points(name: str) -> None:
    make = GENERATORS[name]
    a, b, c = make(500, seed=3), make(500, seed=3), make(500, seed=4)
    assert a.shape == (500, 2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    make(10, seed=1)
    assert torch.equal(torch.rand(3), before)  # the global RNG is left alone


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_the_arguments(name: str, dtype: torch.dtype) -> None:
    make = GENERATORS[name]
    points = make(200, seed=0, dtype=dtype, device="cpu")
    assert points.dtype == dtype and points.device == torch.device("cpu")
    # The same draw in every precision: float32 is float64 rounded.
    assert torch.equal(points, make(200, seed=0).to(dtype))
    meta = make(5, seed=0, dtype=dtype, device="meta")
    assert meta.device.type == "meta" and meta.dtype == dtype


def test_two_moons_lie_on_their_half_circles_half_each() -> None:
    n = 4000
    x = two_moons(n, noise=0.0, seed=1)
    upper = (x.norm(dim=-1) - 1).abs() < 1e-12
    lower = ((x - torch.tensor([1.0, 0.5], dtype=x.dtype)).norm(dim=-1) - 1).abs() < 1e-12
    assert bool((upper | lower).all())
    assert bool((x[upper, 1] >= -1e-12).all()) and bool((x[lower, 1] <= 0.5 + 1e-12).all())
    # Each moon with probability 1/2: binomial z-test.
    share = float(upper.double().mean())
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / n), share


def test_two_moons_mean_matches_the_closed_form() -> None:
    """E[x] = ((0 + 1) / 2, (2/π + 1/2 - 2/π) / 2) = (1/2, 1/4), whatever the noise."""
    n = 20000
    x = two_moons(n, noise=0.2, seed=2)
    se = x.std(0) / math.sqrt(n)
    z = (x.mean(0) - torch.tensor([0.5, 0.25], dtype=x.dtype)) / se
    assert bool((z.abs() < 4).all()), z


def test_rings_radii_shares_and_noise() -> None:
    n = 20000
    radii = (1.0, 2.0, 3.0)
    clean = rings(n, radii=radii, noise=0.0, seed=5)
    r = clean.norm(dim=-1)
    which = torch.stack([(r - k).abs() < 1e-12 for k in radii], -1)
    assert bool(which.any(-1).all())  # every point on one of the circles
    # Circles chosen with probability proportional to the radius: z-test on each share.
    p = torch.tensor(radii, dtype=torch.float64) / sum(radii)
    z = (which.double().mean(0) - p) / (p * (1 - p) / n).sqrt()
    assert bool((z.abs() < 4).all()), z
    # Angles uniform: E[cos θ] = E[sin θ] = 0.
    unit = clean / r[:, None]
    assert bool((unit.mean(0).abs() < 4 * math.sqrt(0.5 / n)).all())
    # Isotropic noise of sd s adds exactly 2 s² to E||x||² = E[r²].
    s = 0.3
    noisy = rings(n, radii=radii, noise=s, seed=6)
    sq = noisy.pow(2).sum(-1)
    expected = float((p * torch.tensor(radii, dtype=torch.float64) ** 2).sum()) + 2 * s * s
    assert abs(float(sq.mean()) - expected) < 4 * float(sq.std()) / math.sqrt(n)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: two_moons(0), "n must be"),
    (lambda: rings(10, noise=-0.1), "noise"),
    (lambda: rings(10, radii=()), "radii"),
    (lambda: rings(10, radii=(1.0, -2.0)), "radii"),
    (lambda: two_moons(10, dtype=torch.int64), "dtype"),
])
def test_bad_arguments_are_named(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]

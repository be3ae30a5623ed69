"""The compiled program refuses a distribution whose batch shape has an axis no plate
explains, instead of drawing or scoring it as if each entry of that axis were a plate's: a
factory that indexes a param along the wrong axis (``probs[:, z]``) or forgets
``.to_event``. Drawing from the prior is where nothing else would notice."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit


def mixture(index_right: bool) -> genppl.Model:
    """z_n ~ Cat(w); pixel j of image n ~ Bernoulli(probs[j, z_n]), written with Vindex
    (right in Pyro's layout) or as ``probs[:, z]`` (a (pixels, images, 1) batch)."""
    m = genppl.Model("mixture")
    m.param("w", torch.tensor([0.3, 0.7]), constraint=dist.constraints.simplex)
    m.param("probs", torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.5, 0.5]]),
            constraint=dist.constraints.unit_interval)
    with m.plate("images"):
        m.latent("z", lambda w: dist.Categorical(w))
        with m.plate("pixels", 3):
            if index_right:
                m.observed("x", lambda z, probs: dist.Bernoulli(Vindex(probs)[..., z]))
            else:
                m.observed("x", lambda z, probs: dist.Bernoulli(probs[:, z]))
    return m


def test_a_param_indexed_along_the_wrong_axis_is_refused_when_drawing() -> None:
    with pytest.raises(ModelError, match=r"node 'x' .*batch shape \(3, 5, 1\).*axis -3 of "
                                         r"size 3 is no plate's axis.*Vindex"):
        genppl.infer(mixture(False), None, engine="prior", sizes={"images": 5},
                     num_samples=2, seed=0, progress=False)


def test_vindex_draws_one_value_per_plate_entry() -> None:
    post = genppl.infer(mixture(True), None, engine="prior", sizes={"images": 5},
                        num_samples=200, seed=0, progress=False)
    x, z = post.samples["x"], post.samples["z"]
    assert x.shape[-2:] == (5, 3) and z.shape[-1] == 5
    # pixel 0 is on with probability 0.1 in component 0, 0.9 in component 1
    on = x[..., 0].flatten()[z.flatten() == 1].double().mean()
    assert 0.8 < float(on) < 0.97


def test_a_missing_to_event_is_refused_naming_the_plate() -> None:
    m = genppl.Model("no_event")
    with m.plate("items"):
        m.latent("v", lambda: dist.Normal(torch.zeros(4), 1.0))
    with pytest.raises(ModelError, match=r"node 'v' .*axis -1 of size 4 is the axis of plate "
                                         r"'items' \(size 6\).*to_event"):
        genppl.infer(m, None, engine="prior", sizes={"items": 6}, num_samples=1, seed=0,
                     progress=False)

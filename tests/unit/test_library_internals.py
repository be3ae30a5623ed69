"""The private attributes of torch and Pyro that genppl reads, each in one place
(``genppl.exact.tensor_versions``, ``genppl.tabulation.library_internals``): each test fails
with the attribute's name if a new torch or Pyro drops it or changes what it means."""

from __future__ import annotations

import copy

import pyro.distributions as dist
import pytest
import torch

from genppl.exact.tensor_versions import version
from genppl.tabulation.library_internals import categories, mask_of, with_batch_shape

pytestmark = pytest.mark.unit


def _provided(obj: object, attribute: str, owner: str) -> None:
    assert hasattr(obj, attribute), (
        f"{owner}.{attribute} is gone: genppl reads it (see genppl.exact.tensor_versions and "
        "genppl.tabulation.library_internals); find its replacement in this release.")


def test_tensor_version_counts_in_place_edits() -> None:
    t = torch.zeros(3)
    _provided(t, "_version", "torch.Tensor")
    before = version(t)
    t.add_(1.0)
    assert version(t) > before, "torch.Tensor._version no longer moves on an in-place edit"
    assert version(t + 1.0) == 0, "torch.Tensor._version of a new tensor is no longer 0"
    with torch.inference_mode():
        assert version(torch.zeros(2)) == -1  # inference tensors have no counter


def test_masked_distribution_keeps_its_mask_apart() -> None:
    mask = torch.tensor([True, False, True])
    d = dist.Categorical(logits=torch.zeros(3, 4)).mask(mask)
    _provided(d, "_mask", "pyro.distributions.MaskedDistribution")
    assert mask_of(d) is mask, "MaskedDistribution._mask is no longer the mask given"


@pytest.mark.parametrize("kind", [torch.distributions.Categorical, dist.Categorical])
def test_categorical_counts_its_categories(kind: type) -> None:
    d = kind(probs=torch.full((2, 5), 0.2))
    _provided(d, "_num_events", f"{kind.__module__}.Categorical")
    assert categories(d) == 5, "Categorical._num_events is no longer the number of categories"
    assert "logits" not in vars(d), "reading the count worked out the logits"


def test_distribution_batch_shape_can_be_set_on_a_copy() -> None:
    """As the tabulation cuts a distribution's broadcast parameters down: a copy with
    smaller parameters takes the smaller batch shape."""
    d = dist.Normal(torch.zeros(4, 3), 1.0)
    _provided(d, "_batch_shape", "torch.distributions.Distribution")
    new = copy.copy(d)
    new.loc, new.scale = torch.zeros(1, 3), torch.ones(1, 3)
    out = with_batch_shape(new, torch.Size((1, 3)))
    assert out is new and out.batch_shape == (1, 3), \
        "Distribution.batch_shape no longer reads Distribution._batch_shape"
    assert d.batch_shape == (4, 3)  # the original is untouched
    assert out.log_prob(torch.zeros(2, 1, 3)).shape == (2, 1, 3)

"""The private attributes of torch and Pyro that genppl reads, each in one place
(``genppl.library_internals``): each test fails
with the attribute's name if a new torch or Pyro drops it or changes what it means."""

from __future__ import annotations

import copy

import pyro.distributions as dist
import pytest
import torch

from genppl.library_internals import (
    categories,
    fused_kernel_devices,
    given_parameter,
    inner_categorical,
    mask_of,
    validates,
    version,
    with_batch_shape,
)

pytestmark = pytest.mark.unit


def _provided(obj: object, attribute: str, owner: str) -> None:
    assert hasattr(obj, attribute), (
        f"{owner}.{attribute} is gone: genppl reads it (see genppl.library_internals); find "
        "its replacement in this release.")


def test_validates_reads_the_distributions_own_switch() -> None:
    _provided(dist.Normal(0.0, 1.0), "_validate_args", "torch.distributions.Distribution")
    assert validates(dist.Normal(0.0, 1.0, validate_args=True))
    assert not validates(dist.Normal(0.0, 1.0, validate_args=False))


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


@pytest.mark.parametrize("kind", [torch.distributions.Multinomial, dist.Multinomial,
                                  torch.distributions.OneHotCategorical])
def test_count_vectors_keep_their_categorical(kind: type) -> None:
    d = kind(probs=torch.tensor([0.25, 0.75])) if "Multinomial" not in kind.__name__ \
        else kind(3, probs=torch.tensor([0.25, 0.75]))
    _provided(d, "_categorical", f"{kind.__module__}.{kind.__name__}")
    inner = inner_categorical(d)
    assert isinstance(inner, torch.distributions.Categorical), \
        f"{kind.__name__}._categorical is no longer a Categorical"
    assert torch.equal(inner.probs, d.probs)


def test_categorical_remembers_the_parameter_it_was_made_from() -> None:
    from_probs = torch.distributions.Categorical(probs=torch.tensor([0.5, 0.5]))
    assert given_parameter(from_probs) is vars(from_probs)["probs"], \
        "Categorical._param is no longer the probs it was made from"
    from_logits = torch.distributions.Categorical(logits=torch.zeros(2))
    assert given_parameter(from_logits) is vars(from_logits)["logits"]


def test_fused_optimiser_devices_are_listed() -> None:
    devices = fused_kernel_devices()
    assert "cuda" in devices, \
        "torch.utils._foreach_utils._get_fused_kernels_supported_devices no longer lists cuda"

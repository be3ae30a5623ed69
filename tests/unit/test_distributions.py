"""``genppl.distributions.WordCounts``: the probs and logits forms are one distribution."""

from __future__ import annotations

import pytest
import torch

from genppl.distributions import WordCounts

pytestmark = pytest.mark.unit

F64 = torch.float64


def test_probs_and_logits_give_one_density_and_expand_alike() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, 5, generator=g, dtype=F64), -1)
    total = torch.tensor([4.0, 0.0, 7.0], dtype=F64)
    counts = torch.tensor([[1.0, 0, 2, 0, 1], [0, 0, 0, 0, 0], [3, 1, 0, 2, 1]], dtype=F64)
    a, b = WordCounts(total, probs=probs), WordCounts(total, probs.log() + 1.0)  # unnormalised
    torch.testing.assert_close(a.log_prob(counts), b.log_prob(counts), rtol=0, atol=1e-12)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-12)
    assert a.probs is not None and torch.equal(a.probs, probs)
    wide = a.expand(torch.Size([2, 3]))
    assert wide.batch_shape == (2, 3) and torch.equal(wide.probs[1], probs)
    torch.testing.assert_close(wide.log_prob(counts), a.log_prob(counts).expand(2, 3))


def test_exactly_one_parameterisation_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        WordCounts(torch.ones(1), torch.zeros(1, 2), probs=torch.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="exactly one"):
        WordCounts(torch.ones(1))

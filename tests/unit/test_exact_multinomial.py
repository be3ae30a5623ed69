"""``engine="exact"`` on a multinomial naive Bayes over a plate of documents: with the class
prior and word distributions (root Dirichlet latents) given as values, every document's class
posterior and the log evidence equal Bayes' rule by hand; evidence with NaN entries leaves
those entries unobserved (semi-supervised labels), elsewhere it pins the class."""

from __future__ import annotations

import naive_bayes_counts
import pyro
import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit
F64 = torch.float64
K, V, D = 3, 5, 12


@pytest.fixture(autouse=True)
def _fresh_params() -> None:
    pyro.clear_param_store()


def naive_bayes(dtype: torch.dtype = F64) -> genppl.Model:
    """Naive Bayes on count vectors (``naive_bayes_counts``) at a small size:
    a flat Dirichlet on the class prior, Dirichlet(2) on each class's words."""
    return naive_bayes_counts.build(V, K).to(dtype=dtype)


def problem(dtype: torch.dtype = F64) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(data with fitted-looking values of prior and words, log p(c, counts) per doc)."""
    g = torch.Generator().manual_seed(0)
    prior = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    words = torch.softmax(torch.randn(K, V, generator=g, dtype=F64), -1)
    counts = torch.randint(0, 6, (D, V), generator=g).to(F64)
    log_joint = prior.log() + torch.stack(
        [dist.Multinomial(int(counts.sum(-1).max()), probs=words[k]).log_prob(counts)
         for k in range(K)], -1)
    values = {"prior": prior, "words": words, "counts": counts, "length": counts.sum(-1)}
    return {k: v.to(dtype) for k, v in values.items()}, log_joint


def test_class_posteriors_and_evidence_are_bayes_rule() -> None:
    data, log_joint = problem()
    post = genppl.infer(naive_bayes(), data, engine="exact")
    torch.testing.assert_close(post.marginals["c"], torch.softmax(log_joint, -1), rtol=1e-12,
                               atol=1e-14)
    assert post.log_evidence == pytest.approx(float(torch.logsumexp(log_joint, -1).sum()),
                                              rel=1e-12)


def test_nan_evidence_entries_stay_unobserved() -> None:
    data, log_joint = problem()
    labels = torch.full((D,), float("nan"), dtype=F64)
    labels[:4] = torch.tensor([2.0, 0.0, 1.0, 1.0], dtype=F64)
    post = genppl.infer(naive_bayes(), data | {"c": labels}, engine="exact")
    expected = torch.softmax(log_joint, -1)
    expected[:4] = torch.nn.functional.one_hot(labels[:4].long(), K).to(F64)
    torch.testing.assert_close(post.marginals["c"], expected, rtol=1e-12, atol=1e-14)
    known = log_joint[torch.arange(4), labels[:4].long()].sum()
    assert post.log_evidence == pytest.approx(
        float(known + torch.logsumexp(log_joint[4:], -1).sum()), rel=1e-12)


def test_all_nan_evidence_is_no_evidence() -> None:
    data, log_joint = problem()
    post = genppl.infer(naive_bayes(), data | {"c": torch.full((D,), float("nan"),
                                                               dtype=F64)}, engine="exact")
    torch.testing.assert_close(post.marginals["c"], torch.softmax(log_joint, -1), rtol=1e-12,
                               atol=1e-14)


def test_float32_follows_the_model() -> None:
    data, log_joint = problem(torch.float32)
    post = genppl.infer(naive_bayes(torch.float32), data, engine="exact")
    assert post.marginals["c"].dtype == torch.float32
    torch.testing.assert_close(post.marginals["c"].double(), torch.softmax(log_joint, -1),
                               rtol=0, atol=1e-5)


def test_given_values_are_checked() -> None:
    data, _ = problem()
    with pytest.raises(ModelError, match=r"'words'.*needs shape \(3, 5\)"):
        genppl.infer(naive_bayes(), data | {"words": data["words"][:2]}, engine="exact")
    with pytest.raises(ModelError, match=r"'prior'.*values in Simplex"):
        genppl.infer(naive_bayes(), data | {"prior": torch.tensor([0.5, 0.6, 0.1])},
                     engine="exact")
    missing = {k: v for k, v in data.items() if k != "words"}
    with pytest.raises(ModelError, match="'words'"):  # still a continuous latent to integrate
        genppl.infer(naive_bayes(), missing, engine="exact")

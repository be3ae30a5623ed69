"""``engine="svi"`` on a multinomial naive Bayes: data for the class latent conditions the
compiled Pyro model on it (the joint density by hand), a delta guide then reaches the
closed-form MAP (add-one smoothed counts), and without labels the class is summed out by
enumeration (the loss is the negative log marginal joint, by hand)."""

from __future__ import annotations

import naive_bayes_counts
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import genppl

pytestmark = pytest.mark.unit
F64 = torch.float64
K, V, D = 3, 5, 30


@pytest.fixture(autouse=True)
def _fresh_params() -> None:
    pyro.clear_param_store()


def naive_bayes() -> genppl.Model:
    """Naive Bayes on count vectors (``naive_bayes_counts``) at a small size:
    a flat Dirichlet on the class prior, Dirichlet(2) on each class's words."""
    return naive_bayes_counts.build(V, K).to(dtype=F64)


def corpus() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    words = torch.softmax(2 * torch.randn(K, V, generator=g, dtype=F64), -1)
    c = torch.randint(K, (D,), generator=g)
    counts = torch.stack([torch.multinomial(words[k], 20, replacement=True, generator=g)
                          .bincount(minlength=V) for k in c.tolist()]).to(F64)
    return {"counts": counts, "length": counts.sum(-1), "c": c}


def log_priors(prior: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    return dist.Dirichlet(torch.ones(K, dtype=F64)).log_prob(prior) + \
        dist.Dirichlet(torch.full((V,), 2.0, dtype=F64)).log_prob(words).sum()


def per_class(counts: torch.Tensor, prior: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """log p(c = k, counts_d | prior, words), (D, K)."""
    n = int(counts.sum(-1).max())
    return prior.log() + torch.stack([dist.Multinomial(n, probs=words[k]).log_prob(counts)
                                      for k in range(K)], -1)


def test_data_for_a_latent_conditions_the_pyro_model() -> None:
    data = corpus()
    g = torch.Generator().manual_seed(1)
    values = {"prior": torch.tensor([0.3, 0.3, 0.4], dtype=F64),
              "words": torch.softmax(torch.randn(K, V, generator=g, dtype=F64), -1)}
    model = naive_bayes()
    trace = poutine.trace(poutine.condition(model.pyro_model, values)).get_trace(**data)
    assert trace.nodes["c"]["is_observed"]
    assert torch.equal(trace.nodes["c"]["value"], data["c"])
    joint = per_class(data["counts"], **values)[torch.arange(D), data["c"]].sum()
    assert float(trace.log_prob_sum()) == pytest.approx(float(joint + log_priors(**values)),
                                                        rel=1e-12)


def test_delta_guide_with_labels_reaches_the_add_one_map() -> None:
    data = corpus()
    fit = genppl.fit(naive_bayes(), data, engine="svi", guide="delta", steps=200, lr=1.0,
                     lrd=0.01 ** (1 / 200), seed=0, progress=False)
    point = fit.info["guide"].median(**data)
    onehot = torch.nn.functional.one_hot(data["c"], K).to(F64)
    n_cw = onehot.T @ data["counts"]
    # A deterministic objective (no latent is sampled): the tolerance is the optimiser's.
    torch.testing.assert_close(point["prior"], onehot.mean(0), rtol=0, atol=1e-4)
    torch.testing.assert_close(point["words"], (n_cw + 1) / (n_cw.sum(-1, keepdim=True) + V),
                               rtol=0, atol=1e-4)


def test_without_labels_the_class_is_summed_out() -> None:
    data = corpus()
    unlabelled = {k: v for k, v in data.items() if k != "c"}
    fit = genppl.fit(naive_bayes(), unlabelled, engine="svi", guide="delta", steps=3, lr=0.01,
                     seed=0, progress=False)
    point = {k: v.detach() for k, v in fit.info["guide"].median(**unlabelled).items()}
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.loss(naive_bayes().pyro_model, fit.info["guide"], **unlabelled)
    marginal = torch.logsumexp(per_class(data["counts"], **point), -1).sum()
    assert loss == pytest.approx(-float(marginal + log_priors(**point)), rel=1e-10)

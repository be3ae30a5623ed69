"""``engine="em"`` with a ``Multinomial`` observation reading a param (or a point-estimated
Dirichlet latent) as its probabilities: naive Bayes' word distributions. Complete data give
the closed-form counts (Laplace smoothing from a Dirichlet(2) prior, or pseudo-counts);
hidden classes give one exact EM step computed by hand (Bayes' rule for the
responsibilities, then weighted counts), and an objective that never decreases."""

from __future__ import annotations

import naive_bayes_counts
import pyro
import pyro.distributions as dist
import pytest
import torch

import genppl

pytestmark = pytest.mark.unit
F64 = torch.float64
K, V, D = 3, 6, 40


@pytest.fixture(autouse=True)
def _fresh_params() -> None:
    pyro.clear_param_store()


def bayes_nb(dtype: torch.dtype = F64) -> genppl.Model:
    """Naive Bayes on count vectors (``naive_bayes_counts``) at a small size:
    a flat Dirichlet on the class prior, Dirichlet(2) on each class's words."""
    return naive_bayes_counts.build(V, K).to(dtype=dtype)


def param_nb() -> genppl.Model:
    m = genppl.Model("nb_params")
    m.param("prior", torch.full((K,), 1.0 / K), constraint=dist.constraints.simplex)
    m.param("words", torch.full((K, V), 1.0 / V), constraint=dist.constraints.simplex)
    with m.plate("docs"):
        m.input("length")
        m.latent("c", lambda prior: dist.Categorical(prior))
        m.observed("counts", lambda c, words, length: dist.Multinomial(int(length.max()),
                                                                       probs=words[c]))
    return m.to(dtype=F64)


def corpus(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts drawn from three distinct word distributions, and the classes."""
    g = torch.Generator().manual_seed(seed)
    words = torch.softmax(3 * torch.randn(K, V, generator=g, dtype=F64), -1)
    c = torch.randint(K, (D,), generator=g)
    counts = torch.stack([torch.multinomial(words[k], 30, replacement=True, generator=g)
                          .bincount(minlength=V) for k in c.tolist()]).to(F64)
    counts[0, 0] += 7  # documents of different lengths
    return counts, c


def data(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"counts": counts, "length": counts.sum(-1)}


def class_counts(counts: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """Oracle: (per-class document weight, per-class word counts) under responsibilities."""
    return weights.sum(0), weights.T @ counts


def test_complete_data_give_add_one_smoothed_counts() -> None:
    counts, c = corpus()
    fit = genppl.fit(bayes_nb(), data(counts) | {"c": c}, engine="em", steps=3,
                     progress=False)
    n_c, n_cw = class_counts(counts, torch.nn.functional.one_hot(c, K).to(F64))
    torch.testing.assert_close(fit.params["prior"], n_c / D, rtol=1e-12, atol=0)
    torch.testing.assert_close(fit.params["words"],
                               (n_cw + 1) / (n_cw.sum(-1, keepdim=True) + V),
                               rtol=1e-12, atol=0)


def test_params_with_pseudo_counts_give_the_same_closed_form() -> None:
    counts, c = corpus(1)
    fit = genppl.fit(param_nb(), data(counts) | {"c": c}, engine="em", steps=2,
                     pseudo_counts=0.5, progress=False)
    n_c, n_cw = class_counts(counts, torch.nn.functional.one_hot(c, K).to(F64))
    torch.testing.assert_close(fit.params["prior"], (n_c + 0.5) / (D + 0.5 * K),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(fit.params["words"],
                               (n_cw + 0.5) / (n_cw.sum(-1, keepdim=True) + 0.5 * V),
                               rtol=1e-12, atol=0)


def _one_step_by_hand(counts: torch.Tensor, prior: torch.Tensor, words: torch.Tensor,
                      labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes' rule for each hidden document's class (a labelled one is certain), then the
    MAP under the priors from the weighted counts."""
    log_joint = prior.log() + counts @ words.log().T  # the multinomial coefficient cancels
    r = torch.softmax(log_joint, -1)
    if labels is not None:
        known = ~labels.isnan()
        r[known] = torch.nn.functional.one_hot(labels[known].long(), K).to(F64)
    n_c, n_cw = class_counts(counts, r)
    return n_c / D, (n_cw + 1) / (n_cw.sum(-1, keepdim=True) + V)


@pytest.mark.parametrize("labelled", [0, 10])
def test_one_step_with_hidden_classes_is_the_hand_computed_step(labelled: int) -> None:
    counts, c = corpus(2)
    g = torch.Generator().manual_seed(5)
    init = {"prior": torch.tensor([0.5, 0.3, 0.2], dtype=F64),
            "words": torch.softmax(torch.randn(K, V, generator=g, dtype=F64), -1)}
    labels = c.to(F64)
    labels[labelled:] = float("nan")  # the first `labelled` documents keep their class
    given = {"c": labels} if labelled else {}
    fit = genppl.fit(bayes_nb(), data(counts) | given, engine="em", steps=1, init=init,
                     progress=False)
    prior, words = _one_step_by_hand(counts, init["prior"], init["words"],
                                     labels if labelled else None)
    torch.testing.assert_close(fit.params["prior"], prior, rtol=1e-10, atol=0)
    torch.testing.assert_close(fit.params["words"], words, rtol=1e-10, atol=0)


def test_objective_never_decreases_with_hidden_classes() -> None:
    counts, c = corpus(3)
    labels = c.to(F64)
    labels[4:] = float("nan")
    fit = genppl.fit(bayes_nb(), data(counts) | {"c": labels}, engine="em", steps=40,
                     tol=0, seed=1, progress=False)
    objective = [-loss for loss in fit.losses]
    assert len(objective) > 3  # (it stops once a step no longer improves)
    steps = torch.tensor(objective).diff()
    assert bool((steps >= -1e-9 * abs(objective[-1])).all()), steps.min()


def test_float32_runs() -> None:
    counts, c = corpus(4)
    fit = genppl.fit(bayes_nb(torch.float32), data(counts.float()) | {"c": c}, engine="em",
                     steps=2, progress=False)
    assert fit.params["words"].dtype == torch.float32
    _, n_cw = class_counts(counts, torch.nn.functional.one_hot(c, K).to(F64))
    torch.testing.assert_close(fit.params["words"].double(),
                               (n_cw + 1) / (n_cw.sum(-1, keepdim=True) + V),
                               rtol=1e-5, atol=0)

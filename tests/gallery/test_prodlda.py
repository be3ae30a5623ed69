"""ProdLDA (models_gallery/_prodlda.py): the compiled log joint is the ProdLDA density of the
tokens by hand, the per-document multinomial is torch's document by document, the held-out
perplexity is the Monte Carlo bound by hand, and a short float32 fit on a few BBC documents
lowers the loss and the eval-mode perplexity of its documents and beats the uniform-word
perplexity on held-out ones."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from genppl.distributions import WordCounts
from models_gallery import _prodlda, lda_bbc

pytestmark = pytest.mark.gallery

F64 = torch.float64
K = 3


@pytest.fixture(scope="module")
def corpus() -> tuple[lda_bbc.Corpus, lda_bbc.Corpus, int]:
    train, test, vocabulary = lda_bbc.load(max_documents=80)
    return train, test, len(vocabulary)


@pytest.fixture(autouse=True)
def _fresh_params() -> None:
    pyro.clear_param_store()


def _perturbed(model: object, seed: int) -> None:
    """Random running statistics and shifts, so that the eval-mode batch norms are not the
    identity and a wrong formula shows."""
    g = torch.Generator().manual_seed(seed)
    for module in model["decoder"].value.modules():  # type: ignore[index]
        if isinstance(module, _prodlda.ShiftedBatchNorm):
            n = module.shift.shape[0]
            module.norm.running_mean.copy_(torch.randn(n, generator=g, dtype=F64))
            module.norm.running_var.copy_(torch.rand(n, generator=g, dtype=F64) + 0.5)
            with torch.no_grad():
                module.shift.copy_(torch.randn(n, generator=g, dtype=F64))


def log_multinomial_coefficient(counts: torch.Tensor) -> torch.Tensor:
    """``log n! - sum_v log x_v!`` of each count vector (the last axis): the log-number of
    token orders with these counts."""
    return torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)


def _hand_log_likelihood(model: object, logtheta: torch.Tensor, x: torch.Tensor
                         ) -> torch.Tensor:
    """sum over documents of log Multinomial(x_d | n_d, softmax(BN(W theta_d) + shift)),
    the batch norm in eval mode written out."""
    decoder = model["decoder"].value  # type: ignore[index]
    norm = decoder.norm
    theta = torch.softmax(logtheta, -1)
    raw = theta @ decoder.beta.weight.detach().T
    logits = ((raw - norm.norm.running_mean) / (norm.norm.running_var + norm.norm.eps).sqrt()
              + norm.shift.detach())
    log_p = torch.log_softmax(logits, -1)
    n = x.sum(-1)
    return (torch.lgamma(n + 1) - torch.lgamma(x + 1).sum(-1) + (x * log_p).sum(-1)).sum(-1)


def test_log_joint_is_the_prodlda_density(corpus: tuple) -> None:
    train, _, vocabulary_size = corpus
    alpha = 0.3
    model = _prodlda.build(K, vocabulary_size, alpha=alpha, seed=3).to(dtype=F64)
    _perturbed(model, 0)
    data = _prodlda.data(train)
    logtheta = torch.randn(train.num_documents, K, dtype=F64,
                           generator=torch.Generator().manual_seed(1))
    with _prodlda.evaluation(model), torch.no_grad():
        trace = poutine.trace(poutine.condition(model.pyro_model, {"logtheta": logtheta})
                              ).get_trace(**data)
    # Laplace approximation of a symmetric Dirichlet(alpha): loc 0, variance (1 - 1/K) / alpha.
    prior = torch.distributions.Normal(torch.tensor(0.0, dtype=F64),
                                       torch.tensor((1 - 1 / K) / alpha, dtype=F64).sqrt())
    # The tokens in order: the counts' multinomial less the number of orders of its tokens.
    expected = (prior.log_prob(logtheta).sum()
                + _hand_log_likelihood(model, logtheta, data["bag"])
                - log_multinomial_coefficient(data["bag"]).sum())
    assert float(trace.log_prob_sum()) == pytest.approx(float(expected), rel=1e-12)
    assert torch.allclose(trace.nodes["theta"]["value"], torch.softmax(logtheta, -1))


def test_laplace_prior_is_the_projected_dirichlet_curvature() -> None:
    """Mean: the Dirichlet's mode in the softmax basis (centred log alpha); variance: the
    diagonal of P diag(1/alpha) P, P the centring projection (MacKay's approximation)."""
    alpha = torch.tensor([0.2, 0.5, 1.0, 3.0], dtype=F64)
    loc, scale = _prodlda.laplace_prior(alpha)
    p = torch.eye(4, dtype=F64) - 1 / 4
    assert torch.allclose(torch.softmax(loc, -1), alpha / alpha.sum(), atol=1e-14)
    assert abs(float(loc.sum())) < 1e-14
    assert torch.allclose(scale.square(), torch.diagonal(p @ torch.diag(1 / alpha) @ p),
                          atol=1e-14)


def test_word_counts_is_torch_multinomial_per_document() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g, dtype=F64)
    total = torch.tensor([0.0, 3.0, 10.0, 25.0], dtype=F64)
    counts = torch.stack([torch.multinomial(torch.softmax(row, -1), int(n), replacement=True,
                                            generator=g).bincount(minlength=6).to(F64)
                          if n else torch.zeros(6, dtype=F64)  # (torch cannot draw 0 tokens)
                          for n, row in zip(total, logits, strict=True)])
    expected = torch.stack([torch.distributions.Multinomial(int(n), logits=row).log_prob(x)
                            for n, row, x in zip(total, logits, counts, strict=True)])
    wc = WordCounts(total, logits)
    assert torch.allclose(wc.log_prob(counts), expected, rtol=1e-13, atol=1e-13)
    one_more = torch.nn.functional.one_hot(torch.tensor(0), 6).to(F64)
    with pytest.raises(ValueError, match="within the support"):  # more tokens than the total
        wc.log_prob(counts + one_more)
    with pytest.raises(ValueError, match="does not sum to its total_count"):  # fewer
        wc.log_prob(torch.where(counts > 0, counts - 1, counts))
    # Draws: the right totals, and the mean n p within 5 standard errors (z-test).
    torch.manual_seed(1)
    draws = wc.expand([2000, 4]).sample()
    assert torch.equal(draws.sum(-1), total.expand(2000, 4))
    p = torch.softmax(logits, -1)
    se = (total[:, None] * p * (1 - p) / 2000).sqrt()
    z = (draws.mean(0) - wc.mean) / se.clamp(min=1e-12)
    assert float(z.abs().max()) < 5


def test_held_out_perplexity_is_the_token_sequence_bound_by_hand(corpus: tuple) -> None:
    """exp(-bound / tokens) with bound = E_q[log p(logtheta) + sum_v x_v log p_v
    - log q(logtheta)] (no multinomial coefficient), estimated by hand with other draws."""
    _, test, vocabulary_size = corpus
    model = _prodlda.build(K, vocabulary_size, seed=4).to(dtype=F64)
    guide = _prodlda.build_guide(model, seed=5)
    _perturbed(model, 2)
    found = _prodlda.held_out_perplexity(model, guide, test, num_particles=400, seed=0)
    data = _prodlda.data(test)
    x = data["bag"]
    with _prodlda.evaluation(model, guide), torch.no_grad():
        loc, scale = guide["encoder"].value(x)
        q = torch.distributions.Normal(loc, scale)
        prior = torch.distributions.Normal(*_prodlda.laplace_prior(torch.ones(K, dtype=F64)))
        torch.manual_seed(7)
        bounds = []
        for _ in range(400):
            z = q.sample()
            log_w = (prior.log_prob(z).sum() - q.log_prob(z).sum()
                     + _hand_log_likelihood(model, z, x))
            bounds.append(float(log_w - log_multinomial_coefficient(x).sum()))
    w = torch.tensor(bounds, dtype=F64)
    # log perplexity = -bound / tokens; compare within 5 standard errors of the two estimates.
    se = float(w.std()) / math.sqrt(400) * math.sqrt(2) / test.num_tokens
    assert abs(math.log(found) - (-float(w.mean()) / test.num_tokens)) < 5 * se + 1e-12


def test_short_float32_fit_lowers_the_loss_and_beats_uniform_words(corpus: tuple) -> None:
    train, test, vocabulary_size = corpus
    # Batch norm needs batches of many documents: here the whole (80-document) training set.
    result = _prodlda.fit(train, vocabulary_size, steps=150, seed=0, num_topics=K,
                          batch_size=train.num_documents, lr=1e-2)
    model, guide = result.info["model"], result.info["dsl_guide"]
    assert model["decoder"].value.beta.weight.dtype == torch.float32
    first, last = result.losses[:20], result.losses[-20:]
    assert sum(last) / 20 < sum(first) / 20
    perplexity = _prodlda.held_out_perplexity(model, guide, test)
    assert math.isfinite(perplexity)
    assert perplexity < vocabulary_size  # a uniform choice of word has perplexity V
    # The eval-mode model (not only the training loss) improved on its training documents:
    # about 382 before, 315 after; Monte Carlo noise of either estimate is under 1%.
    start = _prodlda.fit(train, vocabulary_size, steps=0, seed=0, num_topics=K)
    before = _prodlda.held_out_perplexity(start.info["model"], start.info["dsl_guide"], train)
    assert _prodlda.held_out_perplexity(model, guide, train) < 0.9 * before
    assert model["decoder"].value.training  # evaluation left the modules as it found them
    assert _prodlda.topic_words(model).shape == (K, vocabulary_size)

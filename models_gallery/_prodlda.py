"""Srivastava & Sutton (2017): ProdLDA, a topic model fitted by amortised variational inference.

Part of the ``lda_bbc`` entry (same BBC split, vocabulary and tokens, through
``_bbc_corpus.load()``); this module holds the model, its guide and their evaluation.

**Model.** Per document ``d`` (plate ``documents``), as the paper draws it:

* ``logtheta_d ~ Normal(mu, sigma)`` (K dims): the Laplace approximation, in the softmax
  basis, of a symmetric Dirichlet(alpha) prior on the topic mixture (MacKay 1998; the paper's
  eq. 3): ``mu_k = log alpha_k - mean_i log alpha_i``,
  ``sigma_k^2 = (1 / alpha_k)(1 - 2 / K) + (1 / K^2) sum_i 1 / alpha_i``;
* ``theta_d = softmax(logtheta_d)``, a deterministic node;
* each of its tokens (the ragged plate ``words`` inside ``documents``, sized by the input
  ``length``) ``w ~ Categorical(logits=BN(beta theta_d) + b)``: the *product of experts*
  decoder. The word logits are a weighted sum of topic rows ``beta`` (a ``Linear(K, V)``
  without bias), batch-normalised with a learnt per-word shift ``b`` and no scale -- the
  authors' code (TensorFlow's ``batch_norm``, ``center=True, scale=False``); Pyro's tutorial
  drops the shift, which pins every word's average logit at 0 -- so topics multiply word
  distributions instead of mixing them as LDA does. ``b`` is a background log-frequency of
  the words (``fit`` starts it at the training words' log-frequencies, as Card et al. 2018
  start theirs) that the topics modulate.

The tokens are the corpus's, one flat array document after document (``data``). A token
reads its document's logits: the compiled program decodes each document of a minibatch once
and reads the token's word at its document's row (``genppl.pyro.at_entries``), so a step
costs one ``documents x V`` table, not one row of V logits per token.

**Guide.** ``q(logtheta_d | bag_d) = Normal(loc, scale)`` from an encoder reading the
document's bag of words ``bag_d`` (its word counts, an input of the documents plate that
``data`` computes from the tokens: the paper's inference network reads counts; two softplus
layers, dropout, batch-normalised loc and log-variance), declared with the DSL against the
model, so it applies to unseen documents.

**Train / eval.** Batch norm and dropout behave differently in training; ``fit`` trains with
both modules in training mode, and everything that evaluates a density (``held_out_perplexity``
and the tests' log joint) runs in eval mode (``evaluation``), where batch norm is a fixed
affine map with its running statistics and dropout is the identity: the model is then a proper
density of each document on its own. In training a document's logits depend on the other
documents of its minibatch (the batch statistics), so minibatches must be large -- the paper's
200 documents; with 16 the model learns batch-specific logits and its eval-mode perplexity
gets worse as the training loss falls -- and the training loss is not an unbiased estimate of
the eval-mode ELBO.

**Perplexity.** ``held_out_perplexity`` is ``exp(-bound / tokens)`` of the test documents,
where ``bound`` is the ELBO of the test tokens (``genppl.variational.evaluate``, the trained
encoder's guide, no refitting): a bound on the log-probability of the documents' token
sequences, the quantity LDA's bound (and scikit-learn's perplexity) is on. ProdLDA is a
different model from LDA (products, not mixtures, of topics; a logistic-normal, not Dirichlet,
mixture; an amortised, not per-document, posterior), so the two perplexities are bounds for
two different models on the same tokens -- comparable as numbers, not as one model's fits.
The amortised bound is also looser than LDA's, whose test mixtures are fitted document by
document. Measured (float32, one core, defaults: 1,000 steps of 200 documents, about 90 s of
CPU): held-out perplexity about 2,100 (training documents about 1,800), against 7,755 for
uniform words and 3,370 for add-one word frequencies; the topics' top words
(``topic_words``) are crime and law, football, rugby, athletics, music, film, companies,
the economy, taxes and pensions, computers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

import genppl
from genppl.errors import ModelError
from genppl.variational import evaluate
from models_gallery._bbc_corpus import NUM_TOPICS, Corpus

#: The paper's symmetric Dirichlet prior (alpha = 1: the Laplace approximation is then
#: Normal(0, sqrt(1 - 1 / K)) on each coordinate of logtheta).
ALPHA = 1.0
HIDDEN = 100
DROPOUT = 0.2
#: Documents per SVI step: the paper's 200 (batch norm needs large batches, see above).
BATCH = 200
LR = 5e-3
STEPS = 1000
#: Particles per document for the held-out ELBO, and how many are drawn at once
#: (memory: ``EVAL_BATCH`` x documents x vocabulary floats).
EVAL_PARTICLES = 20
EVAL_BATCH = 4


def laplace_prior(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loc and scale of the Laplace approximation, in the softmax basis, of Dirichlet(alpha)."""
    k = alpha.shape[-1]
    log_alpha = alpha.log()
    loc = log_alpha - log_alpha.mean(-1, keepdim=True)
    var = (1 - 2 / k) / alpha + (1 / alpha).sum(-1, keepdim=True) / k ** 2
    return loc, var.sqrt()


# --------------------------------------------------------------------------- networks
class ShiftedBatchNorm(nn.Module):
    """Batch normalisation over the last axis with a learnt shift and no scale: the
    original code's ``batch_norm(center=True, scale=False)``. The shift matters: without it
    every word's logit would average 0 over documents (no word could be frequent everywhere)
    and the encoder's average log-variance would be pinned at 0. Any leading axes
    (documents, particles) are flattened into the batch; ``BatchNorm1d`` alone would read a
    3-d input's second axis as the features."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(features, affine=False)
        self.shift = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape) + self.shift


class Decoder(nn.Module):
    """theta -> word logits ``BN(beta theta) + b``: the product-of-experts decoder, ``beta``
    the (V, K) topic-word weights of a bias-free linear layer, ``b`` the norm's shift."""

    def __init__(self, num_topics: int, vocabulary_size: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.beta = nn.Linear(num_topics, vocabulary_size, bias=False)
        self.norm = ShiftedBatchNorm(vocabulary_size)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return self.norm(self.beta(self.drop(theta)))


class Encoder(nn.Module):
    """counts -> (loc, scale) of q(logtheta | counts): two softplus layers, dropout, then
    batch-normalised loc and log-variance (the paper's inference network)."""

    def __init__(self, vocabulary_size: int, num_topics: int, hidden: int,
                 dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(vocabulary_size, hidden), nn.Softplus(),
                                  nn.Linear(hidden, hidden), nn.Softplus(), nn.Dropout(dropout))
        self.loc = nn.Linear(hidden, num_topics)
        self.log_var = nn.Linear(hidden, num_topics)
        self.loc_norm = ShiftedBatchNorm(num_topics)
        self.log_var_norm = ShiftedBatchNorm(num_topics)

    def forward(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(counts)
        loc = self.loc_norm(self.loc(h))
        log_var = self.log_var_norm(self.log_var(h))
        return loc, (0.5 * log_var).exp()


def _seeded(make: Any, seed: int) -> nn.Module:
    """Build a module with its own seed, leaving the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


# --------------------------------------------------------------------------- model and guide
def build(num_topics: int = NUM_TOPICS, vocabulary_size: int = 7755, *, alpha: float = ALPHA,
          dropout: float = DROPOUT, background: torch.Tensor | None = None,
          seed: int = 0) -> genppl.Model:
    """The ProdLDA model (see the module docstring); data ``w`` (the tokens, document after
    document), ``length`` (documents,) and ``bag`` (documents, V), as ``data(corpus)`` gives
    them.
    ``background`` (V,) starts the decoder's per-word shift (``fit`` passes the training
    words' log-frequencies; zeros otherwise)."""
    if alpha <= 0:
        raise ModelError(f"prodlda: alpha must be > 0 (a Dirichlet concentration), got {alpha}.")
    decoder = _seeded(lambda: Decoder(num_topics, vocabulary_size, dropout), seed)
    if background is not None:
        if background.shape != (vocabulary_size,):
            raise ModelError(f"prodlda: background must have shape ({vocabulary_size},), one "
                             f"log-frequency per word, got {tuple(background.shape)}.")
        with torch.no_grad():
            decoder.norm.shift.copy_(background)
    m = genppl.Model("prodlda")
    m.module("decoder", decoder)
    with m.plate("documents"):
        m.input("bag", event_dim=1)  # read by the guide's encoder only
        m.latent("logtheta", lambda: dist.Normal(
            *laplace_prior(torch.full((num_topics,), float(alpha)))).to_event(1))
        m.deterministic("theta", lambda logtheta: torch.softmax(logtheta, -1), event_dim=1)
        with m.plate("words", sizes="length"):
            m.observed("w", lambda theta, decoder: dist.Categorical(logits=decoder(theta)))
    return m


def build_guide(model: genppl.Model, *, hidden: int = HIDDEN, dropout: float = DROPOUT,
                seed: int = 1) -> genppl.Guide:
    """q(logtheta | bag) by the encoder (amortised: it reads each document's word counts).
    Build it after ``model.to(...)``; it takes the model's device and dtype."""
    decoder = model["decoder"].value
    num_topics, vocabulary_size = decoder.beta.in_features, decoder.beta.out_features
    encoder = _seeded(lambda: Encoder(vocabulary_size, num_topics, hidden, dropout), seed)
    g = model.guide()
    g.module("encoder", encoder)
    g.latent("logtheta", lambda bag, encoder: dist.Normal(*encoder(bag)).to_event(1))
    return g.to(model.device, model.dtype)


def data(corpus: Corpus, *, dtype: torch.dtype = torch.float64,
         device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The model's data for a corpus: its tokens and documents' lengths (LDA's layout,
    ``Corpus.data``) and each document's bag of words for the encoder (the counts of its
    tokens)."""
    tokens = {k: v.to(device) for k, v in corpus.data().items()}
    return tokens | {"bag": corpus.counts.dense(dtype=dtype).to(device)}


@contextmanager
def evaluation(*models: genppl.Model) -> Iterator[None]:
    """Every module of the given models (and guides) in eval mode inside, restored after:
    batch norm on its running statistics, no dropout (see the module docstring)."""
    modules = [n.value for m in models for n in m.nodes.values() if n.kind == "module"]
    modes = [mod.training for mod in modules]
    try:
        for mod in modules:
            mod.eval()
        yield
    finally:
        for mod, mode in zip(modules, modes, strict=True):
            mod.train(mode)


# --------------------------------------------------------------------------- fit and evaluate
def fit(train: Corpus, vocabulary_size: int, *, steps: int = STEPS, seed: int = 0,
        device: str = "cpu", dtype: torch.dtype = torch.float32, progress: bool = False,
        num_topics: int = NUM_TOPICS, alpha: float = ALPHA, dropout: float = DROPOUT,
        batch_size: int = BATCH, lr: float = LR) -> genppl.FitResult:
    """SVI (Adam, shuffled minibatches of documents) on the training documents. The fitted
    model and guide are ``result.info["model"]`` and ``result.info["dsl_guide"]``; their
    modules hold the trained weights.

    The decoder's per-word shift starts at the training words' centred log-frequencies
    (log(1 + count)), the background the topics then modulate (as Card et al. 2018 start
    theirs); from zeros, Adam at this rate needs thousands of steps to learn word
    frequencies spanning several nats."""
    tokens = data(train, dtype=dtype, device=device)
    totals = (tokens["bag"].sum(0) + 1).log()
    model = build(num_topics, vocabulary_size, alpha=alpha, dropout=dropout, seed=seed,
                  background=totals - totals.mean()).to(device, dtype)
    guide = build_guide(model, dropout=dropout, seed=seed + 1)
    result = genppl.fit(model, tokens, engine="svi",
                        guide=guide, steps=steps, optimizer="adam", lr=lr,
                        clip_norm=None, batch_size=batch_size, seed=seed, progress=progress)
    result.info.update(model=model, dsl_guide=guide)
    return result


def held_out_perplexity(model: genppl.Model, guide: genppl.Guide, test: Corpus, *,
                        num_particles: int = EVAL_PARTICLES, seed: int = 0) -> float:
    """``exp(-bound / tokens)`` of ``test`` with the trained decoder and encoder (eval mode),
    ``bound`` the ELBO of the test tokens (see the module docstring)."""
    tokens = data(test, dtype=model.dtype, device=model.device)
    with evaluation(model, guide):
        ev = evaluate(model, guide, tokens, num_particles=num_particles,
                      batch=min(EVAL_BATCH, num_particles), seed=seed)
    return math.exp(-ev.elbo / test.num_tokens)


def topic_words(model: genppl.Model) -> torch.Tensor:
    """The decoder's topic-word weights, one row per topic, shape (K, V): the larger, the more
    a topic raises a word's logit (rank a row for the topic's top words)."""
    return model["decoder"].value.beta.weight.detach().T

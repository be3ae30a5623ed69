"""A ragged plate's words reading their document's finite latent (naive Bayes's class): the
tabulating engines run the declaration as it is, the words plate a nested plate of the
factor model (``genppl.exact.factors.Nesting``) whose tables multiply into their
document's row. Oracles: enumeration by hand over every joint assignment, and the same
model written with per-document count vectors.

The corpus has an empty document, an exact zero in the words table (a word impossible
under one class), a class tied with another on a document, and evidence on some classes."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

import genppl
from genppl import ModelError
from genppl.distributions import WordCounts
from genppl.engines.em import _category_counts
from genppl.tabulation.tabulation import Tabulation, model_factors

pytestmark = pytest.mark.unit

F64 = torch.float64
PRIOR = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
WORDS = torch.tensor([[0.1, 0.2, 0.3, 0.4],
                      [0.4, 0.3, 0.3, 0.0],  # word 3 is impossible in class 1
                      [0.25, 0.25, 0.25, 0.25]], dtype=F64)
LENGTHS = torch.tensor([2, 0, 3, 1, 2])
W = torch.tensor([0, 1, 3, 3, 2, 1, 1, 2])
DOC = torch.repeat_interleave(torch.arange(len(LENGTHS)), LENGTHS)
DATA = {"w": W, "length": LENGTHS}


def naive_bayes(dtype: torch.dtype = F64) -> genppl.Model:
    m = genppl.Model("nb")
    m.param("prior", PRIOR, constraint=constraints.simplex)
    m.param("words", WORDS, constraint=constraints.simplex)
    with m.plate("docs"):
        m.latent("c", lambda prior: dist.Categorical(prior))
        with m.plate("tokens", sizes="length"):
            m.observed("w", lambda c, words: dist.Categorical(words[c]))
    return m.to(dtype=dtype)


def joints(prior: torch.Tensor = PRIOR, words: torch.Tensor = WORDS,
           evidence: dict[int, int] | None = None
           ) -> list[tuple[tuple[int, ...], float]]:
    """Every assignment of the documents' classes with its joint probability, by hand."""
    out = []
    for cs in itertools.product(range(len(prior)), repeat=len(LENGTHS)):
        if evidence and any(cs[d] != k for d, k in evidence.items()):
            continue
        p = math.prod(float(prior[c]) for c in cs) * math.prod(
            float(words[cs[d], v]) for d, v in zip(DOC.tolist(), W.tolist(), strict=True))
        out.append((cs, p))
    return out


def brute_marginals(table: list[tuple[tuple[int, ...], float]]) -> torch.Tensor:
    marginals = torch.zeros(len(LENGTHS), len(PRIOR), dtype=F64)
    for cs, p in table:
        for d, c in enumerate(cs):
            marginals[d, c] += p
    return marginals / marginals.sum(-1, keepdim=True)


def test_marginals_and_log_evidence_equal_enumeration() -> None:
    post = genppl.infer(naive_bayes(), DATA, engine="exact")
    table = joints()
    assert post.log_evidence == pytest.approx(math.log(sum(p for _, p in table)), abs=1e-12)
    torch.testing.assert_close(post.marginals["c"], brute_marginals(table), rtol=0, atol=1e-12)
    # the empty document keeps its prior; a document with word 3 cannot be of class 1
    torch.testing.assert_close(post.marginals["c"][1], PRIOR, rtol=0, atol=1e-12)
    assert float(post.marginals["c"][2, 1]) == 0.0


def test_evidence_on_some_classes_and_missing_ones() -> None:
    labels = torch.tensor([2.0, float("nan"), 0.0, float("nan"), float("nan")], dtype=F64)
    post = genppl.infer(naive_bayes(), DATA | {"c": labels}, engine="exact")
    table = joints(evidence={0: 2, 2: 0})
    assert post.log_evidence == pytest.approx(math.log(sum(p for _, p in table)), abs=1e-12)
    torch.testing.assert_close(post.marginals["c"], brute_marginals(table), rtol=0, atol=1e-12)


def test_per_document_evidence_map_and_exact_draws() -> None:
    post = genppl.infer(naive_bayes(), DATA, engine="exact", map=True, evidence_per="docs",
                        num_samples=4000, seed=3)
    per_doc = [math.log(sum(float(PRIOR[k]) * math.prod(float(WORDS[k, v])
                                                       for v in W[DOC.eq(d)].tolist())
                            for k in range(3))) for d in range(len(LENGTHS))]
    torch.testing.assert_close(post.info["log_evidence_per"],
                               torch.tensor(per_doc, dtype=F64), rtol=0, atol=1e-12)
    table = joints()
    best = max(p for _, p in table)
    assert post.info["map_log_joint"] == pytest.approx(math.log(best), abs=1e-12)
    chosen = tuple(post.info["map"]["c"].tolist())
    assert dict(table)[chosen] == pytest.approx(best, rel=1e-12)
    within_five_standard_errors(post.samples["c"], brute_marginals(table))
    assert not bool((post.samples["c"][..., 2] == 1).any())  # an impossible class, never


def test_unseeded_draws_differ_and_a_second_call_agrees() -> None:
    m = naive_bayes()
    first = genppl.infer(m, DATA, engine="exact", num_samples=50)
    second = genppl.infer(m, DATA, engine="exact", num_samples=50)
    assert not torch.equal(first.samples["c"], second.samples["c"])
    torch.testing.assert_close(first.marginals["c"], second.marginals["c"], rtol=0, atol=0)


def test_a_word_level_latent_between_the_class_and_the_word() -> None:
    """c_d -> z_dn -> w_dn: the words' own latents are eliminated per word before the words
    multiply into their document's table."""
    switch = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], dtype=F64)
    emit = WORDS[:2]

    m = genppl.Model("nested_mixture")
    with m.plate("docs"):
        m.latent("c", lambda: dist.Categorical(PRIOR))
        with m.plate("tokens", sizes="length"):
            m.latent("z", lambda c: dist.Categorical(switch[c]))
            m.observed("w", lambda z: dist.Categorical(emit[z]))
    post = genppl.infer(m.to(dtype=F64), DATA, engine="exact")

    total, marginals = 0.0, torch.zeros(len(LENGTHS), 3, dtype=F64)
    z_marginal = torch.zeros(len(W), 2, dtype=F64)
    for cs in itertools.product(range(3), repeat=len(LENGTHS)):
        for zs in itertools.product(range(2), repeat=len(W)):
            p = math.prod(float(PRIOR[c]) for c in cs) * math.prod(
                float(switch[cs[d], z] * emit[z, v])
                for d, z, v in zip(DOC.tolist(), zs, W.tolist(), strict=True))
            total += p
            for d, c in enumerate(cs):
                marginals[d, c] += p
            for n, z in enumerate(zs):
                z_marginal[n, z] += p
    assert post.log_evidence == pytest.approx(math.log(total), abs=1e-12)
    torch.testing.assert_close(post.marginals["c"], marginals / total, rtol=0, atol=1e-12)
    torch.testing.assert_close(post.marginals["z"], z_marginal / total, rtol=0, atol=1e-12)
    assert post.marginals["z"].shape == (len(W), 2)


@pytest.mark.parametrize("deterministic", [False, True])
def test_words_read_their_documents_data(deterministic: bool) -> None:
    """A document's input (its source) read by its words selects a table per document,
    directly or through a deterministic node of the documents plate."""
    tables = torch.stack([WORDS, WORDS.flip(-1)])  # (source, class, word)
    source = torch.tensor([0, 1, 1, 0, 1])
    m = genppl.Model("sources")
    with m.plate("docs"):
        m.input("source")
        m.latent("c", lambda: dist.Categorical(PRIOR))
        if deterministic:
            m.deterministic("table", lambda c, source: tables[source, c])
        with m.plate("tokens", sizes="length"):
            if deterministic:
                m.observed("w", lambda table: dist.Categorical(table))
            else:
                m.observed("w", lambda c, source: dist.Categorical(tables[source, c]))
    post = genppl.infer(m.to(dtype=F64), DATA | {"source": source}, engine="exact")
    expected = torch.stack([
        torch.stack([PRIOR[k].log() + tables[source[d], k, W[DOC.eq(d)]].log().sum()
                     for k in range(3)]).softmax(0) for d in range(len(LENGTHS))])
    torch.testing.assert_close(post.marginals["c"], expected, rtol=0, atol=1e-12)


def test_float32_follows_float64() -> None:
    f32 = genppl.infer(naive_bayes(torch.float32), DATA, engine="exact")
    f64 = genppl.infer(naive_bayes(), DATA, engine="exact")
    assert f32.marginals["c"].dtype == torch.float32
    torch.testing.assert_close(f32.marginals["c"].double(), f64.marginals["c"], rtol=0,
                               atol=1e-5)


def counts_model() -> genppl.Model:
    """The same naive Bayes on count vectors: its likelihood differs by the multinomial
    coefficient, a constant, so EM's iterates are the same."""
    m = genppl.Model("nb_counts")
    m.param("prior", PRIOR, constraint=constraints.simplex)
    m.param("words", WORDS, constraint=constraints.simplex)
    with m.plate("docs"):
        m.input("n")
        m.latent("c", lambda prior: dist.Categorical(prior))
        m.observed("counts", lambda c, words, n: WordCounts(n, probs=words[c]))
    return m.to(dtype=F64)


def test_em_on_the_words_equals_em_on_the_count_vectors() -> None:
    counts = torch.zeros(len(LENGTHS), 4, dtype=F64).index_put_(
        (DOC, W), torch.ones(len(W), dtype=F64), accumulate=True)
    labels = torch.tensor([float("nan"), 0.0, float("nan"), 2.0, float("nan")], dtype=F64)
    with pyro.get_param_store().scope():
        words = genppl.fit(naive_bayes(), DATA | {"c": labels}, engine="em", steps=6,
                           pseudo_counts=0.5, progress=False)
    with pyro.get_param_store().scope():
        vectors = genppl.fit(counts_model(), {"counts": counts, "n": counts.sum(-1),
                                              "c": labels},
                             engine="em", steps=6, pseudo_counts=0.5, progress=False)
    for name in ("prior", "words"):
        torch.testing.assert_close(words.params[name], vectors.params[name], rtol=0,
                                   atol=1e-12)
    assert words.info["iterations"] == vectors.info["iterations"]


def test_cavi_on_the_words_reaches_cavi_on_the_count_vectors() -> None:
    """Dirichlet priors on the class prior and the words (the gallery entry's model): CAVI
    on the words and on the count vectors reach the same optimum, their ELBOs apart by the
    multinomial coefficients exactly (the iterates differ on the way: the bound is flat
    near its optimum, so the factors agree to the convergence's precision)."""
    def model(words: bool) -> genppl.Model:
        m = genppl.Model("nb_dirichlet")
        m.latent("prior", lambda: dist.Dirichlet(torch.ones(3, dtype=F64)))
        m.latent("words", lambda: dist.Dirichlet(torch.full((4,), 2.0, dtype=F64))
                 .expand([3]).to_event(1))
        with m.plate("docs"):
            m.latent("c", lambda prior: dist.Categorical(prior))
            if words:
                with m.plate("tokens", sizes="length"):
                    m.observed("w", lambda c, words: dist.Categorical(words[c]))
            else:
                m.input("n")
                m.observed("counts", lambda c, words, n: WordCounts(n, probs=words[c]))
        return m.to(dtype=F64)

    counts = torch.zeros(len(LENGTHS), 4, dtype=F64).index_put_(
        (DOC, W), torch.ones(len(W), dtype=F64), accumulate=True)
    options = {"engine": "cavi", "steps": 300, "tol": 0.0, "progress": False}
    words = genppl.fit(model(True), DATA, **options)
    vectors = genppl.fit(model(False), {"counts": counts, "n": counts.sum(-1)}, **options)
    coefficients = float(torch.lgamma(counts.sum(-1) + 1).sum() - torch.lgamma(counts + 1).sum())
    assert words.losses[-1] - vectors.losses[-1] == pytest.approx(coefficients, abs=1e-9)
    for name, value in words.params.items():
        torch.testing.assert_close(value, vectors.params[name], rtol=1e-4, atol=0)


@pytest.mark.parametrize("value_shape, weight_shape, shape", [
    ((1, 7, 1), (1, 7, 3), (3, 5)),       # words read through a class: (class, word)
    ((4, 7), (4, 7), (7, 5)),             # a table per plate entry
    ((4, 7), (4, 7), (1, 5)),             # one row for every entry
    ((2, 4, 1, 1), (2, 4, 3, 2), (3, 2, 5)),  # two parents
    ((6,), (6,), (5,)),                   # no parents
])
def test_category_counts_equal_the_one_hot_reference(value_shape, weight_shape, shape) -> None:
    from genppl.exact.broadcasting import sum_to_shape

    gen = torch.Generator().manual_seed(0)
    value = torch.randint(0, shape[-1], value_shape, generator=gen)
    weight = torch.rand(weight_shape, generator=gen, dtype=F64)
    onehot = torch.nn.functional.one_hot(value, shape[-1]).to(F64)
    expected = sum_to_shape(onehot * weight.unsqueeze(-1), shape)
    fast = _category_counts(value, weight, shape)
    torch.testing.assert_close(fast, expected, rtol=0, atol=1e-12)


def test_the_recorded_tabulation_replays_the_nesting() -> None:
    m = naive_bayes()
    with pyro.get_param_store().scope():
        tab = Tabulation(m, DATA)
        tab()
        replayed, reference = tab(track=True), model_factors(m, DATA, track=True)
    assert replayed.nested.keys() == reference.nested.keys() == {"tokens"}
    assert torch.equal(replayed.nested["tokens"].entries, DOC)
    for (plates, a), (_, b) in zip(replayed.factors, reference.factors, strict=True):
        assert plates == frozenset({"docs", "tokens"}) or plates == frozenset({"docs"})
        torch.testing.assert_close(a.log_table, b.log_table, rtol=0, atol=0)


def within_five_standard_errors(draws: torch.Tensor, marginals: torch.Tensor) -> None:
    """Each document's class frequencies against its marginals; the draws are independent
    (given the params the documents' classes are independent, so a Gibbs sweep draws each
    exactly from its conditional, which is its marginal): the standard error is binomial."""
    draws = draws.reshape(-1, len(LENGTHS))
    freq = torch.stack([torch.bincount(draws[:, d], minlength=3)
                        for d in range(len(LENGTHS))]).to(F64) / len(draws)
    se = (marginals * (1 - marginals) / len(draws)).sqrt()
    assert bool(((freq - marginals).abs() <= 5 * se + 1e-12).all()), (freq, marginals)


def test_gibbs_grounds_the_words_at_their_documents() -> None:
    post = genppl.infer(naive_bayes(), DATA, engine="gibbs", num_samples=3000, warmup_steps=50,
                        seed=0, progress=False)
    within_five_standard_errors(post.samples["c"], brute_marginals(joints()))


def test_collapsed_gibbs_on_the_words_against_dirichlet_multinomial_enumeration() -> None:
    """Dirichlet priors on the class prior and the words, integrated out: the classes'
    posterior by enumeration over every assignment of the Dirichlet-multinomial marginal
    likelihoods, against the collapsed sampler's draws (their autocorrelation is small
    here; the bound is five binomial standard errors of the kept draws, thinned)."""
    alpha, eta = torch.ones(3, dtype=F64), torch.full((4,), 0.5, dtype=F64)
    m = genppl.Model("nb_collapsed")
    m.latent("prior", lambda: dist.Dirichlet(alpha))
    m.latent("words", lambda: dist.Dirichlet(eta).expand([3]).to_event(1))
    with m.plate("docs"):
        m.latent("c", lambda prior: dist.Categorical(prior))
        with m.plate("tokens", sizes="length"):
            m.observed("w", lambda c, words: dist.Categorical(words[c]))

    def log_dirichlet_multinomial(counts: torch.Tensor, prior: torch.Tensor) -> float:
        return float(torch.lgamma(prior.sum()) - torch.lgamma(prior.sum() + counts.sum())
                     + (torch.lgamma(prior + counts) - torch.lgamma(prior)).sum())

    marginals = torch.zeros(len(LENGTHS), 3, dtype=F64)
    for cs in itertools.product(range(3), repeat=len(LENGTHS)):
        classes = torch.tensor(cs)
        log_p = log_dirichlet_multinomial(torch.bincount(classes, minlength=3).to(F64), alpha)
        for k in range(3):
            log_p += log_dirichlet_multinomial(
                torch.bincount(W[classes[DOC] == k], minlength=4).to(F64), eta)
        marginals[torch.arange(len(LENGTHS)), classes] += math.exp(log_p)
    marginals /= marginals.sum(-1, keepdim=True)
    post = genppl.infer(m.to(dtype=F64), DATA, engine="gibbs", num_samples=20000,
                        warmup_steps=200, seed=0, progress=False)
    within_five_standard_errors(post.samples["c"][:, ::10], marginals)


def test_a_documents_point_value_read_by_its_words_is_refused_by_name() -> None:
    m = genppl.Model("point")
    with m.plate("docs"):
        m.latent("rate", lambda: dist.Gamma(torch.tensor(2.0, dtype=F64), 1.0))
        m.latent("c", lambda: dist.Categorical(PRIOR))
        with m.plate("tokens", sizes="length"):
            m.observed("w", lambda c, rate: dist.Poisson(rate * (c + 1)))
    data = {"w": W.to(F64), "length": LENGTHS, "rate": torch.ones(len(LENGTHS), dtype=F64)}
    with pytest.raises(ModelError, match=r"reads 'rate' of plate 'docs' given as a point "
                                         r"value, from a ragged plate"):
        model_factors(m.to(dtype=F64), {k: v for k, v in data.items() if k != "rate"},
                      point={"rate": data["rate"]})

"""Words read at their document (``genppl.pyro.at_entries``): a word whose parents all lie
outside its ragged plate gets its document's distribution read at its entry, never a row of
parameters per word. The oracle is the hand-flattened declaration, whose factory gathers
each parent per word (what the compiled program did before): log joints and gradients equal
it, and prior draws follow each document's distribution.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

import genppl
from genppl.pyro.at_entries import AtEntries

pytestmark = pytest.mark.unit

LENGTHS = torch.tensor([3, 0, 5, 1, 0, 4])  # empty documents included
DOC = torch.repeat_interleave(torch.arange(6), LENGTHS)
W = torch.tensor([0, 3, 1, 2, 2, 0, 3, 1, 1, 0, 3, 2, 2])
C = torch.tensor([1, 0, 2, 2, 1, 0])
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def parameters(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"prior": torch.rand(3, generator=g).to(dtype).softmax(0),
            "words": torch.rand(3, 4, generator=g).to(dtype).mul(3).softmax(-1)}


def classes(nested: bool, dtype: torch.dtype, family: str = "categorical") -> genppl.Model:
    """Naive Bayes, its words a Categorical, a masked Categorical (the words of class-0
    documents left out) or a Bernoulli (word 0 or not) of the document's class; nested as
    drawn, or flattened by hand."""
    def word(c, words, doc=None):
        row = words[c] if doc is None else words[c[doc]]
        if family == "bernoulli":
            return dist.Bernoulli(probs=row[..., 0])
        d = dist.Categorical(probs=row)
        return d.mask((c if doc is None else c[doc]) != 0) if family == "masked" else d

    p = parameters(dtype)
    m = genppl.Model(f"nb_{nested}")
    m.param("prior", p["prior"])
    m.param("words", p["words"])
    if nested:
        with m.plate("documents", 6):
            m.latent("c", lambda prior: dist.Categorical(prior), enumerate=False)
            with m.plate("tokens", sizes="lengths"):
                m.observed("w", lambda c, words: word(c, words))
    else:
        m.latent("c", lambda prior: dist.Categorical(prior).expand([6]).to_event(1),
                 enumerate=False)
        with m.plate("tokens"):
            m.input("doc")
            m.observed("w", lambda c, doc, words: word(c, words, doc))
    return m.to(dtype=dtype)


def data(nested: bool, family: str = "categorical") -> dict[str, torch.Tensor]:
    w = (W == 0).long() if family == "bernoulli" else W
    return ({"lengths": LENGTHS} if nested else {"doc": DOC}) | {"w": w, "c": C}


def joint_and_grads(model: genppl.Model, **values) -> tuple[torch.Tensor, torch.Tensor]:
    with pyro.get_param_store().scope():
        trace = poutine.trace(model.pyro_model).get_trace(**values)
        words = pyro.param("words").unconstrained()
        joint = trace.log_prob_sum()
        (grad,) = torch.autograd.grad(joint, words)
    return joint.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("family", ["categorical", "masked", "bernoulli"])
def test_log_joint_and_gradients_equal_the_hand_flattened_gather(dtype, family) -> None:
    nested = joint_and_grads(classes(True, dtype, family), **data(True, family))
    flat = joint_and_grads(classes(False, dtype, family), **data(False, family))
    torch.testing.assert_close(nested[0], flat[0], atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(nested[1], flat[1], atol=TOL[dtype], rtol=0)
    assert bool(nested[1].abs().sum() > 0)


def test_the_word_site_reads_one_row_per_document() -> None:
    """The path is taken: the site's distribution reads the document's row (six rows of
    parameters, not one per word)."""
    with pyro.get_param_store().scope():
        trace = poutine.trace(classes(True, torch.float64).pyro_model).get_trace(**data(True))
    fn = trace.nodes["w"]["fn"]
    while not isinstance(fn, AtEntries):
        fn = fn.base_dist
    assert tuple(fn.base_dist.logits.shape) == (6, 4) and tuple(fn.batch_shape) == (13,)


def lda(nested: bool) -> genppl.Model:
    topics = parameters(torch.float64)["words"]
    m = genppl.Model("lda")
    m.param("topics", topics)
    if nested:
        with m.plate("documents", 6):
            m.latent("theta", lambda: dist.Dirichlet(torch.ones(3)))
            with m.plate("words", sizes="lengths"):
                m.latent("z", lambda theta: dist.Categorical(theta))
                m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    else:
        m.latent("theta", lambda: dist.Dirichlet(torch.ones(3)).expand([6]).to_event(1))
        with m.plate("words"):
            m.input("doc")
            m.latent("z", lambda theta, doc: dist.Categorical(theta[doc]))
            m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    return m.to(dtype=torch.float64)


def test_an_enumerated_word_latent_sums_out_as_in_the_flat_model() -> None:
    """LDA's topic per word, read at its document's mixture, summed out by TraceEnum: the
    same marginal likelihood as the hand-flattened model's and the closed form."""
    theta = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample([6])
    topics = parameters(torch.float64)["words"]

    def loss(nested: bool) -> float:
        given = ({"lengths": LENGTHS} if nested else {"doc": DOC}) | {"w": W, "theta": theta}
        with pyro.get_param_store().scope():
            return float(TraceEnum_ELBO(max_plate_nesting=1).loss(
                lda(nested).pyro_model, lambda **_: None, **given))

    dirichlet = float(dist.Dirichlet(torch.ones(3, dtype=torch.float64)).log_prob(theta).sum())
    closed = dirichlet + float((theta[DOC] * topics[:, W].T).sum(-1).log().sum())
    assert loss(True) == pytest.approx(loss(False), abs=1e-10)
    assert -loss(True) == pytest.approx(closed, abs=1e-10)


def test_prior_draws_follow_each_documents_distribution() -> None:
    """Large seeded draws of words given each document's class: per-document frequencies
    within a chi-square bound of the class's word distribution (df 3, p = 1e-6: 30.7), a
    word of probability 0 never drawn, the empty documents kept (no words, in order)."""
    words = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4],
                          [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    lengths = torch.tensor([20000, 0, 30000, 25000])
    c = torch.tensor([0, 2, 1, 0])
    m = genppl.Model("draws")
    m.param("words", words)
    with m.plate("documents", 4):
        m.latent("c", lambda: dist.Categorical(torch.ones(3)), enumerate=False)
        with m.plate("tokens", sizes="lengths"):
            m.observed("w", lambda c, words: dist.Categorical(words[c]))
    m.to(dtype=torch.float64)
    pyro.set_rng_seed(0)
    with pyro.get_param_store().scope():
        draws = m.prior_program()(lengths=lengths, c=c)["w"]
    assert draws.shape == (75000,)
    for d, part in enumerate(draws.split(lengths.tolist())):
        if lengths[d] == 0:
            assert part.numel() == 0
            continue
        p = words[c[d]]
        counts = torch.bincount(part, minlength=4).double()
        assert bool((counts[p == 0] == 0).all())
        expected = p[p > 0] * lengths[d]
        chi2 = float(((counts[p > 0] - expected) ** 2 / expected).sum())
        assert chi2 < 30.7


def test_a_factory_that_also_reads_one_value_per_word_keeps_the_gather() -> None:
    """A factory that cannot run on one row per document (here it adds a per-word shift to
    its document's location) is called with its parents gathered per word, as before."""
    shift = torch.linspace(-1.0, 1.0, 13, dtype=torch.float64)
    m = genppl.Model("shifted")
    m.param("shift", shift)
    with m.plate("documents", 6):
        m.latent("mu", lambda: dist.Normal(0.0, 1.0))
        with m.plate("tokens", sizes="lengths"):
            m.observed("x", lambda mu, shift: dist.Normal(mu + shift, 1.0))
    m.to(dtype=torch.float64)
    mu = torch.arange(6, dtype=torch.float64)
    x = torch.zeros(13, dtype=torch.float64)
    with pyro.get_param_store().scope():
        trace = poutine.trace(m.pyro_model).get_trace(lengths=LENGTHS, mu=mu, x=x)
    expected = (dist.Normal(0.0, 1.0).log_prob(mu).sum()
                + dist.Normal(mu[DOC] + shift, 1.0).log_prob(x).sum())
    assert float(trace.log_prob_sum().detach()) == pytest.approx(float(expected), abs=1e-12)

"""Ragged nested plates (docs/dsl.md, *Ragged plates*): documents of different lengths, each
with its words, declared as Blei et al. draw them and compiled to one flat plate of all words
that reads its document's values -- the program the hand-flattened declaration compiles to.

Three documents of lengths 2, 0 and 5: an empty document is allowed (it has no words, and its
own nodes keep their prior)."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import genppl
from genppl import ModelError

pytestmark = pytest.mark.unit

F64 = torch.float64
LENGTHS = torch.tensor([2, 0, 5])
DOC = torch.repeat_interleave(torch.arange(3), LENGTHS)  # each word's document
W = torch.tensor([0, 1, 2, 2, 1, 0, 2])
TOPICS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=F64)
PRIOR = torch.tensor([0.4, 0.6], dtype=F64)


def lda_nested() -> genppl.Model:
    m = genppl.Model("lda_nested")
    m.param("topics", TOPICS)
    with m.plate("documents", 3):
        m.latent("theta", lambda: dist.Dirichlet(torch.ones(2, dtype=F64)))
        with m.plate("words", sizes="lengths", symbol="N"):
            m.latent("z", lambda theta: dist.Categorical(theta))
            m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    return m.to(dtype=F64)


def lda_flat() -> genppl.Model:
    """The same model flattened by hand: one table of mixtures read at each word's document."""
    m = genppl.Model("lda_flat")
    m.param("topics", TOPICS)
    m.latent("theta", lambda: dist.Dirichlet(torch.ones(2, dtype=F64)).expand([3]).to_event(1))
    with m.plate("words"):
        m.input("doc")
        m.latent("z", lambda theta, doc: dist.Categorical(theta[doc]))
        m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    return m.to(dtype=F64)


def classes_nested() -> genppl.Model:
    """Naive Bayes: a class per document (sampled: Pyro's enumeration cannot follow a ragged
    plate), each of its words drawn from the class's word distribution."""
    m = genppl.Model("nb_nested")
    m.param("prior", PRIOR)
    m.param("words", TOPICS)
    with m.plate("documents", 3):
        m.latent("c", lambda prior: dist.Categorical(prior), enumerate=False)
        with m.plate("tokens", sizes="lengths"):
            m.observed("w", lambda c, words: dist.Categorical(words[c]))
    return m.to(dtype=F64)


def classes_flat() -> genppl.Model:
    m = genppl.Model("nb_flat")
    m.param("prior", PRIOR)
    m.param("words", TOPICS)
    m.latent("c", lambda prior: dist.Categorical(prior).expand([3]).to_event(1),
             enumerate=False)
    with m.plate("tokens"):
        m.input("doc")
        m.observed("w", lambda c, doc, words: dist.Categorical(words[c[doc]]))
    return m.to(dtype=F64)


def log_joint(program, **data) -> float:
    with pyro.get_param_store().scope():
        return float(poutine.trace(program).get_trace(**data).log_prob_sum().detach())


def test_compiled_log_joint_equals_the_hand_flattened_programs() -> None:
    theta = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]], dtype=F64)
    z = torch.tensor([0, 1, 1, 0, 0, 1, 1])
    nested = log_joint(lda_nested().pyro_model, lengths=LENGTHS, w=W, theta=theta, z=z)
    flat = log_joint(lda_flat().pyro_model, doc=DOC, w=W, theta=theta, z=z)
    expected = (sum(float(dist.Dirichlet(torch.ones(2, dtype=F64)).log_prob(t)) for t in theta)
                + sum(math.log(theta[d, k]) + math.log(TOPICS[k, v])
                      for d, k, v in zip(DOC.tolist(), z.tolist(), W.tolist(), strict=True)))
    assert nested == pytest.approx(flat, abs=1e-12)
    assert nested == pytest.approx(expected, abs=1e-12)


def test_log_evidence_by_brute_force_equals_the_closed_form_and_the_flat_models() -> None:
    """log p(w) summed over every assignment of the classes, through the compiled programs,
    against the closed form: each document its own mixture over classes of its words'
    likelihood (an empty document contributes log 1)."""
    nested, flat = classes_nested().pyro_model, classes_flat().pyro_model
    joints_nested, joints_flat = [], []
    for c in itertools.product(range(2), repeat=3):
        c = torch.tensor(c)
        joints_nested.append(log_joint(nested, lengths=LENGTHS, w=W, c=c))
        joints_flat.append(log_joint(flat, doc=DOC, w=W, c=c))
    closed = sum(math.log(sum(float(PRIOR[k]) * math.prod(
        float(TOPICS[k, v]) for v in W[DOC.eq(d)].tolist()) for k in range(2)))
        for d in range(3))
    evidence = float(torch.tensor(joints_nested, dtype=F64).logsumexp(0))
    assert evidence == pytest.approx(closed, abs=1e-12)
    assert joints_nested == pytest.approx(joints_flat, abs=1e-12)


def test_graph_records_the_nesting_and_the_sizes_input() -> None:
    g = lda_nested().graph
    assert g.nodes["z"]["plates"] == ("documents", "words")
    assert g.nodes["theta"]["plates"] == ("documents",)
    assert g.nodes["lengths"]["kind"] == "input" and g.nodes["lengths"]["plates"] == (
        "documents",)
    words = g.graph["plates"]["words"]
    assert (words["parent"], words["sizes"], words["symbol"]) == ("documents", "lengths", "N")
    assert words["dim"] == g.graph["plates"]["documents"]["dim"]  # one flat axis
    assert set(g.edges) == {("theta", "z"), ("z", "w"), ("topics", "w")}


def test_prior_draws_lay_the_words_out_flat_and_keep_empty_documents() -> None:
    post = genppl.infer(lda_nested(), {"lengths": LENGTHS}, engine="prior", num_samples=4,
                        seed=0)
    assert post.samples["z"].shape[-1] == 7 and post.samples["w"].shape[-1] == 7
    assert post.samples["theta"].shape[-2:] == (3, 2)


def test_an_enumerated_latent_read_from_a_ragged_plate_is_refused() -> None:
    m = genppl.Model("enumerated")
    m.param("words", TOPICS)
    with m.plate("documents", 3):
        m.latent("c", lambda: dist.Categorical(PRIOR))
        with m.plate("tokens", sizes="lengths"):
            m.observed("w", lambda c, words: dist.Categorical(words[c]))
    with pytest.raises(ModelError, match=r"'c'.*enumerated.*ragged"):
        genppl.infer(m, {"lengths": LENGTHS, "w": W}, engine="enum")


@pytest.mark.parametrize("lengths, match", [
    (torch.tensor([2, 0, 4]), "ragged plate 'words'.*sum to 6.*7 entries"),
    (torch.tensor([2, -1, 6]), "ragged plate 'words'.*-1 at entry 1"),
    (torch.tensor([2.5, 0.0, 4.5]), "ragged plate 'words'.*one integer per entry"),
    (torch.tensor([2, 5]), "ragged plate 'words'.*2 entries.*'documents' has size 3"),
])
def test_bad_sizes_name_the_plate(lengths: torch.Tensor, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        log_joint(lda_nested().pyro_model, lengths=lengths, w=W)


@pytest.mark.parametrize("lengths, match", [
    (torch.tensor([2, 0, 4]), r"ragged plate 'words'.*sum to 6.*7 entries"),
    (torch.tensor([2, -1, 6]), r"ragged plate 'words'.*-1 at entry 1"),
    (torch.tensor([2, 5]), r"ragged plate 'words'.*2 entries.*'documents' has size 3"),
])
def test_bad_sizes_name_the_plate_on_the_engines_path(lengths: torch.Tensor,
                                                      match: str) -> None:
    """Where ``genppl.fit`` runs the flattened model, the same checks, the same words."""
    with pytest.raises(ModelError, match=match):
        genppl.fit(lda_priors(True), {"lengths": lengths, "w": W}, engine="cavi", steps=1)


def test_ragged_plates_are_declared_directly_inside_one_plate() -> None:
    m = genppl.Model("bad")
    with pytest.raises(ModelError, match=r"ragged plate 'words'.*inside one top-level plate"), \
            m.plate("words", sizes="lengths"):
        pass
    with m.plate("documents"):
        with pytest.raises(ModelError, match=r"ragged plate 'words'.*takes no size="), \
                m.plate("words", 5, sizes="lengths"):
            pass
        m.latent("x", lambda: dist.Normal(0.0, 1.0))
        with pytest.raises(ModelError, match=r"sizes='x' must be an input of plate"), \
                m.plate("tokens", sizes="x"):
            pass
        with m.plate("words", sizes="lengths"):
            with pytest.raises(ModelError, match=r"inside ragged plate 'words'"), \
                    m.plate("letters"):
                pass
            with pytest.raises(ModelError, match=r"chain 't'.*inside ragged plate"), \
                    m.chain("t"):
                pass
    with m.plate("batches", 10, subsample_size=2), m.plate("items", sizes="counts"):
        pass  # a minibatch of batches holds their items (tests/unit/test_ragged_minibatch.py)
    assert m.plates["items"].parent == "batches"


def test_a_node_of_the_documents_plate_cannot_read_the_words() -> None:
    m = genppl.Model("bad")
    with m.plate("documents"):
        with m.plate("words", sizes="lengths"):
            m.latent("z", lambda: dist.Normal(0.0, 1.0))
        with pytest.raises(ModelError, match=r"inside plate 'words'"):
            m.latent("total", lambda z: dist.Normal(z, 1.0))


# --------------------------------------------------------------------------- engines

def lda_priors(nested: bool) -> genppl.Model:
    """LDA with Dirichlet topics and mixtures: nested as drawn, or flattened by hand."""
    m = genppl.Model("lda")
    m.latent("topics", lambda: dist.Dirichlet(torch.full((3,), 0.5)).expand([2]).to_event(1))
    if nested:
        with m.plate("documents", 3):
            m.latent("theta", lambda: dist.Dirichlet(torch.full((2,), 0.3)))
            with m.plate("words", sizes="lengths"):
                m.latent("z", lambda theta: dist.Categorical(theta))
                m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    else:
        m.latent("theta", lambda: dist.Dirichlet(torch.full((2,), 0.3)).expand([3]).to_event(1))
        with m.plate("words"):
            m.input("doc")
            m.latent("z", lambda theta, doc: dist.Categorical(theta[doc]))
            m.observed("w", lambda z, topics: dist.Categorical(topics[..., z, :]))
    return m.to(dtype=F64)


NESTED_DATA = {"lengths": LENGTHS, "w": W}
FLAT_DATA = {"doc": DOC, "w": W}


def test_cavi_on_the_nested_declaration_is_cavi_on_the_hand_flattened_one() -> None:
    """The engines see the hand-flattened model (``genppl.dsl.ragged.flatten``): the same
    ELBO at every iteration and the same fitted factors."""
    nested = genppl.fit(lda_priors(True), NESTED_DATA, engine="cavi", steps=15, seed=0,
                        local=("theta",))
    flat = genppl.fit(lda_priors(False), FLAT_DATA, engine="cavi", steps=15, seed=0,
                      local=("theta",))
    assert nested.info["elbo"] == flat.info["elbo"]
    assert torch.equal(nested.info["q"]["theta"].concentration,
                       flat.info["q"]["theta"].concentration)


def test_collapsed_gibbs_on_the_nested_declaration_draws_the_flat_ones_draws() -> None:
    nested = genppl.infer(lda_priors(True), NESTED_DATA, engine="gibbs", num_samples=4,
                          warmup_steps=3, seed=1)
    flat = genppl.infer(lda_priors(False), FLAT_DATA, engine="gibbs", num_samples=4,
                        warmup_steps=3, seed=1)
    assert torch.equal(nested.samples["z"], flat.samples["z"])
    assert nested.samples["z"].shape[-1] == 7


def test_exact_engine_on_a_ragged_plate_equals_brute_force() -> None:
    """A corpus-wide finite latent read by every word of every (ragged) document: exact log
    evidence and marginals against enumeration by hand, and against the flat declaration."""
    def model(nested: bool) -> genppl.Model:
        m = genppl.Model("style")
        m.latent("style", lambda: dist.Categorical(PRIOR))
        if nested:
            with m.plate("documents", 3), m.plate("words", sizes="lengths"):
                m.observed("w", lambda style: dist.Categorical(TOPICS[style]))
        else:
            with m.plate("words"):
                m.observed("w", lambda style: dist.Categorical(TOPICS[style]))
        return m.to(dtype=F64)

    nested = genppl.infer(model(True), NESTED_DATA, engine="exact")
    flat = genppl.infer(model(False), {"w": W}, engine="exact")
    joint = torch.stack([PRIOR[k].log() + TOPICS[k, W].log().sum() for k in range(2)])
    assert nested.log_evidence == pytest.approx(float(joint.logsumexp(0)), abs=1e-12)
    assert nested.log_evidence == pytest.approx(flat.log_evidence, abs=1e-12)
    assert torch.allclose(nested.marginals["style"], joint.softmax(0), atol=1e-12)


def test_svi_with_a_dsl_guide_runs_the_model_as_declared() -> None:
    """A DSL guide is declared against the nested model, so SVI runs the compiled ragged
    program (each word's topic summed out in Pyro, each document's mixture from the guide):
    its loss is the negative ELBO, finite, and the fitted mixtures have one row per
    document."""
    from torch.distributions import constraints

    m = lda_priors(True)
    g = m.guide()
    g.param("q_topics", torch.ones(2, 3, dtype=F64), constraint=constraints.positive)
    g.param("q_theta", torch.ones(3, 2, dtype=F64), constraint=constraints.positive)
    g.latent("topics", lambda q_topics: dist.Dirichlet(q_topics).to_event(1))
    g.latent("theta", lambda q_theta: dist.Dirichlet(q_theta))
    with pyro.get_param_store().scope():
        result = genppl.fit(m, NESTED_DATA, engine="svi", guide=g, steps=20, seed=0)
        assert result.info["guide"] is not None
    assert all(math.isfinite(x) for x in result.losses)
    assert result.params["q_theta"].shape == (3, 2)


def test_tabulating_engines_run_a_documents_finite_latent_as_declared() -> None:
    """A finite latent per document (naive Bayes's class) is not lifted to rows: the exact
    engine runs the nested declaration (its words multiplied into their document's table,
    ``tests/unit/test_nested_plates_exact.py``), against the closed form of each document's
    mixture over classes."""
    post = genppl.infer(classes_nested(), {"lengths": LENGTHS, "w": W}, engine="exact")
    closed = sum(math.log(sum(float(PRIOR[k]) * math.prod(
        float(TOPICS[k, v]) for v in W[DOC.eq(d)].tolist()) for k in range(2)))
        for d in range(3))
    assert post.log_evidence == pytest.approx(closed, abs=1e-12)


def test_repeated_calls_reuse_one_lowered_model_until_the_declaration_changes() -> None:
    """The lowering is kept by the declared model: a second call runs the same lowered
    declaration (its graph and tables kept), and a change to the declaration lowers anew."""
    from genppl.dsl.ragged import flatten

    m = lda_nested()
    data = {"lengths": LENGTHS, "w": W}
    first, _ = flatten(m, data)
    again, flat_data = flatten(m, data)
    assert again is first and first is not m
    torch.testing.assert_close(flat_data["w"], W)
    m.param("unused", torch.tensor(1.0, dtype=F64))
    assert flatten(m, data)[0] is not first

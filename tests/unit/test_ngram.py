"""Character n-grams (``genppl.ngram``): the tables against the counts of a small string and
against a dictionary implementation of Witten-Bell, the back-off automaton against a walk,
the DSL chain's log-probability against the tables, and the prior engine's draws against the
tables by a Monte Carlo z-test."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from pyro import poutine

from genppl.data.text import encode, normalise
from genppl.errors import ModelError
from genppl.ngram import build_ngram_chain, fit_ngram, sample_text

pytestmark = pytest.mark.unit

ENGLISH = " abcdefghijklmnopqrstuvwxyz"
ENGLISH_TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
                "it was the age of foolishness, it was the epoch of belief, it was the epoch "
                "of incredulity, it was the season of Light, it was the season of Darkness.")
ABC = "abc"


def context_counts(text: str, k: int) -> Counter[tuple[str, str]]:
    """n(h, c) for contexts h of exactly k characters, by brute force over the string."""
    return Counter((text[i - k:i], text[i]) for i in range(k, len(text)))


def seen_contexts(ngram: object, alphabet: str) -> set[str]:
    """The contexts of an ``NGram``'s states, read back from their base-V ids."""
    v = len(alphabet)
    out = set()
    for length, number in zip(ngram.lengths.tolist(), ngram.ids.tolist(), strict=True):  # type: ignore[attr-defined]
        chars = []
        for _ in range(length):
            number, c = divmod(number, v)
            chars.append(alphabet[c])
        out.add("".join(reversed(chars)))
    return out


@pytest.mark.parametrize("order", [0, 1, 2])
def test_states_are_the_contexts_seen_and_order_0_is_add_one_counts(order: int) -> None:
    text = "abacabcaab"
    ngram = fit_ngram(encode(text, ABC), order, ABC)
    want = {h for k in range(order + 1) for (h, _) in context_counts(text, k)}
    assert seen_contexts(ngram, ABC) == want
    counts = Counter(text)
    order0 = torch.tensor([(counts[c] + 1) / (len(text) + len(ABC)) for c in ABC],
                          dtype=torch.float64)
    torch.testing.assert_close(ngram.probs[0], order0, rtol=0, atol=1e-15)


def test_order_2_counts_and_an_unseen_context_backs_off() -> None:
    """Order 2 on a string where "cc" never occurs: its row is the one of the longest seen
    suffix ("c"), and a seen context's row is the Witten-Bell mix of its own counts."""
    text = "abacabcaab"
    ngram = fit_ngram(encode(text, ABC), 2, ABC)
    n1, n2 = context_counts(text, 1), context_counts(text, 2)
    assert "cc" not in seen_contexts(ngram, ABC)
    states = ngram.states_before(encode("acc" + "a", ABC))
    assert int(states[3]) == int(ngram.states_before(encode("ca", ABC))[1])  # state of "c"
    order0 = {c: (Counter(text)[c] + 1) / (len(text) + 3) for c in ABC}

    def p1(h: str, c: str) -> float:
        row = {d: n for (g, d), n in n1.items() if g == h}
        return (n1[h, c] + len(row) * order0[c]) / (sum(row.values()) + len(row))

    row = {d: n for (g, d), n in n2.items() if g == "ab"}  # "ab" -> a, c: two kinds
    want = [(n2["ab", c] + len(row) * p1("b", c)) / (sum(row.values()) + len(row)) for c in ABC]
    got = ngram.log_probs(encode("aba", ABC))[2].exp()
    assert float(got) == pytest.approx(want[0], abs=1e-15)
    assert sum(want) == pytest.approx(1.0, abs=1e-15)


def test_a_second_fit_in_the_same_process_depends_only_on_its_own_text() -> None:
    first = fit_ngram(encode("abcabcabc", ABC), 2, ABC)
    other = fit_ngram(encode("aaabbbccc", ABC), 2, ABC)
    again = fit_ngram(encode("abcabcabc", ABC), 2, ABC)
    for name in ("lengths", "ids", "probs", "successor"):
        torch.testing.assert_close(getattr(again, name), getattr(first, name), rtol=0, atol=0)
    assert not torch.equal(other.probs[: min(other.states, first.states)],
                           first.probs[: min(other.states, first.states)])


def test_fit_refuses_texts_too_short_and_orders_out_of_range() -> None:
    with pytest.raises(ModelError, match="cannot train order 3"):
        fit_ngram(encode("abc", ABC), 3, ABC)
    with pytest.raises(ModelError, match="out of range"):
        fit_ngram(encode("abc", ABC), -1, ABC)


def witten_bell(train: str, alphabet: str, k: int, history: str, c: str) -> float:
    """P(c | history) by the definition, with dictionaries: back off to the longest suffix of
    at most k characters seen as a context, then interpolate down to add-one order 0."""
    def counts(j: int) -> Counter[tuple[str, str]]:
        return Counter((train[i - j:i], train[i]) for i in range(j, len(train)))

    def prob(h: str) -> float:
        table = counts(len(h))
        n_hc = table[h, c]
        row = {d: n for (g, d), n in table.items() if g == h}
        if not h:
            return (n_hc + 1) / (sum(row.values()) + len(alphabet))
        return (n_hc + len(row) * prob(h[1:])) / (sum(row.values()) + len(row))

    seen = {h for j in range(k + 1) for (h, _) in counts(j)}
    h = next(history[len(history) - j:] for j in range(min(k, len(history)), -1, -1)
             if history[len(history) - j:] in seen)
    return prob(h)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_ngram_tables_equal_the_witten_bell_definition(order: int) -> None:
    train = normalise(ENGLISH_TEXT, ENGLISH)
    test = normalise("It was the zeal of the quiet age; wisdom was worst.", ENGLISH)
    ngram = fit_ngram(encode(train, ENGLISH), order, ENGLISH)
    torch.testing.assert_close(ngram.probs.sum(-1), torch.ones(ngram.states,
                                                               dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert bool((ngram.probs > 0).all())
    got = ngram.log_probs(encode(test, ENGLISH))
    want = torch.tensor([math.log(witten_bell(train, ENGLISH, order, test[:t], test[t]))
                         for t in range(len(test))], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # The automaton walked step by step reaches the states found by suffix lookup.
    codes = encode(test, ENGLISH)
    state, walked = 0, []
    for c in codes.tolist():
        walked.append(state)
        state = int(ngram.successor[state, c])
    assert ngram.states_before(codes).tolist() == walked


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dsl_chain_log_probability_equals_the_tables(dtype: torch.dtype) -> None:
    codes = encode(normalise(ENGLISH_TEXT, ENGLISH), ENGLISH)
    ngram = fit_ngram(codes[:150], 2, ENGLISH)
    model = build_ngram_chain(ngram).to("cpu", dtype)
    test = codes[150:]
    trace = poutine.trace(model.pyro_model).get_trace(char=test)
    states = [int(trace.nodes[f"state[{t}]"]["value"]) for t in range(len(test))]
    assert [0, *states[:-1]] == ngram.states_before(test).tolist()
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    assert float(trace.log_prob_sum()) == pytest.approx(float(ngram.log_probs(test).sum()),
                                                        abs=tol)




def test_samples_have_the_length_and_alphabet_asked_for_and_follow_the_seed() -> None:
    codes = encode(normalise(ENGLISH_TEXT, ENGLISH), ENGLISH)
    ngram = fit_ngram(codes, 3, ENGLISH)
    a = sample_text(ngram, 57, seed=3)
    assert len(a) == 57 and set(a) <= set(ENGLISH)
    assert sample_text(ngram, 57, seed=3) == a
    assert sample_text(ngram, 57, seed=4) != a
    b = sample_text(ngram, 20, seed=3, dtype=torch.float32)
    assert len(b) == 20 and set(b) <= set(ENGLISH)
    with pytest.raises(ModelError, match="positive int"):
        sample_text(ngram, 0)


def test_prior_draws_follow_the_transition_table() -> None:
    """Bigram frequencies of one long draw against the order-1 table: each row's count of
    the row's most likely successor is Binomial(n, p), so |z| < 5 fails by chance with
    probability under 1e-5 per row."""
    codes = encode(normalise(ENGLISH_TEXT, ENGLISH), ENGLISH)
    ngram = fit_ngram(codes, 1, ENGLISH)
    drawn = encode(sample_text(ngram, 3000, seed=11), ENGLISH)
    states = ngram.states_before(drawn)
    checked = 0
    for s in range(ngram.states):
        nexts = drawn[states == s]
        if len(nexts) < 200:
            continue
        c = int(ngram.probs[s].argmax())
        p = float(ngram.probs[s, c])
        z = (float((nexts == c).sum()) - len(nexts) * p) / math.sqrt(len(nexts) * p * (1 - p))
        assert abs(z) < 5, (s, z)
        checked += 1
    assert checked >= 3

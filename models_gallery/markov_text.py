"""Markov chains over text: Markov's vowels (1913) and Shannon's letter n-grams (1948).

**Markov 1913.** To show that the law of large numbers does not need independence, Markov
wrote out the first 20,000 letters of Pushkin's *Eugene Onegin*, without spaces or
punctuation, marked each letter vowel or consonant and counted: vowel fraction 0.432,
P(vowel | vowel) = 0.128, P(vowel | consonant) = 0.663 (8,638 vowels; 1,104 vowel-vowel and
7,535 consonant-vowel pairs). Here the same method runs on the Russian sayings of Debian's
``fortunes-ru`` (``genppl.data.fortunes``): lower-cased Russian letters only, in the corpus's
fixed order, attribution lines left out. The two-state chain is declared on the DSL with its
transition matrix a learnable param and fitted by ``engine="em"``; the letters are given as
evidence on the chain's states, so the E-step's expected counts are the transition counts
and one M-step lands on the closed-form maximum-likelihood estimate (count / row total).

Letter conventions, and why. ``ё`` is a vowel (ie with a diaeresis, which most printed
Russian leaves off). ``й`` is a consonant (/j/, as the school grammar classes it). The signs
``ъ`` and ``ь`` stand for no sound of their own, and they are the convention the numbers
depend on: counted as consonants, they add about 2% of letters, all consonants. Markov's
1913 text was in the old orthography, with a ``ъ`` after every word-final hard consonant,
so counting them would have moved his figures far more. The run prints both conventions
(``SIGN_CONVENTIONS``) and drops the signs by default, because that is the reading Markov's
figures support: dropped, the fortunes give P(vowel | consonant) = 0.664 (his 0.663) and a
vowel fraction of 0.430 (his 0.432); counted as consonants, 0.638 and 0.421.

**Shannon 1948.** An order-k character model predicts the next character from the last k;
as a chain it is first-order over contexts of length k: the state is the context, and reading
a character moves it to the next context. The state space is kept sparse: only contexts seen
in training are states (the exact table would have V^k rows). Probabilities are Witten-Bell
interpolated (Witten & Bell 1991; the estimator of PPM-C): P_k(c | h) = (n(h, c) + T(h)
P_{k-1}(c | h')) / (n(h) + T(h)), with h' the context without its oldest character and T(h)
the number of distinct characters seen after h; order 0 is add-one smoothed, so every
character of the alphabet has positive probability everywhere. A history whose last k
characters were never seen as a context backs off to its longest suffix that was, so the
chain's state is that suffix (a back-off automaton; states of every length up to k). The
alphabets are Shannon's: 26 letters and the space for English (BBC articles,
``genppl.data.bbc``), the 32 Russian letters (``ё`` read without its diaeresis) and the space for
Russian; anything else becomes a word break. Both corpora are split once by document (every tenth
article or saying held out); the report gives held-out bits per character for k = 0..4.

The same fitted tables are declared on the DSL as a chain (``build_ngram_chain``): the
character is an observed node reading the previous state, and the state a point mass at the
successor of the previous state and the new character. ``engine="prior"`` draws Shannon's
samples from it (ancestral sampling, one ``pyro.sample`` per step), and the compiled Pyro
model's log-probability of a text is the same number the tables give (a test holds them
equal).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import constraints

import genppl
from genppl.errors import ModelError
from genppl.gallery import GalleryEntry, RunConfig, RunReport, figure, render_graph

# ---------------------------------------------------------------------- Markov 1913
VOWELS = "аеёиоуыэюя"
CONSONANTS = "бвгджзйклмнпрстфхцчшщ"
SIGNS = "ъь"
#: How the signs ъ, ь are read: left out (Markov) or counted as consonants.
SIGN_CONVENTIONS = ("drop", "consonant")
VOWEL, CONSONANT = 0, 1
#: Markov's sample size and published statistics (first 20,000 letters of *Eugene Onegin*).
MARKOV_LETTERS = 20_000
MARKOV_1913 = {"vowel_fraction": 0.432, "p_vowel_after_vowel": 0.128,
               "p_vowel_after_consonant": 0.663}

# ---------------------------------------------------------------------- Shannon 1948
ENGLISH = " abcdefghijklmnopqrstuvwxyz"
RUSSIAN = " абвгдежзийклмнопрстуфхцчшщъыьэюя"
ORDERS = (0, 1, 2, 3, 4)
HELD_OUT_EVERY = 10  # document i is held out when i % 10 == 0
SAMPLE_LENGTH = 160


# ====================================================================== vowels and consonants
def russian_letters(text: str, signs: str = "drop") -> str:
    """The Russian letters of ``text``, lower-cased, in order: no spaces, punctuation, digits
    or other alphabets; ``signs="drop"`` leaves out ъ and ь, ``"consonant"`` keeps them."""
    if signs not in SIGN_CONVENTIONS:
        raise ModelError(f"signs={signs!r}: pass one of {SIGN_CONVENTIONS}.")
    keep = set(VOWELS + CONSONANTS + (SIGNS if signs == "consonant" else ""))
    return "".join(c for c in text.lower() if c in keep)


def vowel_consonant(letters: str) -> torch.Tensor:
    """``VOWEL`` (0) or ``CONSONANT`` (1) per letter; anything not a Russian letter is an
    error (clean the text with ``russian_letters`` first)."""
    vowels, consonants = set(VOWELS), set(CONSONANTS + SIGNS)
    bad = sorted({c for c in letters if c not in vowels and c not in consonants})
    if bad:
        raise ModelError(f"vowel_consonant: {bad[:5]} are not Russian letters; pass the text "
                         "through russian_letters(...) first.")
    return torch.tensor([VOWEL if c in vowels else CONSONANT for c in letters],
                        dtype=torch.long)


def build_vowel_chain() -> genppl.Model:
    """Markov's two-state chain: a letter's class (vowel, consonant) depends on the previous
    letter's through the learnable ``trans``.

    The classes are latent states given as evidence (data for a latent is evidence on it,
    and its time axis sets the chain's length): engine ``em`` finds the closed-form M-step
    of ``Categorical(trans[letter_prev])`` when the parent is a state on its grid, which an
    observed parent is not. The first letter's law ``start`` is fixed at one half each (one
    letter says nothing about it).
    """
    m = genppl.Model("markov_vowels")
    m.deterministic("start", lambda: torch.tensor([0.5, 0.5]), event_dim=1)
    m.param("trans", lambda: torch.full((2, 2), 0.5), constraint=constraints.simplex)
    with m.chain("t"):
        m.latent("letter", lambda letter_prev, trans: dist.Categorical(trans[letter_prev]),
                 init=lambda start: dist.Categorical(start))
    return m


@dataclass(frozen=True)
class VowelStatistics:
    """Markov's numbers from a fitted chain: ``trans[i, j]`` = P(class j | previous class i)
    (0 vowel, 1 consonant), the sample's vowel fraction and the chain's stationary one."""

    letters: int
    vowel_fraction: float
    trans: torch.Tensor
    iterations: int

    @property
    def p_vowel_after_vowel(self) -> float:
        return float(self.trans[VOWEL, VOWEL])

    @property
    def p_vowel_after_consonant(self) -> float:
        return float(self.trans[CONSONANT, VOWEL])

    @property
    def stationary_vowel_fraction(self) -> float:
        """π_v = P(v | c) / (P(v | c) + P(c | v)): the vowel share the chain settles to."""
        leave = float(self.trans[VOWEL, CONSONANT])
        return self.p_vowel_after_consonant / (self.p_vowel_after_consonant + leave)


def vowel_statistics(classes: torch.Tensor, *, device: str = "cpu",
                     dtype: torch.dtype = torch.float64) -> VowelStatistics:
    """Fit Markov's chain to a sequence of classes with ``engine="em"`` (from the declared
    ``trans``: EM starts from the declaration, never from an earlier run's params)."""
    classes = torch.as_tensor(classes)
    if classes.dim() != 1 or len(classes) < 2:
        raise ModelError(f"vowel_statistics: pass a 1-D sequence of at least two classes, got "
                         f"shape {tuple(classes.shape)}.")
    model = build_vowel_chain().to(device, dtype)
    result = genppl.fit(model, {"letter": classes}, engine="em", learn=["trans"], steps=20,
                        tol=1e-12, progress=False)
    fraction = float((classes == VOWEL).double().mean())
    return VowelStatistics(len(classes), fraction, result.params["trans"].detach(),
                           int(result.info["iterations"]))


# ====================================================================== character n-grams
def normalise(text: str, alphabet: str) -> str:
    """``text`` in ``alphabet``: lower-cased, ``ё`` read without its diaeresis, and every run
    of other characters (punctuation, digits, line breaks) one space, as in Shannon's 27
    symbols."""
    known = set(alphabet) - {" "}
    out: list[str] = []
    for c in text.lower().replace("ё", "\N{CYRILLIC SMALL LETTER IE}"):
        if c in known:
            out.append(c)
        elif out and out[-1] != " ":
            out.append(" ")
    return "".join(out).strip()


def encode(text: str, alphabet: str) -> torch.Tensor:
    """Character codes (indices into ``alphabet``) of an already normalised text."""
    index = {c: i for i, c in enumerate(alphabet)}
    bad = sorted({c for c in text if c not in index})
    if bad:
        raise ModelError(f"encode: {bad[:5]} are not in the alphabet {alphabet!r}; pass the "
                         "text through normalise(text, alphabet) first.")
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def decode(codes: torch.Tensor, alphabet: str) -> str:
    return "".join(alphabet[int(i)] for i in codes)


@dataclass(frozen=True)
class NGram:
    """A fitted order-``order`` model as a back-off automaton over the seen contexts.

    State ``s`` is a context of ``lengths[s]`` characters (base-V number ``ids[s]``, oldest
    character most significant); state 0 is the empty context. ``probs[s]`` is P(next
    character | context), ``successor[s, c]`` the state after reading ``c``: the longest
    suffix, of at most ``order`` characters, of the context followed by ``c`` that was seen.
    """

    order: int
    alphabet: str
    lengths: torch.Tensor  # (S,) long
    ids: torch.Tensor  # (S,) long
    probs: torch.Tensor  # (S, V) float64
    successor: torch.Tensor  # (S, V) long

    @property
    def states(self) -> int:
        return len(self.lengths)

    def _lookup(self, length: int, ids: torch.Tensor) -> torch.Tensor:
        """State of each context of ``length`` characters with the given ids; -1 if unseen."""
        block = (self.lengths == length).nonzero().squeeze(-1)  # never empty (fit_ngram)
        known = self.ids[block]  # sorted within a length
        pos = torch.searchsorted(known, ids).clamp(max=len(known) - 1)
        return torch.where(known[pos] == ids, block[pos], -1)

    def states_before(self, codes: torch.Tensor) -> torch.Tensor:
        """The state from which each character of ``codes`` is predicted: the longest seen
        suffix of the text before it (empty at the start), for all positions at once."""
        v = len(self.alphabet)
        n = len(codes)
        state = torch.zeros(n, dtype=torch.long)
        window = torch.zeros(n, dtype=torch.long)  # id of the `length` characters before t
        for length in range(1, self.order + 1):
            shifted = torch.zeros(n, dtype=torch.long)
            shifted[length:] = codes[: n - length]
            window = window + shifted * v ** (length - 1)
            found = self._lookup(length, window)
            ok = (found >= 0) & (torch.arange(n) >= length)
            state = torch.where(ok, found, state)
        return state

    def log_probs(self, codes: torch.Tensor) -> torch.Tensor:
        """Natural-log probability of each character of ``codes`` given the text before it."""
        return self.probs[self.states_before(codes), codes].log()

    def bits_per_char(self, codes: torch.Tensor) -> float:
        """Per-character cross-entropy of ``codes`` under the model, in bits."""
        return float(-self.log_probs(codes).sum() / (len(codes) * math.log(2)))


def fit_ngram(codes: torch.Tensor, order: int, alphabet: str) -> NGram:
    """Count contexts of 0..``order`` characters in ``codes`` and smooth (module docstring)."""
    v = len(alphabet)
    if order < 0 or v ** (order + 1) >= 2 ** 62:
        raise ModelError(f"fit_ngram: order={order} with {v} symbols is out of range; the "
                         "context ids must fit in 62 bits.")
    if len(codes) <= order:
        raise ModelError(f"fit_ngram: {len(codes)} characters cannot train order {order}.")
    codes = torch.as_tensor(codes, dtype=torch.long).cpu()
    n = len(codes)
    lengths, ids, probs = [], [], []
    below: torch.Tensor | None = None  # P_{k-1}(c | context), one row per context of k-1
    below_ids = torch.zeros(1, dtype=torch.long)
    context = torch.zeros(n, dtype=torch.long)  # id of the k characters before t
    for k in range(order + 1):
        if k:
            shifted = torch.zeros(n, dtype=torch.long)
            shifted[k:] = codes[: n - k]
            context = context + shifted * v ** (k - 1)
        h, c = context[k:], codes[k:]
        seen, row = torch.unique(h, return_inverse=True)
        counts = torch.zeros(len(seen), v, dtype=torch.float64)
        counts.index_put_((row, c), torch.ones(len(c), dtype=torch.float64), accumulate=True)
        if below is None:  # order 0: add one to every character
            p = (counts + 1) / (counts.sum(-1, keepdim=True) + v)
        else:  # Witten-Bell: back off to the context without its oldest character
            parent = torch.searchsorted(below_ids, seen % v ** (k - 1))
            distinct = (counts > 0).sum(-1, keepdim=True).to(counts.dtype)
            p = (counts + distinct * below[parent]) / (counts.sum(-1, keepdim=True) + distinct)
        lengths.append(torch.full((len(seen),), k, dtype=torch.long))
        ids.append(seen)
        probs.append(p)
        below, below_ids = p, seen
    ngram = NGram(order, alphabet, torch.cat(lengths), torch.cat(ids), torch.cat(probs),
                  torch.empty(0, 0, dtype=torch.long))
    return NGram(order, alphabet, ngram.lengths, ngram.ids, ngram.probs, _successors(ngram))


def _successors(ngram: NGram) -> torch.Tensor:
    """``successor[s, c]``: the longest seen suffix (at most ``order`` characters) of the
    context of ``s`` followed by ``c``; seen contexts are closed under taking suffixes, so
    the empty context is always a fallback."""
    v = len(ngram.alphabet)
    ext = ngram.ids[:, None] * v + torch.arange(v)  # (S, V): context + c, as a base-V id
    ext_len = (ngram.lengths + 1).clamp(max=ngram.order)[:, None].expand(-1, v)
    successor = torch.zeros(ngram.states, v, dtype=torch.long)
    for length in range(1, ngram.order + 1):
        found = ngram._lookup(length, ext % v ** length)
        successor = torch.where((found >= 0) & (ext_len >= length), found, successor)
    return successor


def build_ngram_chain(ngram: NGram) -> genppl.Model:
    """The fitted order-k model as a chain on the DSL: the character reads the previous
    state, the state is a point mass at ``successor[state_prev, char]`` (a deterministic
    node cannot read its own previous step, a latent with ``init`` can). The tables are
    known numbers, declared as deterministic nodes made in the model's dtype and device."""
    m = genppl.Model(f"char_{ngram.order}gram")
    m.deterministic("probs", _table(ngram.probs), event_dim=2)
    m.deterministic("successor", _table(ngram.successor), event_dim=2)
    with m.chain("t"):
        m.observed("char", lambda state_prev, probs: dist.Categorical(probs[state_prev]),
                   init=lambda probs: dist.Categorical(probs[0]))
        m.latent("state", lambda state_prev, char, successor: dist.Delta(
                     successor[state_prev, char]),
                 init=lambda char, successor: dist.Delta(successor[0, char]))
    return m


def _table(values: torch.Tensor) -> Any:
    """A factory of no parents giving ``values`` where the model's factories run (floating
    tables in the model's dtype, integer tables exact)."""
    def make() -> torch.Tensor:
        dtype = torch.get_default_dtype() if values.is_floating_point() else values.dtype
        return values.to(device=torch.get_default_device(), dtype=dtype)
    return make


def sample_text(ngram: NGram, length: int = SAMPLE_LENGTH, *, seed: int = 0,
                device: str = "cpu", dtype: torch.dtype = torch.float64) -> str:
    """``length`` characters drawn from the model by ``engine="prior"`` on its DSL chain."""
    if not isinstance(length, int) or length < 1:
        raise ModelError(f"sample_text: length={length!r}; pass a positive int.")
    model = build_ngram_chain(ngram).to(device, dtype)
    draw = genppl.infer(model, {}, engine="prior", sizes={"t": length}, num_samples=1,
                        seed=seed, progress=False)
    return decode(draw.samples["char"][0].reshape(-1).cpu(), ngram.alphabet)


# ====================================================================== corpora and run
@dataclass(frozen=True)
class Split:
    """A language's alphabet and its training and held-out codes."""

    language: str
    alphabet: str
    train: torch.Tensor
    test: torch.Tensor


def split_documents(language: str, documents: Sequence[str], alphabet: str,
                    limit: int | None = None) -> Split:
    """Normalise each document; every ``HELD_OUT_EVERY``-th is held out; the rest, joined by
    spaces, train. ``limit`` keeps the first ``limit`` characters of each part (small runs)."""
    parts: tuple[list[str], list[str]] = ([], [])
    sizes = [0, 0]
    for i, doc in enumerate(documents):
        if limit is not None and min(sizes) > limit:
            break
        text = normalise(doc, alphabet)
        if text:
            held_out = i % HELD_OUT_EVERY == 0
            parts[held_out].append(text)
            sizes[held_out] += len(text) + 1
    train, test = (" ".join(p)[:limit] for p in parts)
    if not train or not test:
        raise ModelError(f"{language}: too few documents to split into training and held-out "
                         "text.")
    return Split(language, alphabet, encode(train, alphabet), encode(test, alphabet))


def english(limit: int | None = None) -> Split:
    from genppl.data import bbc

    return split_documents("English (BBC news)", bbc.load().documents, ENGLISH, limit)


def russian(limit: int | None = None) -> Split:
    from genppl.data import fortunes

    return split_documents("Russian (fortunes-ru)", [f.text for f in fortunes.load()],
                           RUSSIAN, limit)


def data() -> dict[str, torch.Tensor]:
    """Markov's sample: the classes of the first 20,000 letters of the fortunes (signs
    dropped), the data of ``build()``'s chain."""
    from genppl.data import fortunes

    letters = russian_letters("".join(f.text for f in fortunes.load()))[:MARKOV_LETTERS]
    return {"letter": vowel_consonant(letters)}


def run(config: RunConfig) -> RunReport:
    """Markov's table on the fortunes (first 20,000 letters and all of them, both sign
    conventions), then held-out bits/char and samples for orders 0..4 in both languages.
    ``steps`` caps the characters of each training and held-out text (a small run)."""
    from genppl.data import fortunes

    start = time.perf_counter()
    engine = ENTRY.check(config)
    text = "".join(f.text for f in fortunes.load())
    rows = ["Markov 1913, vowels and consonants: a two-state chain fitted by engine "
            f"{engine!r} (transition counts / row totals)",
            f"{'sample':<38}{'letters':>10}{'vowels':>8}{'P(v|v)':>8}{'P(v|c)':>8}"
            f"{'stationary':>11}",
            f"{'Markov: Eugene Onegin (1913)':<38}{MARKOV_LETTERS:>10,}"
            f"{MARKOV_1913['vowel_fraction']:>8.3f}{MARKOV_1913['p_vowel_after_vowel']:>8.3f}"
            f"{MARKOV_1913['p_vowel_after_consonant']:>8.3f}"
            f"{_stationary(MARKOV_1913):>11.3f}"]
    markov: dict[str, Any] = {}
    for signs in SIGN_CONVENTIONS:
        letters = russian_letters(text, signs)
        for label, part in (("first 20,000", letters[:MARKOV_LETTERS]), ("all", letters)):
            part = part[: config.steps] if config.steps else part
            s = vowel_statistics(vowel_consonant(part), device=config.device,
                                 dtype=config.dtype)
            key = f"{signs}/{'first' if label.startswith('first') else 'all'}"
            markov[key] = {"letters": s.letters, "vowel_fraction": s.vowel_fraction,
                           "p_vowel_after_vowel": s.p_vowel_after_vowel,
                           "p_vowel_after_consonant": s.p_vowel_after_consonant,
                           "stationary_vowel_fraction": s.stationary_vowel_fraction,
                           "trans": s.trans.cpu().tolist(), "em_iterations": s.iterations}
            name = f"fortunes, {label}, ъь {'dropped' if signs == 'drop' else 'consonants'}"
            rows.append(f"{name:<38}{s.letters:>10,}{s.vowel_fraction:>8.3f}"
                        f"{s.p_vowel_after_vowel:>8.3f}{s.p_vowel_after_consonant:>8.3f}"
                        f"{s.stationary_vowel_fraction:>11.3f}")
    iterations = sorted({v["em_iterations"] for v in markov.values()})
    rows.append(f"(em iterations per fit: {', '.join(map(str, iterations))}; the chain is "
                "fully observed, so the first M-step is the count MLE and the next one "
                "confirms it)")
    bits: dict[str, list[float]] = {}
    samples: dict[str, list[str]] = {}
    last: NGram | None = None
    for split in (english(config.steps), russian(config.steps)):
        rows += ["", f"Shannon 1948, {split.language}: {len(split.train):,} training and "
                 f"{len(split.test):,} held-out characters, alphabet of {len(split.alphabet)} "
                 "(Witten-Bell back-off)",
                 f"  {'order':<7}{'states':>8}{'bits/char':>11}   sample (engine 'prior' on "
                 "the DSL chain)"]
        bits[split.language], samples[split.language] = [], []
        for k in ORDERS:
            last = fit_ngram(split.train, k, split.alphabet)
            h = last.bits_per_char(split.test)
            drawn = sample_text(last, seed=config.seed + k, device=config.device,
                                dtype=config.dtype)
            bits[split.language].append(h)
            samples[split.language].append(drawn)
            rows.append(f"  {k:<7}{last.states:>8,}{h:>11.3f}   {drawn}")
    files: list[str] = []
    if config.out is not None and last is not None:
        files = _pictures(config, last, bits)
    return RunReport("markov_text", engine, "\n".join(rows),
                     metrics={"markov_1913": MARKOV_1913, "fortunes": markov,
                              "bits_per_char": bits, "samples": samples},
                     files=files, seconds=time.perf_counter() - start)


def _stationary(stats: dict[str, float]) -> float:
    vc = stats["p_vowel_after_consonant"]
    return vc / (vc + 1 - stats["p_vowel_after_vowel"])


def _pictures(config: RunConfig, ngram: NGram, bits: dict[str, list[float]]) -> list[str]:
    written = [str(p) for p in (render_graph(build(), config, "markov_text_vowels_graph.svg"),
                                render_graph(build_ngram_chain(ngram), config,
                                             "markov_text_ngram_graph.svg")) if p is not None]
    with figure(config, "markov_text_bits.png", written, figsize=(7, 4)) as (_, ax):
        width = 0.8 / len(bits)
        for i, (language, values) in enumerate(bits.items()):
            ax.bar([k + (i - (len(bits) - 1) / 2) * width for k in ORDERS], values, width,
                   label=language)
        ax.set_xticks(list(ORDERS))
        ax.set_xlabel("order k (characters of context)")
        ax.set_ylabel("held-out cross-entropy (bits/char)")
        ax.set_title("Character n-grams: bits per character by order")
        ax.legend()
    return written


def build() -> genppl.Model:
    """Markov's chain (``data()`` gives it his 20,000 letters)."""
    return build_vowel_chain()


ENTRY = GalleryEntry(
    name="markov_text",
    title="Markov (1913) and Shannon (1948): vowel chains and character n-grams",
    build=build,
    data=data,
    engines=("em",),
    run=run,
)

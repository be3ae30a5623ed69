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

**Shannon 1948.** Character n-grams of order k = 0..4 (``genppl.ngram``: Witten-Bell
back-off automata, drawn from as chains on the DSL with ``engine="prior"``). The alphabets are
Shannon's: 26 letters and the space for English (BBC articles, ``genppl.data.bbc``), the 32
Russian letters (``ё`` read without its diaeresis) and the space for Russian; anything else
becomes a word break (``genppl.data.text.normalise``). Both corpora are split once by
document (every tenth article or saying held out, ``genppl.evaluate.text_split``: the text
leaderboard's n-gram rows are these figures); the report gives held-out bits per
character for k = 0..4, and a sample of each order.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch.distributions import constraints

import genppl
from genppl.errors import ModelError
from genppl.evaluate.text_split import ENGLISH as ENGLISH
from genppl.evaluate.text_split import Split, english, split_documents
from genppl.gallery import GalleryEntry, Report
from genppl.ngram import NGram, build_ngram_chain, fit_ngram, sample_text

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
RUSSIAN = " абвгдежзийклмнопрстуфхцчшщъыьэюя"
ORDERS = (0, 1, 2, 3, 4)
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


# ====================================================================== corpora and run
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


def experiment(report: Report) -> None:
    """Markov's table on the fortunes (first 20,000 letters and all of them, both sign
    conventions), then held-out bits/char and samples for orders 0..4 in both languages.
    ``steps`` caps the characters of each training and held-out text (a small run)."""
    from genppl.data import fortunes

    config = report.config
    text = "".join(f.text for f in fortunes.load())
    markov = report.metric("markov_1913", MARKOV_1913)
    report.line("Markov 1913, vowels and consonants: a two-state chain fitted by engine "
                f"{report.engine!r} (transition counts / row totals)")
    report.line(f"{'sample':<38}{'letters':>10}{'vowels':>8}{'P(v|v)':>8}{'P(v|c)':>8}"
                f"{'stationary':>11}")
    report.line(f"{'Markov: Eugene Onegin (1913)':<38}{MARKOV_LETTERS:>10,}"
                f"{markov['vowel_fraction']:>8.3f}{markov['p_vowel_after_vowel']:>8.3f}"
                f"{markov['p_vowel_after_consonant']:>8.3f}{_stationary(markov):>11.3f}")
    iterations = set()
    for signs in SIGN_CONVENTIONS:
        letters = russian_letters(text, signs)
        for label, part in (("first 20,000", letters[:MARKOV_LETTERS]), ("all", letters)):
            part = part[: config.steps] if config.steps else part
            s = vowel_statistics(vowel_consonant(part), device=config.device,
                                 dtype=config.dtype)
            key = f"{signs}/{'first' if label.startswith('first') else 'all'}"
            report.metric(("fortunes", key), {
                "letters": s.letters, "vowel_fraction": s.vowel_fraction,
                "p_vowel_after_vowel": s.p_vowel_after_vowel,
                "p_vowel_after_consonant": s.p_vowel_after_consonant,
                "stationary_vowel_fraction": s.stationary_vowel_fraction,
                "trans": s.trans.cpu().tolist(), "em_iterations": s.iterations})
            iterations.add(s.iterations)
            name = f"fortunes, {label}, ъь {'dropped' if signs == 'drop' else 'consonants'}"
            report.line(f"{name:<38}{s.letters:>10,}{s.vowel_fraction:>8.3f}"
                        f"{s.p_vowel_after_vowel:>8.3f}{s.p_vowel_after_consonant:>8.3f}"
                        f"{s.stationary_vowel_fraction:>11.3f}")
    report.line(f"(em iterations per fit: {', '.join(map(str, sorted(iterations)))}; the chain "
                "is fully observed, so the first M-step is the count MLE and the next one "
                "confirms it)")
    last: NGram | None = None
    for split in (english(config.steps), russian(config.steps)):
        report.line("")
        report.line(f"Shannon 1948, {split.language}: {len(split.train):,} training and "
                    f"{len(split.test):,} held-out characters, alphabet of "
                    f"{len(split.alphabet)} (Witten-Bell back-off)")
        report.line(f"  {'order':<7}{'states':>8}{'bits/char':>11}   sample (engine 'prior' on "
                    "the DSL chain)")
        bits = report.metric(("bits_per_char", split.language), [])
        samples = report.metric(("samples", split.language), [])
        for k in ORDERS:
            last = fit_ngram(split.train, k, split.alphabet)
            bits.append(last.bits_per_char(split.test))
            samples.append(sample_text(last, SAMPLE_LENGTH, seed=config.seed + k,
                                       device=config.device, dtype=config.dtype))
            report.line(f"  {k:<7}{last.states:>8,}{bits[-1]:>11.3f}   {samples[-1]}")
    if config.out is not None and last is not None:
        _pictures(report, last, report.metrics["bits_per_char"])


def _stationary(stats: dict[str, float]) -> float:
    vc = stats["p_vowel_after_consonant"]
    return vc / (vc + 1 - stats["p_vowel_after_vowel"])


def _pictures(report: Report, ngram: NGram, bits: dict[str, list[float]]) -> None:
    report.graph(build_ngram_chain(ngram), "markov_text_ngram_graph.svg")
    with report.figure("markov_text_bits.png", figsize=(7, 4)) as (_, ax):
        width = 0.8 / len(bits)
        for i, (language, values) in enumerate(bits.items()):
            ax.bar([k + (i - (len(bits) - 1) / 2) * width for k in ORDERS], values, width,
                   label=language)
        ax.set_xticks(list(ORDERS))
        ax.set_xlabel("order k (characters of context)")
        ax.set_ylabel("held-out cross-entropy (bits/char)")
        ax.set_title("Character n-grams: bits per character by order")
        ax.legend()


def build() -> genppl.Model:
    """Markov's chain (``data()`` gives it his 20,000 letters)."""
    return build_vowel_chain()


ENTRY = GalleryEntry(
    name="markov_text",
    title="Markov (1913) and Shannon (1948): vowel chains and character n-grams",
    build=build,
    data=data,
    engines=("em",),
    experiment=experiment,
    graph="vowels_graph",
)

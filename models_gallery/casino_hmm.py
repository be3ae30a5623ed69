"""The dishonest casino (Durbin, Eddy, Krogh & Mitchison 1998, *Biological Sequence Analysis*).

A casino mostly rolls a fair die but now and then switches to a loaded one that shows a six
half of the time; it switches to the loaded die with probability 0.05 per roll and back with
0.10. From the rolls alone, which die was in use? This is the hidden Markov model every
textbook starts from: the die is a finite latent repeated along a chain, each step reading the
previous one (``die_prev``), and exact enumeration gives the posterior P(loaded) of every roll
(posterior decoding) and log p(rolls). The 300 rolls are simulated from the same tables with
a fixed seed, so the true dice are known and the decoding can be scored.
"""

from __future__ import annotations

from typing import Any

import torch

import genppl
from genppl.gallery import GalleryEntry, Report, engine_options
from genppl.hmm import categorical_hmm

FAIR, LOADED = 0, 1
#: P(first die). Half and half rather than "always fair": a hard 0 is not exact in torch's
#: log space (Categorical clamps it to machine epsilon), and the data decide the start anyway.
START = [0.5, 0.5]
#: ``TRANS[i][j]`` = P(next die = j | die = i).
TRANS = [[0.95, 0.05],
         [0.10, 0.90]]
#: ``EMIT[i][k]`` = P(roll shows k + 1 | die = i).
EMIT = [[1 / 6] * 6,
        [1 / 10] * 5 + [1 / 2]]
NUM_ROLLS = 300
SEED = 1998


def build() -> genppl.Model:
    """One run of rolls (data shape ``(T,)``) under the library's categorical HMM.

    Known tables, not learned: deterministic nodes rather than params, so they follow the
    model's device and dtype without touching Pyro's param store, and still show in the graph.
    """
    return categorical_hmm(2, 6, name="casino_hmm", start=START, trans=TRANS, emit=EMIT,
                           learnable=False, batched=False, latent="die", observed="roll")


def simulate(num_rolls: int = NUM_ROLLS, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rolls, dice)``: a run of the casino drawn from the model's own tables.

    Uses a private ``torch.Generator`` (inverse-CDF on float64 uniforms) so the data are the
    same on every machine and run, and drawing them leaves the global RNGs alone.
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(num_rolls, 2, generator=gen, dtype=torch.float64)
    start, trans, emit = (torch.tensor(t, dtype=torch.float64).cumsum(-1)
                          for t in (START, TRANS, EMIT))

    def draw(cdf: torch.Tensor, v: torch.Tensor) -> int:
        return min(int(torch.searchsorted(cdf, v.reshape(1), right=True)), len(cdf) - 1)

    dice, rolls = [], []
    for t in range(num_rolls):
        die = draw(start if t == 0 else trans[dice[-1]], u[t, 0])
        dice.append(die)
        rolls.append(draw(emit[die], u[t, 1]))
    return torch.tensor(rolls), torch.tensor(dice)


def data() -> dict[str, torch.Tensor]:
    """The 300 rolls (faces 0..5 for 1..6), time axis first as the chain's data layout wants."""
    return {"roll": simulate()[0]}


def experiment(report: Report) -> None:
    engine = report.engine
    # The work of exact decoding grows with the sequence, so ``steps`` sets the number of rolls.
    rolls, dice = simulate(report.config.steps or NUM_ROLLS)
    posterior = genppl.infer(report.build(), {"roll": rolls}, engine=engine,
                             **engine_options(engine, report.config))
    probs = posterior.probs("die", 2).cpu()
    p_loaded = probs[:, LOADED]
    decoded = probs.argmax(-1)
    sixes = float((rolls == 5).double().mean())
    report.line(f"{len(rolls)} rolls, {int(dice.sum())} with the loaded die (seed {SEED}); "
                f"sixes: {sixes:.1%}")
    report.label_width = 37
    if posterior.log_evidence is not None:
        report.number("log p(rolls)", posterior.log_evidence, ".4f", key="log_likelihood")
    else:
        report.metric("log_likelihood", None)
    report.number("posterior decoding accuracy", float((decoded == dice).double().mean()),
                  ".1%", key="accuracy")
    report.line(f"always guessing 'fair' would score    "
                f"{float((dice == FAIR).double().mean()):.1%}")
    report.line("rolls   " + "".join(str(int(r) + 1) for r in rolls[:60]))
    report.line("die     " + "".join("L" if d else "F" for d in dice[:60]))
    report.line("decoded " + "".join("L" if d else "F" for d in decoded[:60]))
    report.metric("p_loaded", p_loaded.tolist())
    if report.config.out is not None:
        # P(loaded) per roll drawn over the stretches where the loaded die was truly in use
        steps = list(range(len(dice)))  # plain lists: matplotlib and torch tensors mix poorly
        with report.figure("casino_hmm_posterior.png", figsize=(9, 3)) as (_, ax):
            _draw_posterior(ax, engine, steps, p_loaded, dice)


def _draw_posterior(ax: Any, engine: str, steps: list[int], p_loaded: torch.Tensor,
                    dice: torch.Tensor) -> None:
    ax.fill_between(steps, 0, 1, where=(dice == LOADED).tolist(), step="mid", color="C3",
                    alpha=0.2, lw=0, label="loaded die in use (truth)")
    ax.plot(steps, p_loaded.tolist(), color="C0", lw=1.2, label="P(loaded | rolls)")
    ax.set_xlim(0, len(dice) - 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("roll")
    ax.set_ylabel("P(loaded)")
    ax.set_title(f"Dishonest casino: posterior decoding (engine {engine})")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.95)


ENTRY = GalleryEntry(
    name="casino_hmm",
    title="The dishonest casino (Durbin et al. 1998): a hidden Markov model decoded exactly",
    build=build,
    data=data,
    engines=("exact", "enum", "gibbs"),
    experiment=experiment,
)

"""LDA on the BBC articles: time for genppl ``cavi`` to reach scikit-learn's held-out
perplexity, against scikit-learn's ``LatentDirichletAllocation`` (batch and online).

Same data for all (``models_gallery/lda_bbc.py``: stratified 80/20 split, the library's
tokeniser and vocabulary), same number of topics and priors. scikit-learn runs its default
``max_iter`` (10) of each method, and its held-out perplexity is the target. genppl runs
CAVI from the entry's start in two schedules -- the entry's, variational EM's E-step as an
inner loop of ``LOCAL_STEPS`` updates of the documents' mixtures per topics update
(``local=``), and single alternating updates of every factor (``local_steps=0``) -- each in
float64 and again in float32, and after every iteration computes its held-out perplexity
(the topics held, each test document's mixture fitted; this evaluation's time is excluded,
as scikit-learn's perplexity call is): the time to reach a target is the training time at
the first iteration at or below it. Both perplexities are
the same bound (tested equal for the same topics in tests/gallery/test_lda_bbc.py). Ratios
below 1 mean genppl got there sooner.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from benchmarks.mcmc import ONCE
from models_gallery import lda_bbc

GENPPL = "genppl cavi"
GENPPL32 = "genppl cavi, float32"
SINGLE = "genppl cavi, single updates"
SINGLE32 = "genppl cavi, single updates, float32"
#: genppl's contenders: (name, metric key, dtype, inner updates of the mixtures).
CAVI_RUNS = ((GENPPL, "64", torch.float64, lda_bbc.LOCAL_STEPS),
             (GENPPL32, "32", torch.float32, lda_bbc.LOCAL_STEPS),
             (SINGLE, "64s", torch.float64, 0), (SINGLE32, "32s", torch.float32, 0))
BATCH = "scikit-learn batch"
ONLINE = "scikit-learn online"
MAX_ITER, QUICK_ITER = 10, 2
CAVI_STEPS, QUICK_STEPS = 80, 3


def contenders(config: BenchConfig) -> list[Contender]:
    quick = config.quick
    train, test, vocabulary = lda_bbc.load(max_documents=200 if quick else None)
    dense_train, dense_test = train.counts.dense().numpy(), test.counts.dense().numpy()

    def sklearn(method: str) -> Any:
        def run() -> dict[str, Any]:
            from sklearn.decomposition import LatentDirichletAllocation

            begin = time.perf_counter()
            lda = LatentDirichletAllocation(
                lda_bbc.NUM_TOPICS, doc_topic_prior=lda_bbc.ALPHA,
                topic_word_prior=lda_bbc.ETA, learning_method=method,
                max_iter=QUICK_ITER if quick else MAX_ITER, random_state=config.seed)
            lda.fit(dense_train)
            seconds = time.perf_counter() - begin
            topics = torch.distributions.Dirichlet(torch.as_tensor(lda.components_))
            return {"seconds": seconds, "perplexity": float(lda.perplexity(dense_test)),
                    "documents": lda_bbc.held_out_perplexity(topics, test).documents}
        return run

    def cavi(dtype: torch.dtype, local_steps: int) -> Any:
        return lambda: _cavi(dtype, local_steps)

    def _cavi(dtype: torch.dtype, local_steps: int) -> dict[str, Any]:
        trajectory: list[tuple[int, float, lda_bbc.HeldOut]] = []
        spent = [0.0]  # seconds of held-out evaluation, excluded from training time
        begin = time.perf_counter()

        def check(iteration: int, _: float, q: dict[str, Any]) -> None:
            pause = time.perf_counter()
            training = pause - begin - spent[0]
            perplexity = lda_bbc.held_out_perplexity(q["topics"], test, dtype=dtype,
                                                     device=config.device)
            spent[0] += time.perf_counter() - pause
            trajectory.append((iteration, training, perplexity))

        lda_bbc.fit_cavi(train, len(vocabulary), steps=QUICK_STEPS if quick else CAVI_STEPS,
                         tol=0.0, dtype=dtype, device=config.device, seed=config.seed,
                         local_steps=local_steps, callback=check)
        return {"trajectory": trajectory}

    return [Contender(BATCH, sklearn("batch"), **ONCE),
            Contender(ONLINE, sklearn("online"), **ONCE),
            *(Contender(name, cavi(dtype, steps), **ONCE)
              for name, _, dtype, steps in CAVI_RUNS)]


def _reach(trajectory: list[tuple[int, float, Any]], target: float, kind: str
           ) -> tuple[int | None, float | None]:
    """(iterations, training seconds) at the first check whose perplexity of ``kind``
    ("sklearn" or "documents") is at or below ``target``."""
    for iteration, seconds, perplexity in trajectory:
        if getattr(perplexity, kind) <= target:
            return iteration, seconds
    return None, None


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per scikit-learn method, its perplexity and time, and how long each genppl precision
    took to reach that perplexity; per genppl run, its last check."""
    out: dict[str, dict[str, Any]] = {}
    for name in (BATCH, ONLINE):
        r = results[name]
        row: dict[str, Any] = {"perplexity": r["perplexity"], "documents": r["documents"],
                               "fit_s": r["seconds"]}
        for genppl_name, key, _, _ in CAVI_RUNS:
            for kind, target in (("sklearn", r["perplexity"]), ("documents", r["documents"])):
                iterations, seconds = _reach(results[genppl_name]["trajectory"], target, kind)
                row[f"iterations_{key}_{kind}"] = iterations
                row[f"ratio_{key}_{kind}"] = None if seconds is None else seconds / r["seconds"]
        out[name] = row
    for name, _, _, _ in CAVI_RUNS:
        trajectory = results[name]["trajectory"]
        iteration, seconds, held = trajectory[-1] if trajectory else (None, None, None)
        out[name] = {"perplexity": held and held.sklearn, "documents": held and held.documents,
                     "fit_s": seconds, "checks": iteration}
    return out


def notes(results: dict[str, Any]) -> list[str]:
    trajectory = results[GENPPL]["trajectory"]
    shown = ", ".join(f"{i}: {p.sklearn:.0f}/{p.documents:.0f}" for i, _, p in
                      trajectory[4::5][:12])
    return [f"scikit-learn: max_iter={MAX_ITER} of each method (float64), perplexity after "
            f"training; genppl: held-out perplexity after every CAVI iteration (float64: "
            f"{shown}, ...)",
            "cavi time to reach / this = genppl's training seconds until its held-out "
            "perplexity is at or below the row's / that scikit-learn method's fit seconds "
            "(target <= 1); by scikit-learn's definition (its perplexity(), which charges "
            "the topics' KL to the test tokens) and by the test documents' own bound",
            f"E-step: the entry's schedule, {lda_bbc.LOCAL_STEPS} inner updates of the "
            "documents' mixtures per topics update; single: one update of every factor per "
            "iteration"]


CASE = register(Case(
    name="lda",
    description="LDA on BBC news: genppl cavi's time to reach scikit-learn's held-out "
                "perplexity (batch and online variational Bayes)",
    baseline=BATCH,
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("perplexity", "perplexity (sklearn def.)", ".1f"),
             Column("documents", "perplexity (documents)", ".1f"),
             Column("fit_s", "training s", ".2f"),
             *(Column(f"ratio_{key}_{kind}", f"cavi {label} time / this ({scale})", ".2f")
               for kind, scale in (("sklearn", "sklearn def."), ("documents", "documents"))
               for key, label in (("64", "E-step"), ("32", "E-step f32"),
                                  ("64s", "single"), ("32s", "single f32")))),
    notes=notes,
))

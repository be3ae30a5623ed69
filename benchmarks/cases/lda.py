"""LDA on the BBC articles: time for genppl ``cavi`` to reach scikit-learn's held-out
perplexity, against scikit-learn's ``LatentDirichletAllocation`` (batch and online).

Same data for all (``models_gallery/lda_bbc.py``: stratified 80/20 split, the library's
tokeniser and vocabulary), same number of topics and priors. scikit-learn runs its default
``max_iter`` (10) of each method, and its held-out perplexity is the target. genppl runs
CAVI from a random start (in float64, and again in float32) and after every iteration
computes its held-out perplexity (the topics held, each test document's mixture fitted; this
evaluation's time is excluded, as scikit-learn's perplexity call is): the time to reach a
target is the training time at the first iteration at or below it. Both perplexities are
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

    def cavi(dtype: torch.dtype) -> Any:
        return lambda: _cavi(dtype)

    def _cavi(dtype: torch.dtype) -> dict[str, Any]:
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
                         callback=check)
        return {"trajectory": trajectory}

    return [Contender(BATCH, sklearn("batch"), **ONCE),
            Contender(ONLINE, sklearn("online"), **ONCE),
            Contender(GENPPL, cavi(torch.float64), **ONCE),
            Contender(GENPPL32, cavi(torch.float32), **ONCE)]


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
        for key, genppl_name in (("64", GENPPL), ("32", GENPPL32)):
            for kind, target in (("sklearn", r["perplexity"]), ("documents", r["documents"])):
                iterations, seconds = _reach(results[genppl_name]["trajectory"], target, kind)
                row[f"iterations_{key}_{kind}"] = iterations
                row[f"ratio_{key}_{kind}"] = None if seconds is None else seconds / r["seconds"]
        out[name] = row
    for name in (GENPPL, GENPPL32):
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
            "the topics' KL to the test tokens) and by the test documents' own bound"]


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
             Column("iterations_64_sklearn", "cavi its to reach (sklearn def.)", ""),
             Column("ratio_64_sklearn", "cavi time / this (sklearn def.)", ".2f"),
             Column("ratio_32_sklearn", "cavi f32 time / this (sklearn def.)", ".2f"),
             Column("iterations_64_documents", "cavi its to reach (documents)", ""),
             Column("ratio_64_documents", "cavi time / this (documents)", ".2f"),
             Column("ratio_32_documents", "cavi f32 time / this (documents)", ".2f")),
    notes=notes,
))

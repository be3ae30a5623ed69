"""The ``lda`` benchmark case: its quick run and how it reads "time to reach".

No assertion is about speed: they check that every contender reports a finite held-out
perplexity on one scale, and that the time to reach a target is read at the first genppl
iteration at or below it (none when never reached).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import harness
from benchmarks.cases import lda

pytest.importorskip("sklearn")

pytestmark = pytest.mark.unit


def test_time_to_reach_is_the_first_iteration_at_or_below_the_target() -> None:
    held = lda.lda_bbc.HeldOut
    trajectory = [(1, 0.5, held(900.0, 400.0)), (2, 1.0, held(700.0, 350.0)),
                  (3, 1.5, held(650.0, 300.0))]
    results = {lda.BATCH: {"seconds": 2.0, "perplexity": 700.0, "documents": 300.0},
               lda.ONLINE: {"seconds": 1.0, "perplexity": 600.0, "documents": 500.0},
               lda.GENPPL: {"trajectory": trajectory},
               lda.GENPPL32: {"trajectory": trajectory[:1]},
               lda.SINGLE: {"trajectory": trajectory[1:]},
               lda.SINGLE32: {"trajectory": []}}
    rows = lda.evaluate(results)
    batch, online = rows[lda.BATCH], rows[lda.ONLINE]
    assert batch["iterations_64_sklearn"] == 2 and batch["ratio_64_sklearn"] == 0.5
    assert batch["iterations_64_documents"] == 3 and batch["ratio_64_documents"] == 0.75
    assert batch["iterations_32_sklearn"] is None and batch["ratio_32_sklearn"] is None
    assert online["ratio_64_sklearn"] is None and online["iterations_32_documents"] == 1
    assert batch["iterations_64s_sklearn"] == 2 and batch["ratio_32s_documents"] is None
    assert rows[lda.GENPPL] == {"perplexity": 650.0, "documents": 300.0, "fit_s": 1.5,
                                "checks": 3}


def test_quick_run_reports_every_contender(tmp_path: Path) -> None:
    config = harness.BenchConfig(quick=True, repeats=1, min_run_s=0.0)
    result = harness.run_case(harness.get_case("lda"), config, out_dir=tmp_path, echo=None)
    rows = {m.contender: m.metrics for m in result.measurements}
    assert set(rows) == {lda.BATCH, lda.ONLINE, lda.GENPPL, lda.GENPPL32, lda.SINGLE,
                         lda.SINGLE32}
    for metrics in rows.values():
        assert math.isfinite(metrics["perplexity"]) and metrics["perplexity"] > 1
    assert rows[lda.GENPPL]["checks"] == lda.QUICK_STEPS

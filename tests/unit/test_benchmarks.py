"""The benchmark harness: what it writes and prints, and the order it measures in.

No assertion here is about speed (timings on a shared CI machine are noise); they check the
files, the table's columns and the measurement protocol, and that the Pearson case runs and its
contenders agree on the answer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness
from benchmarks import run as bench_run

# `benchmarks` is deliberately not an installed package (genppl never imports it); pytest's
# `pythonpath` (pyproject.toml) lets the tests import it from the checkout, as
# `python -m benchmarks.run` does from the repository root.

BASE_COLUMNS = ["contender", "runs", "calls/run", "median s", "min s", "time ratio",
                "peak Python MB", "RSS growth MB"]


def _fake_case(calls: list[tuple[str, str]]) -> Any:
    """Two trivial contenders that log every call, with the phase taken from the harness's
    own state: a call while tracemalloc is on is the memory pass."""
    import tracemalloc

    def contender(name: str, value: int, repeats: int | None = None) -> Any:
        def run() -> int:
            calls.append((name, "traced" if tracemalloc.is_tracing() else "plain"))
            return sum(range(value))

        return harness.Contender(name, run, repeats=repeats)

    return harness.Case(
        name="fake",
        description="a trivial case",
        baseline="reference",
        contenders=lambda config: [contender("reference", 1000), contender("ours", 10, 1)],
        evaluate=lambda results: {k: {"answer": v} for k, v in results.items()},
        columns=(harness.Column("answer", "the answer", "d"),),
        notes=lambda results: ["a note"],
    )


def _table_header(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("| contender"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.unit
def test_harness_writes_json_markdown_and_table(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, str]] = []
    config = harness.BenchConfig(warmup=1, repeats=2, min_run_s=0.0)
    result = harness.run_case(_fake_case(calls), config, out_dir=tmp_path)

    # Protocol: all warm-ups, then all traced runs, then the timed runs round-robin.
    assert calls == [("reference", "plain"), ("ours", "plain"),
                     ("reference", "traced"), ("ours", "traced"),
                     ("reference", "plain"), ("ours", "plain"), ("reference", "plain")]

    assert result.json_path.name.endswith("-fake.json") and result.json_path.parent == tmp_path
    assert result.md_path == result.json_path.with_suffix(".md")
    data = json.loads(result.json_path.read_text())
    assert data["case"] == "fake" and data["baseline"] == "reference"
    assert data["config"]["repeats"] == 2
    assert "packages" in data["environment"] and "cpu_count" in data["environment"]
    rows = {r["contender"]: r for r in data["rows"]}
    assert rows["reference"]["runs"] == 2 and rows["ours"]["runs"] == 1  # contender override
    assert rows["reference"]["ratio"] == 1.0
    assert rows["ours"]["ratio"] == pytest.approx(rows["ours"]["median_s"]
                                                  / rows["reference"]["median_s"])
    assert rows["reference"]["metrics"] == {"answer": sum(range(1000))}
    for row in rows.values():
        assert all(s >= 0 for s in row["seconds"]) and row["peak_python_mb"] >= 0
    assert data["notes"] == ["a note"]

    markdown = result.md_path.read_text()
    assert _table_header(markdown) == [*BASE_COLUMNS, "the answer"]
    body = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1].strip() for line in body] == ["reference", "ours"]
    assert "| 1.00x |" in body[0] and f"| {sum(range(1000))} |" in body[0]
    assert "- a note" in markdown

    printed = capsys.readouterr().out
    assert _table_header(printed) == [*BASE_COLUMNS, "the answer"]
    assert str(result.json_path) in printed


@pytest.mark.unit
def test_fast_contenders_are_called_until_a_run_lasts_min_run_s(tmp_path: Path) -> None:
    """timeit's rule: a call shorter than ``min_run_s`` is repeated within each timed run,
    and the run reports seconds per call."""
    calls: list[tuple[str, str]] = []
    config = harness.BenchConfig(warmup=1, repeats=2, min_run_s=0.02)
    result = harness.run_case(_fake_case(calls), config, out_dir=None, echo=None)
    rows = {m.contender: m for m in result.measurements}
    for name, m in rows.items():
        timed = sum(1 for c in calls if c[0] == name) - 2  # less the warm-up and traced runs
        assert m.calls > 1 and timed == m.calls * len(m.seconds)
        assert all(s * m.calls < 0.02 * 10 for s in m.seconds)  # per call, not per run


@pytest.mark.unit
def test_run_unknown_case_lists_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_run.main(["no_such_case"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark case 'no_such_case'" in err and "pearson_crabs" in err


@pytest.mark.benchmark
def test_run_cli_on_fake_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(harness.CASES, "fake", _fake_case([]))
    assert bench_run.main(["fake", "--out", str(tmp_path), "--repeats", "3"]) == 0
    (json_path,) = tmp_path.glob("*-fake.json")
    (md_path,) = tmp_path.glob("*-fake.md")
    rows = json.loads(json_path.read_text())["rows"]
    assert [r["runs"] for r in rows] == [3, 1]
    assert _table_header(md_path.read_text()) == [*BASE_COLUMNS, "the answer"]
    assert _table_header(capsys.readouterr().out) == [*BASE_COLUMNS, "the answer"]


@pytest.mark.benchmark
def test_pearson_crabs_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_run.main(["pearson_crabs", "--quick", "--out", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob("*-pearson_crabs.json")
    data = json.loads(json_path.read_text())
    assert data["config"]["quick"] is True
    rows = {r["contender"]: r for r in data["rows"]}
    em = rows["sklearn GaussianMixture EM"]
    assert set(rows) == {em["contender"], "genppl em", "genppl svi (MAP)",
                         "genppl nuts (posterior mean)"}
    assert em["ratio"] == 1.0 and em["metrics"]["max_abs_param_error"] == 0.0
    for row in rows.values():
        metrics = row["metrics"]
        assert math.isfinite(metrics["log_likelihood"]) and row["ratio"] > 0
        # EM's answer is the MLE: nothing may have a higher likelihood.
        assert metrics["log_likelihood"] <= em["metrics"]["log_likelihood"] + 1e-6
        assert sum(metrics["weights"]) == pytest.approx(1.0)
        assert metrics["locs"] == sorted(metrics["locs"])
    # genppl's EM reaches the same optimum (the ridge is flat: weights to ~1e-3).
    assert rows["genppl em"]["metrics"]["max_abs_error_locs"] < 1e-4
    # Even a short run lands near the MLE, far closer than the crabs' spread (~0.02).
    assert rows["genppl nuts (posterior mean)"]["metrics"]["max_abs_error_locs"] < 0.01
    assert _table_header(capsys.readouterr().out)[-2:] == ["log-lik", "max abs error vs MLE"]


def _rows(tmp_path: Path, case: str) -> dict[str, dict[str, Any]]:
    assert bench_run.main([case, "--quick", "--out", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob(f"*-{case}.json")
    return {r["contender"]: r for r in json.loads(json_path.read_text())["rows"]}


@pytest.mark.benchmark
def test_bn_cases_quick_agree_with_pgmpy(tmp_path: Path) -> None:
    marginals = _rows(tmp_path / "marginals", "asia_marginals")
    assert marginals and all(r["metrics"]["max_abs_marginal_error"] < 1e-9
                             for r in marginals.values())
    batched = _rows(tmp_path / "batched", "alarm_batched")
    genppl = [r for name, r in batched.items() if name.startswith("genppl")]
    assert len(genppl) == 3 and all(r["metrics"]["max_abs_marginal_error"] < 1e-9
                                    for r in genppl)


@pytest.mark.benchmark
def test_hmm_case_quick_matches_hmmlearn(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "hmm")  # the case itself raises past 1e-6 relative
    checked = [r for name, r in rows.items() if "genppl" in name
               and "rel_error" in r["metrics"]]
    assert len(checked) == 9  # three sizes x (forward-backward, Viterbi, Baum-Welch)
    assert all(r["metrics"]["rel_error"] < 1e-9 for r in checked)


@pytest.mark.benchmark
def test_ising_case_quick_denoises_alike(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "ising")
    assert len(rows) == 3
    # All start from the noisy image (about 85% right) and sample one posterior, which
    # sits near the clean image: every contender ends far closer to it.
    assert all(r["metrics"]["agreement"] > 0.9 for r in rows.values())


@pytest.mark.benchmark
def test_mixture_mcmc_case_quick_samples_the_same_posterior(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "mixture_mcmc")
    assert len(rows) == 4
    for row in rows.values():
        low, high = row["metrics"]["means"]["locs"]
        # Every sampler keeps the EM start's labels: two components near 0.63 and 0.65.
        assert 0.61 < low < 0.64 < high < 0.66
        assert row["metrics"]["ess_per_s"] > 0


@pytest.mark.benchmark
def test_switching_mcmc_case_quick_samples_the_same_posterior(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "switching_mcmc")
    assert len(rows) == 3
    for row in rows.values():
        low, high = row["metrics"]["means"]["mu"]
        # The means' priors sit at -1 and 2, as the simulation's truth: no label switching.
        assert -2.5 < low < 0.5 < high < 3.5
        assert row["metrics"]["ess_per_s"] > 0


@pytest.mark.benchmark
def test_kalman_nuts_case_quick_samples_the_same_posterior(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "kalman_nuts")
    assert len(rows) == 2
    for row in rows.values():
        means, mcse = row["metrics"]["means"], row["metrics"]["mcse"]
        # The Nile's MLE is sigma_level 38.3, sigma_obs 122.9; the posterior sits near it.
        assert 15 < means["sigma_level"] < 80 and 95 < means["sigma_obs"] < 150
        assert all(0 < se < 20 for se in mcse.values())  # the chain moved


@pytest.mark.benchmark
def test_kalman_case_quick_matches_statsmodels(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "kalman")  # the case itself raises past 1e-6 relative
    assert len(rows) == 4  # (log-likelihood, smoother) x (genppl, statsmodels)
    for r in rows.values():
        assert r["metrics"]["rel_error"] < 1e-9 and r["ratio"] > 0
    smoother = rows["smoother | genppl"]["metrics"]
    assert smoother["level_rel_error"] < 1e-9 and smoother["level_var_rel_error"] < 1e-9

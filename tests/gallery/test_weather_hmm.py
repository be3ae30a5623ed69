"""The Seattle weather HMM: its reported numbers recomputed by hmmlearn from the fitted
tables (log-likelihood, Viterbi path), the memoryless baseline from the label counts."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from genppl.gallery import RunConfig, RunReport
from models_gallery import weather_hmm

hmmlearn = pytest.importorskip("hmmlearn.hmm")
pytest.importorskip("vega_datasets")

pytestmark = pytest.mark.gallery


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> RunReport:
    # 60 iterations: most of the climb (the default runs to convergence, ~100)
    out = tmp_path_factory.mktemp("weather_hmm")
    return weather_hmm.ENTRY.run(RunConfig(steps=60, out=out, progress=False))


def test_reported_fit_equals_hmmlearn_on_the_same_tables(report: RunReport) -> None:
    m = report.metrics
    labels = weather_hmm.load()[0].numpy().reshape(-1, 1)
    assert labels.shape == (1461, 1)
    ref = hmmlearn.CategoricalHMM(n_components=weather_hmm.STATES, n_features=5,
                                  init_params="")
    ref.startprob_ = np.array(m["start"])
    ref.transmat_ = np.array(m["trans"])
    ref.emissionprob_ = np.array(m["emit"])
    assert m["log_likelihood"] == pytest.approx(ref.score(labels), abs=1e-8)
    _, path = ref.decode(labels, algorithm="viterbi")
    assert m["viterbi_path"] == path.tolist()
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(m["trajectory"]))
    assert m["log_likelihood"] >= m["trajectory"][-1] - 1e-9


def test_hmm_beats_the_memoryless_baseline(report: RunReport) -> None:
    m = report.metrics
    counts = np.bincount(weather_hmm.load()[0].numpy(), minlength=5)
    freq = counts / counts.sum()
    assert m["memoryless_log_likelihood"] == pytest.approx(float((counts * np.log(freq)).sum()))
    assert m["log_likelihood"] > m["memoryless_log_likelihood"] + 100
    for table in ("viterbi_share_by_month", "viterbi_share_by_year"):
        np.testing.assert_allclose(np.array(m[table]).sum(-1), 1.0)
    sun = [row[0] for row in m["emit"]]
    assert sun == sorted(sun, reverse=True)  # states reported most sunny first


def test_report_writes_its_files(report: RunReport) -> None:
    assert report.engine == "em" and "Baum-Welch" in report.table
    assert len(report.files) == 2
    for f in report.files:
        assert Path(f).is_file() and Path(f).stat().st_size > 0

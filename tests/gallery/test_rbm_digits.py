"""rbm_digits: a short run trains every part, and the tiny RBM's exact log-likelihood (by
the exact engine, checked against the RBM formula in tests/unit/test_cd.py) climbs under
CD-1."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from genppl.gallery import RunConfig
from models_gallery import rbm_digits

pytestmark = pytest.mark.gallery


def test_a_short_run_raises_the_tiny_rbms_exact_log_likelihood(tmp_path: Path) -> None:
    report = rbm_digits.ENTRY.run(RunConfig(steps=40, progress=False, out=tmp_path))
    m = report.metrics
    curve = [ll for _, ll in m["tiny_curve"]]
    assert [s for s, _ in m["tiny_curve"]] == [1, 10, 20, 30, 40]
    # Deterministic under the seed; the climb is 4.8 nats, the margin leaves room for
    # platform rounding in the sampled updates.
    assert m["tiny_log_likelihood_after"] > m["tiny_log_likelihood_before"] + 3
    assert all(b > a for a, b in itertools.pairwise(curve))
    assert report.files == [str(tmp_path / "rbm_digits.png")]
    # the 64 x 32 RBMs' held-out digits, scored by AIS: a log-likelihood per image below 0
    # and above the uniform model's (a trained RBM puts more mass on digits than a coin)
    for label in ("CD-1", "PCD"):
        held_out = m[f"{label}_held_out_log_likelihood"]
        assert -64 * math.log(2) < held_out < 0
        assert math.isfinite(m[f"{label}_log_partition"])

"""The ``rbm`` benchmark case: its quick run, and the checks it reports against scikit-learn.

No assertion is about speed. They check that genppl's samplers draw from the model
scikit-learn's ``BernoulliRBM`` holds (exact one-step conditionals, and the law of the chains'
last states by a z-test), that the two trainings reach the same quality on one scale, that the
scale is scikit-learn's pseudo-likelihood and the exact likelihood, and that the z-test
notices a wrong model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import harness
from benchmarks.cases import rbm

pytest.importorskip("sklearn")


@pytest.mark.unit
def test_rbm_case_quick_samples_and_trains_the_same_model(tmp_path: Path) -> None:
    config = harness.BenchConfig(quick=True, repeats=1, min_run_s=0.0)
    result = harness.run_case(harness.get_case("rbm"), config, out_dir=tmp_path, echo=None)
    rows = {m.contender: m.metrics for m in result.measurements}
    assert len(rows) == 8 and all(m.ratio > 0 for m in result.measurements)
    sampling = {k: v for k, v in rows.items() if k.startswith(rbm.SAMPLE)}
    assert len(sampling) == 4
    for name, metrics in sampling.items():
        assert metrics["chain_sweeps_per_s"] > 0
        if rbm.SKLEARN in name:
            continue
        # Same start, same kernel: the last states have one law (5 standard errors).
        assert abs(metrics["z_pixels_on"]) < 5 and abs(metrics["z_hidden_mean"]) < 5, name
        if "genppl" in name:  # the conditionals genppl's kernel draws from are sklearn's
            assert metrics["conditional_error"] < 1e-12
    init = rbm.sklearn_init(64, rbm.HIDDEN, 0)
    images = rbm.rbm_digits.binarised_digits()
    start = rbm.pseudo_log_likelihood(init, images)
    ours, theirs = rows[f"{rbm.TRAIN} | {rbm.CD}"], rows[f"{rbm.TRAIN} | {rbm.SKLEARN}"]
    assert ours["pll"] > start + 3 and theirs["pll"] > start + 3
    assert abs(ours["pll"] - theirs["pll"]) < 1.0
    tiny_init = rbm.sklearn_init(rbm.TINY_SIDE ** 2, rbm.TINY_HIDDEN, 0)
    tiny_start = rbm.exact_log_likelihood(tiny_init, rbm.rbm_digits.binarised_digits(4))
    ours, theirs = rows[f"{rbm.TINY} | {rbm.CD}"], rows[f"{rbm.TINY} | {rbm.SKLEARN}"]
    assert ours["exact_ll"] > tiny_start + 0.5 and theirs["exact_ll"] > tiny_start + 0.5
    assert abs(ours["exact_ll"] - theirs["exact_ll"]) < 0.5
    assert any("scikit-learn runs on the CPU" in note for note in result.notes)


@pytest.mark.unit
def test_scales_are_sklearn_pseudo_likelihood_and_the_exact_likelihood() -> None:
    from sklearn.neural_network import BernoulliRBM

    images = rbm.rbm_digits.binarised_digits()
    x = images.double().numpy()
    fitted = BernoulliRBM(n_components=rbm.HIDDEN, n_iter=3, random_state=0).fit(x)
    weights = rbm.from_sklearn(fitted)
    # score_samples flips pixel ind[n] of image n (drawn from RandomState(random_state)) and
    # scales by the number of pixels; the case's PLL is its expectation over that pixel.
    ind = np.random.RandomState(0).randint(0, x.shape[1], x.shape[0])
    flipped = images.double().clone()
    flipped[torch.arange(len(x)), torch.as_tensor(ind)] = 1 - flipped[torch.arange(len(x)),
                                                                      torch.as_tensor(ind)]
    gap = rbm.free_energy(weights, flipped) - rbm.free_energy(weights, images.double())
    ours = x.shape[1] * torch.nn.functional.logsigmoid(gap).numpy()
    np.testing.assert_allclose(ours, fitted.score_samples(x), rtol=1e-12, atol=1e-12)
    # ... and sklearn's mean score is an unbiased estimate of it (5 standard errors).
    scores = fitted.score_samples(x)
    se = scores.std() / math.sqrt(len(scores))
    assert abs(rbm.pseudo_log_likelihood(weights, images) - scores.mean()) < 5 * se

    # The exact log-likelihood agrees with genppl's exact engine (the gallery's helper).
    tiny = rbm.rbm_digits.binarised_digits(rbm.TINY_SIDE)
    small = BernoulliRBM(n_components=rbm.TINY_HIDDEN, n_iter=5, random_state=0)
    tiny_weights = rbm.from_sklearn(small.fit(tiny.double().numpy()))
    units = rbm.rbm_digits.rbm_units(rbm.TINY_SIDE ** 2, rbm.TINY_HIDDEN).to("cpu", rbm.DTYPE)
    engine = rbm.rbm_digits.exact_log_likelihood(units, dict(zip("Wbc", tiny_weights,
                                                                 strict=True)), tiny)
    assert rbm.exact_log_likelihood(tiny_weights, tiny) == pytest.approx(engine, abs=1e-9)


@pytest.mark.unit
def test_agreement_check_notices_a_wrong_model() -> None:
    """The z-test has power: chains of a model with shifted visible biases, compared with
    chains of the right one, give large z; two runs of the right one do not."""
    torch.manual_seed(0)
    weights = rbm.sklearn_init(64, rbm.HIDDEN, 0)
    weights = (weights[0] + 0.05 * torch.randn_like(weights[0]), weights[1] - 0.5,
               weights[2])

    def chains(w: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        v = torch.zeros(200, 64, dtype=w.dtype)
        for _ in range(20):
            h = torch.bernoulli(torch.sigmoid(c + v @ w))
            v = torch.bernoulli(torch.sigmoid(b + h @ w.T))
        return v

    right = chains(*weights)
    again = rbm.z_scores(weights, chains(*weights), right)
    wrong = rbm.z_scores(weights, chains(weights[0], weights[1] + 0.3, weights[2]), right)
    assert all(abs(z) < 5 for z in again.values())
    assert abs(wrong["pixels_on"]) > 5 and math.isfinite(wrong["hidden_mean"])

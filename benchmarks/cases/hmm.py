"""HMM forward-backward, Viterbi and one Baum-Welch iteration: genppl vs hmmlearn vs pomegranate.

Random categorical HMMs (M = 8 symbols) at (K, T, N) = (4, 1000, 100), (16, 2000, 64) and
(64, 1000, 32): N sequences of length T drawn from the HMM itself. genppl runs the exact
engine (``genppl.infer(..., engine="exact")``: log-likelihood and every posterior marginal in
one pass; ``map=True, marginals=False`` for Viterbi alone) and one iteration of
``genppl.hmm.HMM.fit`` (engine ``em``); hmmlearn its C forward-backward (``score_samples``),
``decode`` and ``fit(n_iter=1)``; pomegranate (optional) ``DenseHMM`` in float64 with end
probabilities 1, which is the same model. Every contender's log-likelihood must agree with
hmmlearn's to 1e-6 relative (checked here, shown in the table).

Work is counted as useful flops, 2 N T K^2 per pass over the chain (a K x K vector-matrix
product per step and sequence): forward-backward is two passes, Viterbi one, a Baum-Welch
iteration three (forward, backward, expected transitions). ``torch.matmul`` on one
(N T x K) @ (K x K) product of the same flops, in the same run and dtype, gives the rate the
hardware reaches on that shape: the distance to it is the overhead left.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import genppl
from benchmarks.harness import BenchConfig, Case, Column, Contender, register
from genppl.hmm import HMM

SIZES = ((4, 1000, 100), (16, 2000, 64), (64, 1000, 32))
QUICK_SIZES = ((4, 100, 10), (16, 100, 8), (64, 50, 4))
SYMBOLS = 8
TASKS = {"forward-backward": 2, "viterbi": 1, "baum-welch x1": 3}  # passes over the chain
GENPPL, HMMLEARN, POMEGRANATE, MATMUL = "genppl", "hmmlearn", "pomegranate", "torch.matmul"
F64 = torch.float64


def _label(size: tuple[int, int, int], task: str, impl: str) -> str:
    """Rows are named by K alone (the same in quick runs); T and N are in the notes."""
    return f"K={size[0]} | {task} | {impl}"


def _timed(fn: Callable[[], float], flops: int, size: tuple[int, int, int]
           ) -> Callable[[], dict[str, Any]]:
    """The contender's run, also reporting its own seconds (for per-row ratios and rates)."""
    def run() -> dict[str, Any]:
        start = time.perf_counter()
        value = fn()
        return {"log_likelihood": value, "seconds": time.perf_counter() - start,
                "flops": flops, "size": size}
    return run


def contenders(config: BenchConfig) -> list[Contender]:
    out = []
    for size in QUICK_SIZES if config.quick else SIZES:
        out += _size_contenders(size, config)
    return out


def _size_contenders(size: tuple[int, int, int], config: BenchConfig) -> list[Contender]:
    k, t, n = size
    hmm = HMM.categorical(k, SYMBOLS, seed=config.seed + k)
    hmm.model.to(config.device, F64)
    x, _ = hmm.sample(n, t, seed=config.seed)
    batch = hmm.batch(x)
    tables = {name: v.cpu().numpy() for name, v in hmm.tables().items()}
    flat, lengths = x.T.reshape(-1, 1).numpy(), [t] * n  # hmmlearn: sequences concatenated
    per_pass = 2 * n * t * k * k

    def exact() -> float:
        post = genppl.infer(hmm.model, batch.data, engine="exact")
        post.marginals["z"].sum().item()  # the posteriors are part of the answer (and sync)
        return float(post.log_evidence)

    def viterbi() -> float:
        post = genppl.infer(hmm.model, batch.data, engine="exact", map=True, marginals=False)
        return float(post.info["map_log_joint"])

    def baum_welch() -> float:
        hmm.params = {}
        return hmm.fit(x, steps=1).log_likelihood[0]

    def reference() -> Any:
        from hmmlearn.hmm import CategoricalHMM

        ref = CategoricalHMM(n_components=k, n_features=SYMBOLS, init_params="",
                             params="ste", n_iter=1, tol=-np.inf)
        ref.startprob_, ref.transmat_ = tables["start"], tables["trans"]
        ref.emissionprob_ = tables["emit"]
        return ref

    def hmmlearn_fb() -> float:
        return float(reference().score_samples(flat, lengths=lengths)[0])

    def hmmlearn_viterbi() -> float:
        return float(reference().decode(flat, lengths=lengths, algorithm="viterbi")[0])

    def hmmlearn_bw() -> float:
        ref = reference()
        ref.fit(flat, lengths=lengths)
        return float(ref.monitor_.history[0])

    rows = [(GENPPL, {"forward-backward": exact, "viterbi": viterbi,
                      "baum-welch x1": baum_welch}),
            (HMMLEARN, {"forward-backward": hmmlearn_fb, "viterbi": hmmlearn_viterbi,
                        "baum-welch x1": hmmlearn_bw})]
    peer = _pomegranate(tables, x, config.device)
    if peer is not None:
        rows.append((POMEGRANATE, peer))
    out = [Contender(_label(size, task, impl), _timed(fns[task], TASKS[task] * per_pass, size))
           for task in TASKS for impl, fns in rows]
    a = torch.rand(n * t, k, dtype=F64, device=config.device)
    b = torch.rand(k, k, dtype=F64, device=config.device)
    out.append(Contender(_label(size, "reference", MATMUL),
                         _timed(lambda: float((a @ b)[0, 0]), per_pass, size)))
    return out


def _pomegranate(tables: dict[str, np.ndarray], x: torch.Tensor, device: str
                 ) -> dict[str, Callable[[], float]] | None:
    """pomegranate's DenseHMM on the same tables (float64, ends = 1), or None if absent."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pomegranate.distributions import Categorical
            from pomegranate.hmm import DenseHMM
    except ImportError:
        return None
    k = len(tables["start"])
    data = x.T.unsqueeze(-1).to(device)  # (N, T, 1)

    def model() -> Any:
        emit = torch.as_tensor(tables["emit"], dtype=F64)
        dists = [Categorical(emit[i:i + 1].clone()) for i in range(k)]
        return DenseHMM(dists, edges=torch.as_tensor(tables["trans"], dtype=F64),
                        starts=torch.as_tensor(tables["start"], dtype=F64),
                        ends=torch.ones(k, dtype=F64), max_iter=1, tol=1e-300,
                        verbose=False).double().to(device)

    fixed = model()

    def fb() -> float:
        out = fixed.forward_backward(data)
        return float(out[-1].sum())

    def viterbi() -> float:
        fixed.viterbi(data).sum().item()
        return float("nan")  # pomegranate returns the path only

    def bw() -> float:
        fitted = model()
        fitted.fit(data)
        return float("nan")  # its M-step also re-estimates end probabilities (another model)

    return {"forward-backward": fb, "viterbi": viterbi, "baum-welch x1": bw}


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per row: log-likelihood error relative to hmmlearn's for the same size and task,
    speed-up over hmmlearn, and achieved GFLOP/s."""
    out = {}
    for name, r in results.items():
        size, task, impl = name.split(" | ")
        ref = results.get(f"{size} | {task} | {HMMLEARN}")
        row: dict[str, Any] = {"gflops": r["flops"] / r["seconds"] / 1e9}
        if ref is not None and impl != MATMUL:
            row["x_hmmlearn"] = ref["seconds"] / r["seconds"]
            value = r["log_likelihood"]
            if value == value:  # NaN: the contender gives no log-likelihood for this task
                row["rel_error"] = abs(value - ref["log_likelihood"]) / abs(ref["log_likelihood"])
                if row["rel_error"] > 1e-6:
                    raise AssertionError(f"{name}: log-likelihood {value} differs from "
                                         f"hmmlearn's {ref['log_likelihood']} by more than 1e-6 "
                                         "relative")
        out[name] = row
    return out


def notes(results: dict[str, Any]) -> list[str]:
    sizes = {r["size"] for r in results.values()}
    lines = ["(K, T, N): " + ", ".join(str(s) for s in sorted(sizes)) + f"; M = {SYMBOLS} "
             "symbols; float64 everywhere.",
             "GFLOP/s count useful flops, 2 N T K^2 per pass (forward-backward 2 passes, "
             "Viterbi 1, Baum-Welch 3); torch.matmul does the same flops in one call.",
             "genppl Viterbi is infer(map=True, marginals=False): one max-product pass "
             "keeping best scores only (no back-pointers), then the backtracking."]
    if not any(name.endswith(POMEGRANATE) for name in results):
        lines.append("pomegranate is not installed: its rows are absent "
                     "(pip install pomegranate).")
    else:
        lines.append("pomegranate: Viterbi returns paths only and its Baum-Welch also "
                     "re-estimates end probabilities, so those rows have no log-likelihood "
                     "check.")
    return lines


CASE = register(Case(
    name="hmm",
    description="HMM forward-backward, Viterbi, one Baum-Welch iteration at three (K, T, N): "
                "genppl exact/em vs hmmlearn vs pomegranate, with GFLOP/s beside torch.matmul",
    baseline=_label(SIZES[0], "forward-backward", HMMLEARN),  # K=4 in quick runs too
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("x_hmmlearn", "x faster than hmmlearn", ".2f"),
             Column("gflops", "GFLOP/s", ".3g"),
             Column("rel_error", "log-lik rel. error vs hmmlearn", ".1e")),
    notes=notes,
))

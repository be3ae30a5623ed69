"""ALARM, batched evidence throughput: cases per second at batch 1, 100 and 10,000.

Each case is evidence on the same 5 variables with its own states (drawn from the network),
and the answer is every posterior marginal of the other 32 variables. genppl ``exact`` answers
a whole batch in one vectorised pass (evidence tensors with a leading case dimension); pgmpy
has no batched query, so it answers case by case, one VariableElimination query per hidden
variable, on a handful of cases. The harness's time ratio compares runs of different sizes
here, so each contender also times its own work and the ``cases/s`` column, and the speed-up
over pgmpy's cases/s, come from those clocks (medians over the same interleaved runs).
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import torch

import genppl
from benchmarks.cases.bn_marginals import network_file, reference_network, sampled_evidence
from benchmarks.harness import BenchConfig, Case, Column, Contender, register

PGMPY = "pgmpy VariableElimination, case by case"
BATCHES = (1, 100, 10_000)
PGMPY_CASES = 5


def _exact_name(batch: int) -> str:
    return f"genppl exact, batch {batch:,}"


def contenders(config: BenchConfig) -> list[Contender]:
    path = network_file("alarm")
    model = genppl.read_bif(path).to(config.device, torch.float64)
    batches = (1, 100, 1_000) if config.quick else BATCHES
    evidence = sampled_evidence(model, config.seed, max(batches))
    hidden = [v for v in model.nodes if v not in evidence]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.inference import VariableElimination

        ve = VariableElimination(reference_network(path))
    named = [{v: model[v].states[int(s[c])] for v, s in evidence.items()}
             for c in range(PGMPY_CASES)]

    def timed(name: str, cases: int, work: Any) -> Any:
        seconds = CLOCKS.setdefault(name, [])

        def run() -> dict[str, Any]:
            start = time.perf_counter()
            answer = work()
            if config.device.startswith("cuda"):
                torch.cuda.synchronize(config.device)
            seconds.append(time.perf_counter() - start)
            return {"cases": cases, "seconds": seconds, "marginals": answer}
        return run

    def pgmpy_cases() -> list[dict[str, torch.Tensor]]:
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for case in named:
                answer = {}
                for v in hidden:
                    q = ve.query([v], evidence=case, show_progress=False)
                    order = [q.state_names[v].index(s) for s in model[v].states]
                    answer[v] = torch.tensor(q.values[order], dtype=torch.float64)
                out.append(answer)
        return out

    def exact(batch: int) -> Any:
        data = {v: s[:batch].to(config.device) for v, s in evidence.items()}

        def work() -> dict[str, torch.Tensor]:
            post = genppl.infer(model, data, engine="exact")
            return {v: post.marginals[v] for v in hidden}
        return work

    CLOCKS.clear()
    out = [Contender(PGMPY, timed(PGMPY, PGMPY_CASES, pgmpy_cases))]
    out += [Contender(_exact_name(b), timed(_exact_name(b), b, exact(b))) for b in batches]
    return out


#: Each contender's own clock: seconds of its runs in this process, warm-up excluded below.
CLOCKS: dict[str, list[float]] = {}


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def rate(r: dict[str, Any]) -> float:
        timed = r["seconds"][2:] or r["seconds"]  # past warm-up and the memory-traced run
        return r["cases"] / statistics.median(timed)

    base = rate(results[PGMPY])
    reference = results[PGMPY]["marginals"]
    out = {}
    for name, r in results.items():
        metrics: dict[str, Any] = {"cases": r["cases"], "cases_per_s": rate(r),
                                   "speedup": rate(r) / base}
        if name != PGMPY:
            metrics["max_abs_marginal_error"] = max(
                float((r["marginals"][v][c].cpu() - ref[v]).abs().max())
                for c, ref in enumerate(reference[: r["cases"]]) for v in ref)
        out[name] = metrics
    return out


CASE = register(Case(
    name="alarm_batched",
    description="ALARM batched evidence throughput (5 evidence variables, all marginals): "
                "genppl exact at batch 1, 100, 10,000 vs pgmpy VE case by case",
    baseline=PGMPY,
    contenders=contenders,
    evaluate=evaluate,
    columns=(Column("cases", "cases per run", ","),
             Column("cases_per_s", "cases/s", ",.0f"),
             Column("speedup", "cases/s ratio to pgmpy", ",.0f"),
             Column("max_abs_marginal_error", "max abs error vs pgmpy", ".1e")),
))

"""What the MCMC cases share: a contender is a whole sampling run, timed once by its own
clock, and judged by effective samples per second of the quantities it is asked for.

ESS is ArviZ's bulk ESS (``genppl.results.diagnostics``), the smallest over every scalar of
every reported quantity, divided by the contender's own time for the whole run (warm-up
included): the rate at which the run buys independent draws of the slowest-mixing one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from genppl.results import diagnostics

#: Each run is many seconds long: time it once, untraced (see ``Contender.trace_memory``).
ONCE: dict[str, Any] = {"warmup": 0, "repeats": 1, "trace_memory": False}

Draws = dict[str, torch.Tensor]  # name -> (chains, draws, *shape)


def timed(sample: Callable[[], Draws]) -> Callable[[], dict[str, Any]]:
    """A contender's run: ``sample()``'s draws (moved to the CPU) and its own seconds."""
    def run() -> dict[str, Any]:
        begin = time.perf_counter()
        draws = sample()
        return {"draws": {k: v.cpu() for k, v in draws.items()},
                "seconds": time.perf_counter() - begin}
    return run


def ess_rows(results: dict[str, Any], baseline: str) -> dict[str, dict[str, Any]]:
    """Per contender: the smallest bulk ESS, ESS/s, its ratio to the baseline's, and each
    quantity's posterior mean and its Monte Carlo standard error (a list for a vector)."""
    out = {}
    for name, r in results.items():
        ess, means, mcse = float("inf"), {}, {}
        for quantity, draws in r["draws"].items():
            flat = draws.to(torch.float64).reshape(*draws.shape[:2], -1)
            stats = [diagnostics(flat[..., j]) for j in range(flat.shape[-1])]
            ess = min(ess, *(s["ess_bulk"] for s in stats))
            mean = [round(float(flat[..., j].mean()), 3) for j in range(flat.shape[-1])]
            error = [round(s["mcse_mean"], 3) for s in stats]
            means[quantity] = mean if draws.dim() > 2 else mean[0]
            mcse[quantity] = error if draws.dim() > 2 else error[0]
        out[name] = {"ess": ess, "ess_per_s": ess / r["seconds"], "means": means,
                     "mcse": mcse}
    base = out[baseline]["ess_per_s"] if baseline in out else float("nan")
    for row in out.values():
        row["ratio"] = row["ess_per_s"] / base
    return out


def chains_and_draws(results: dict[str, Any]) -> tuple[int, int]:
    """How many chains and kept draws per chain the contenders ran."""
    draws = next(iter(next(iter(results.values()))["draws"].values()))
    return draws.shape[0], draws.shape[1]

"""Several MCMC chains, one per worker process, merged into one posterior.

A chain is a function of its index that seeds itself (``seed + index``) and returns its
draws; it reports its progress through the ``advance`` function it is given (``advance(n)``:
n more steps done). Each of several chains runs on one torch thread wherever it runs, so its result
depends on nothing but the seed: run one after another or side by side in worker processes,
the draws are the same (tested). Workers are forked, so a model built
from closures and lambdas needs no pickling; only the draws travel back. Forking is not
possible once CUDA is initialised, and pointless for one chain or on one core: then chains
run in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import torch

from genppl.errors import ModelError

T = TypeVar("T")
#: ``advance(n)``: the chain has taken ``n`` more steps.
Advance = Callable[[int], None]
EXECUTORS = ("auto", "serial", "process")

#: The chain function of the run in progress: forked workers inherit it.
_RUNNING: Callable[[int, Advance], Any] | None = None


def run_chains(chain: Callable[[int, Advance], T], num_chains: int, *, executor: str = "auto",
               device: torch.device | str = "cpu") -> list[T]:
    """The results of chains ``0 .. num_chains - 1`` (what ``chain(index)`` returns; only
    that travels back from a worker, so it must pickle: tensors, numbers, dicts of them).

    ``executor``: ``"serial"`` (this process), ``"process"`` (a forked worker per chain, at
    most one per CPU core at a time), or ``"auto"``: processes when there are several chains,
    several cores, a CPU model and ``fork``."""
    if executor not in EXECUTORS:
        raise ModelError(f"executor must be one of {EXECUTORS}, got {executor!r}.")
    if num_chains < 1:
        raise ModelError(f"num_chains must be >= 1, got {num_chains}.")
    parallel = _can_fork(device) and num_chains > 1 and (
        executor == "process" or (executor == "auto" and (os.cpu_count() or 1) > 1))
    if executor == "process" and not parallel and num_chains > 1:
        raise ModelError("executor='process' needs fork and a CPU model (CUDA cannot be "
                         "forked); use executor='serial'.")
    if parallel:
        return _in_processes(chain, num_chains)
    if num_chains == 1:
        return [chain(0, _ignore)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker: the same arithmetic, the same draws
    try:
        return [chain(c, _ignore) for c in range(num_chains)]
    finally:
        torch.set_num_threads(threads)


def stack_chains(draws: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-chain ``{name: (draws, *shape)}`` as ``{name: (chains, draws, *shape)}``."""
    return {name: torch.stack([d[name] for d in draws]) for name in draws[0]}


def _can_fork(device: torch.device | str) -> bool:
    return (torch.device(device).type == "cpu" and not torch.cuda.is_initialized()
            and "fork" in multiprocessing.get_all_start_methods())


def _in_processes(chain: Callable[[int, Advance], T], num_chains: int) -> list[T]:
    global _RUNNING
    _RUNNING = chain
    try:
        workers = min(num_chains, os.cpu_count() or 1)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_one_thread) as pool:
            return list(pool.map(_run, range(num_chains)))
    finally:
        _RUNNING = None


def _one_thread() -> None:
    """A worker shares the cores with the others: one torch thread each."""
    torch.set_num_threads(1)


def _run(index: int) -> Any:
    assert _RUNNING is not None
    return _RUNNING(index, _ignore)


def _ignore(steps: int) -> None:
    """Progress nobody watches."""

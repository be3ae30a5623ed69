"""Several MCMC chains, run one after another, in forked worker processes or as Ray tasks,
merged into one posterior.

A chain is a function of its index that seeds itself (``seed + index``) and returns its
draws; it reports its progress through the ``advance`` function it is given (``advance(n)``:
n more steps done). Each of several chains runs on one torch thread wherever it runs, so its
result depends on nothing but the seed: run one after another, side by side in worker
processes or on a Ray cluster, the draws are the same (tested).

Workers are forked, so a model built from closures and lambdas needs no pickling; only the
draws travel back. Forking is not possible once CUDA is initialised, and pointless for one
chain or on one core: then chains run in this process. Ray is the way past one machine: its
cloudpickle ships the chain closure (lambdas and all) by value, so it needs nothing but
genppl installed where the tasks run. It is an optional dependency, never chosen by
``"auto"``, and it runs CPU models only: a CUDA model's tensors name a device of this
process, which a task elsewhere may not have or may number differently (and chains on one
GPU are better batched than spread).

Progress bars live in this process, one per chain, whichever executor runs the chains. A
Gibbs sweep can take a millisecond, so ``advance`` must cost microseconds: away from the
bars (a worker, a Ray task), it only adds to a count and sends it at most every
``PERIOD`` seconds, and once more when the chain ends; with no bars it does nothing. Counts
from forked workers come through one pipe created before forking (its writes are small
and locked, so they never interleave), counts from Ray tasks through a small tally actor;
this process's main thread reads them while it waits for the chains, so no thread of ours
(nor tqdm's monitor) is alive when workers fork.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from typing import Any, TextIO, TypeVar

import torch
from tqdm import tqdm

from genppl.errors import ModelError

T = TypeVar("T")
#: ``advance(n)``: the chain has taken ``n`` more steps.
Advance = Callable[[int], None]
EXECUTORS = ("auto", "serial", "process", "ray")
#: Seconds between two progress messages from one chain away from the bars.
PERIOD = 0.1

#: The chain function of the run in progress: forked workers inherit it.
_RUNNING: Callable[[int, Advance], Any] | None = None
#: ``send(index, steps)`` for forked workers of the run in progress, ``None`` without bars.
_SEND: Callable[[int, int], None] | None = None


def run_chains(chain: Callable[[int, Advance], T], num_chains: int, *, executor: str = "auto",
               device: torch.device | str = "cpu", steps: int | None = None,
               progress: bool = False, desc: str = "chain",
               file: TextIO | None = None) -> list[T]:
    """The results of chains ``0 .. num_chains - 1`` (what ``chain(index, advance)``
    returns; only that travels back from a worker, so it must pickle: tensors, numbers,
    dicts of them). A chain calls ``advance(n)`` whenever it has taken ``n`` more steps.

    ``executor``: ``"serial"`` (this process), ``"process"`` (a forked worker per chain, at
    most one per CPU core at a time), ``"ray"`` (a Ray task per chain, one CPU each, on the
    Ray the caller initialised, or else on a local one started for this run and shut down
    after it; needs ``pip install 'genppl[ray]'`` and a CPU model), or ``"auto"``: processes
    when there are several chains, several cores, a CPU model and ``fork``, else serial.

    With ``progress`` and ``steps`` (each chain's total, warm-up included), one bar per
    chain (``f"{desc} {index}"``) is drawn on ``file``, or on standard error when that is a
    terminal. A chain's error is raised here (the lowest index of those that failed), after
    the bars are closed; once a chain fails, chains not yet started are not run, and Ray
    tasks still running are cancelled (worker processes finish theirs)."""
    if executor not in EXECUTORS:
        raise ModelError(f"executor must be one of {EXECUTORS}, got {executor!r}.")
    if num_chains < 1:
        raise ModelError(f"num_chains must be >= 1, got {num_chains}.")
    ray = _import_ray() if executor == "ray" else None
    if ray is not None and torch.device(device).type != "cpu":
        raise ModelError("executor='ray' runs CPU models only (a CUDA model's tensors "
                         "belong to this process's device); use executor='serial'.")
    parallel = _can_fork(device) and num_chains > 1 and (
        executor == "process" or (executor == "auto" and (os.cpu_count() or 1) > 1))
    if executor == "process" and not parallel and num_chains > 1:
        raise ModelError("executor='process' needs fork and a CPU model (CUDA cannot be "
                         "forked); use executor='serial'.")
    with _bars(num_chains, steps, progress, desc, file) as bars:
        if ray is not None:
            return _in_ray(ray, chain, num_chains, bars)
        if parallel:
            return _in_processes(chain, num_chains, bars)
        advances = [_ignore] * num_chains if bars is None else [b.update for b in bars]
        if num_chains == 1:
            return [chain(0, advances[0])]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a worker: the same arithmetic, the same draws
        try:
            return [chain(c, advances[c]) for c in range(num_chains)]
        finally:
            torch.set_num_threads(threads)


def stack_chains(draws: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-chain ``{name: (draws, *shape)}`` as ``{name: (chains, draws, *shape)}``."""
    return {name: torch.stack([d[name] for d in draws]) for name in draws[0]}


class Throttled:
    """``advance`` for a chain away from its bar: adds up the steps and hands the sum to
    ``send(index, steps)`` at most every ``period`` seconds (by ``clock``); ``flush`` sends
    the rest when the chain ends."""

    __slots__ = ("clock", "due", "index", "pending", "period", "send")

    def __init__(self, index: int, send: Callable[[int, int], Any], period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.index, self.send, self.period, self.clock = index, send, period, clock
        self.pending = 0
        self.due = clock() + period

    def __call__(self, n: int = 1) -> None:
        self.pending += n
        now = self.clock()
        if now >= self.due:
            self.send(self.index, self.pending)
            self.pending, self.due = 0, now + self.period

    def flush(self) -> None:
        if self.pending:
            self.send(self.index, self.pending)
            self.pending = 0


class _Bar(tqdm):  # type: ignore[misc]
    """A bar without tqdm's monitor thread: bars exist while workers fork, and the counts
    arrive every ``PERIOD`` seconds anyway."""

    monitor_interval = 0


@contextlib.contextmanager
def _bars(num_chains: int, steps: int | None, progress: bool, desc: str,
          file: TextIO | None) -> Any:
    """One bar per chain, or ``None`` when nobody would see them; closed however the run
    ends."""
    stream = sys.stderr if file is None else file
    if not progress or steps is None or (file is None and not _is_terminal(stream)):
        yield None
        return
    bars = [_Bar(total=steps, desc=f"{desc} {c}", position=c, file=stream, leave=True,
                 dynamic_ncols=True) for c in range(num_chains)]
    try:
        yield bars
    finally:
        for bar in reversed(bars):  # the lowest bar first, so the cursor ends below them all
            bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _can_fork(device: torch.device | str) -> bool:
    return (torch.device(device).type == "cpu" and not torch.cuda.is_initialized()
            and "fork" in multiprocessing.get_all_start_methods())


def _in_processes(chain: Callable[[int, Advance], T], num_chains: int,
                  bars: list[tqdm] | None) -> list[T]:
    global _RUNNING, _SEND
    context = multiprocessing.get_context("fork")
    reader = writer = None
    if bars is not None:
        reader, writer = context.Pipe(duplex=False)
        lock = context.Lock()

        def send(index: int, steps: int) -> None:
            with lock:  # one message at a time through the shared pipe
                writer.send((index, steps))

        _SEND = send
    _RUNNING = chain
    try:
        workers = min(num_chains, os.cpu_count() or 1)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
            futures = [pool.submit(_run, c) for c in range(num_chains)]
            if reader is None or bars is None:
                wait(futures, return_when=FIRST_EXCEPTION)
                _settled(futures)
                wait(futures)
            else:
                while not _settled(futures):
                    _receive(reader, bars, PERIOD)
                _receive(reader, bars, 0)  # a worker writes its last count before returning
        for f in futures:  # the failed chain of lowest index, if any, raises
            if not f.cancelled() and f.exception() is not None:
                f.result()
        return [f.result() for f in futures]
    finally:
        _RUNNING = _SEND = None
        for end in (reader, writer):
            if end is not None:
                end.close()


def _settled(futures: list[Future[Any]]) -> bool:
    """Every chain done, or one failed and the others are done or cancelled."""
    if any(f.done() and not f.cancelled() and f.exception() is not None for f in futures):
        for f in futures:
            f.cancel()  # only chains not yet started
    return all(f.done() for f in futures)


def _receive(reader: Any, bars: list[tqdm], timeout: float) -> None:
    """Move the counts waiting in the pipe (within ``timeout`` seconds) onto the bars."""
    while reader.poll(timeout):
        index, steps = reader.recv()
        bars[index].update(steps)
        timeout = 0


def _one_thread() -> None:
    """A worker shares the cores with the others: one torch thread each."""
    torch.set_num_threads(1)


def _run(index: int) -> Any:
    assert _RUNNING is not None
    if _SEND is None:
        return _RUNNING(index, _ignore)
    advance = Throttled(index, _SEND)
    try:
        return _RUNNING(index, advance)
    finally:
        advance.flush()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ModelError("executor='ray' needs Ray: pip install 'genppl[ray]'.") from error
    return ray


def _in_ray(ray: Any, chain: Callable[[int, Advance], T], num_chains: int,
            bars: list[tqdm] | None) -> list[T]:
    started = not ray.is_initialized()
    if started:  # a local Ray for this run only; a Ray the caller set up is left running
        ray.init(address="local", num_cpus=min(num_chains, os.cpu_count() or 1),
                 include_dashboard=False, logging_level=logging.ERROR)
    tally = None
    try:
        if bars is not None:
            tally = _tally(ray)
        task = ray.remote(num_cpus=1)(_ray_chain)
        shipped = ray.put(chain)  # pickled once, not once per chain
        refs = [task.remote(shipped, c, tally) for c in range(num_chains)]
        pending, failed = list(refs), False
        while pending and not failed:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=PERIOD)
            failed = any(_raises(ray, r) for r in ready)
            if tally is not None and bars is not None:
                _count(ray.get(tally.take.remote()), bars)
        if failed:
            for ref in pending:
                ray.cancel(ref, force=True)  # stops the chains still running
            finished = [r for r in refs if r not in pending]
            _result(ray, next(r for r in finished if _raises(ray, r)))
        if tally is not None and bars is not None:
            _count(ray.get(tally.take.remote()), bars)  # each task's last count, awaited
        return [_result(ray, ref) for ref in refs]
    finally:
        if tally is not None:
            ray.kill(tally)
        if started:
            ray.shutdown()


def _raises(ray: Any, ref: Any) -> bool:
    try:
        ray.get(ref)
    except Exception:
        return True
    return False


def _result(ray: Any, ref: Any) -> Any:
    """A task's result, or its chain's own error (Ray's traceback as its cause)."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as error:
        if isinstance(error.cause, Exception):
            raise error.cause from error
        raise


def _count(counts: dict[int, int], bars: list[tqdm]) -> None:
    for index, steps in counts.items():
        bars[index].update(steps)


def _tally(ray: Any) -> Any:
    """A Ray actor adding up the steps chains report until the bars take them. Its class is
    made here, not at the top of the module, so that cloudpickle ships it by value and the
    actor's worker never imports genppl and torch (seconds, on a busy machine)."""

    class Tally:
        def __init__(self) -> None:
            self.counts: dict[int, int] = {}

        def add(self, index: int, steps: int) -> None:
            self.counts[index] = self.counts.get(index, 0) + steps

        def take(self) -> dict[int, int]:
            counts, self.counts = self.counts, {}
            return counts

    return ray.remote(num_cpus=0)(Tally).remote()


def _ray_chain(chain: Callable[[int, Advance], Any], index: int, tally: Any) -> Any:
    """One chain as a Ray task, on one torch thread like a forked worker."""
    import ray

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    advance = None if tally is None else Throttled(
        index, lambda i, n: tally.add.remote(i, n))
    try:
        return chain(index, _ignore if advance is None else advance)
    finally:
        torch.set_num_threads(threads)
        if advance is not None and advance.pending:
            ray.get(tally.add.remote(index, advance.pending))  # there before the result


def _ignore(steps: int) -> None:
    """Progress nobody watches."""

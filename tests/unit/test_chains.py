"""``run_chains``: per-chain progress bars fed from wherever the chains run, the throttle that
keeps ``advance`` cheap, and Ray as an executor that draws what a serial run draws.

Chains run on Ray are closures defined inside the tests: Ray's cloudpickle ships them by
value, while a function at this module's top level would be pickled by reference, and Ray's
workers cannot import a test module."""

from __future__ import annotations

import inspect
import io
import itertools
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyro.distributions as dist
import pytest
import torch

import genppl
from genppl.runtime import chains
from genppl.runtime.chains import PERIOD, Throttled, run_chains

pytestmark = pytest.mark.unit


def _stepping(steps: int, fail: int | None = None) -> Any:
    """A chain taking ``steps`` steps, one ``advance`` each; chain ``fail`` raises."""

    def chain(index: int, advance: Any) -> int:
        for _ in range(steps):
            advance(1)
        if index == fail:
            raise genppl.ModelError(f"chain {index} broke on purpose")
        return index

    return chain


def _final_counts(text: str, num_chains: int) -> list[int]:
    """Each bar's last drawn count ``n`` of ``n/total``."""
    counts = []
    for c in range(num_chains):
        found = re.findall(rf"chain {c}:[^\r\n\x1b]*?\| *(\d+)/\d+", text)
        assert found, f"no bar for chain {c} in {text!r}"
        counts.append(int(found[-1]))
    return counts


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_each_chains_bar_reaches_its_steps(executor: str) -> None:
    stream = io.StringIO()
    out = run_chains(_stepping(3000), 3, executor=executor, steps=3000, progress=True,
                     file=stream)
    assert out == [0, 1, 2]
    assert _final_counts(stream.getvalue(), 3) == [3000] * 3


def test_a_resumed_chain_reports_its_steps_done_in_one_advance() -> None:
    def chain(index: int, advance: Any) -> int:
        advance(40)  # restored from a checkpoint
        for _ in range(10):
            advance(1)
        return index

    stream = io.StringIO()
    run_chains(chain, 2, executor="process", steps=50, progress=True, file=stream)
    assert _final_counts(stream.getvalue(), 2) == [50, 50]


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_a_failing_chain_closes_the_bars_and_raises_its_error(
        executor: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[Any] = []

    class Recorded(chains._Bar):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(chains, "_Bar", Recorded)
    with pytest.raises(genppl.ModelError, match="chain 1 broke on purpose"):
        run_chains(_stepping(20, fail=1), 3, executor=executor, steps=20, progress=True,
                   file=io.StringIO())
    assert len(bars) == 3 and all(bar.disable for bar in bars)  # tqdm's mark of a closed bar
    assert chains._RUNNING is None and chains._SEND is None


def test_no_bars_without_progress_steps_or_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without bars, a chain's ``advance`` is the no-op, wherever it runs."""
    seen: list[Any] = []

    def chain(index: int, advance: Any) -> int:
        seen.append(advance)
        return index

    stream = io.StringIO()
    run_chains(chain, 2, executor="serial", steps=None, progress=True, file=stream)
    run_chains(chain, 2, executor="serial", steps=5, progress=False, file=stream)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    run_chains(chain, 2, executor="serial", steps=5, progress=True)
    assert stream.getvalue() == "" and sys.stderr.getvalue() == ""
    assert all(a is chains._ignore for a in seen)


def test_the_throttle_sends_at_most_once_a_period_and_loses_no_step() -> None:
    sent: list[tuple[int, int]] = []
    clock = itertools.count(0.0, 0.001).__next__  # a millisecond a step, whatever the machine
    advance = Throttled(4, lambda i, n: sent.append((i, n)), clock=clock)
    for _ in range(10_000):
        advance(1)
    advance.flush()
    assert sum(n for _, n in sent) == 10_000 and {i for i, _ in sent} == {4}
    assert len(sent) <= 10_000 * 0.001 / PERIOD + 1  # ten seconds of steps: 101 messages


def test_the_throttle_on_the_real_clock() -> None:
    """10,000 quick steps send a handful of messages, as many as the periods they spanned."""
    sent: list[int] = []
    start = time.monotonic()
    advance = Throttled(0, lambda i, n: sent.append(n))
    for _ in range(10_000):
        advance(1)
    advance.flush()
    elapsed = time.monotonic() - start
    assert sum(sent) == 10_000
    assert len(sent) <= elapsed / PERIOD + 2


def test_missing_ray_is_a_model_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(genppl.ModelError, match=re.escape("pip install 'genppl[ray]'")):
        run_chains(_stepping(1), 2, executor="ray")


def test_unknown_executor_lists_ray() -> None:
    with pytest.raises(genppl.ModelError, match="'ray'"):
        run_chains(_stepping(1), 2, executor="dask")


# --- Ray: one local Ray for the module -------------------------------------------------------


@pytest.fixture(scope="module")
def ray_running() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install "
                                            "'genppl[ray]'")
    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()


def _normal_mean() -> tuple[genppl.Model, dict[str, torch.Tensor]]:
    m = genppl.Model("normal_mean")
    m.latent("mu", lambda: dist.Normal(0.0, 1.0))
    m.observed("y", lambda mu: dist.Normal(mu, 1.0))
    return m, {"y": torch.tensor(0.7)}


def _plated() -> tuple[genppl.Model, dict[str, torch.Tensor]]:
    """As in test_gibbs: a global switch and per-item assignments in a plate."""
    m = genppl.Model("plated")
    f64 = torch.float64
    m.cpt("g", [], [0.4, 0.6])
    with m.plate("items", 3):
        m.latent("z", lambda g: dist.Categorical(
            torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=f64)[g]))
        m.observed("y", lambda z: dist.Poisson(1.0 + 2.0 * z.to(f64)))
    return m.to(dtype=f64), {"y": torch.tensor([0.0, 3.0, 5.0], dtype=f64)}


@pytest.mark.parametrize(("engine", "make", "options"), [
    ("gibbs", _plated, {"num_samples": 30}),
    ("nuts", _normal_mean, {"num_samples": 20, "warmup_steps": 15}),
])
def test_ray_tasks_draw_what_chains_in_turn_draw(ray_running: Any, engine: str, make: Any,
                                                 options: dict[str, Any]) -> None:
    """The model (lambdas and all) travels by cloudpickle; each task seeds itself and runs
    on one torch thread, so the draws equal a serial run's."""
    model, data = make()
    runs = [genppl.infer(model, data, engine=engine, num_chains=2, seed=5, executor=executor,
                         progress=False, **options) for executor in ("serial", "ray")]
    assert runs[0].samples.keys() == runs[1].samples.keys()
    for name in runs[0].samples:
        assert runs[0].samples[name].shape[0] == 2
        assert torch.equal(runs[0].samples[name], runs[1].samples[name])
    assert ray_running.is_initialized()  # the caller's Ray is left running


def test_ray_chains_bars_reach_their_steps(ray_running: Any) -> None:
    steps = 2000

    def chain(index: int, advance: Any) -> int:
        for _ in range(steps):
            advance(1)
        return index * 10

    stream = io.StringIO()
    assert run_chains(chain, 2, executor="ray", steps=steps, progress=True,
                      file=stream) == [0, 10]
    assert _final_counts(stream.getvalue(), 2) == [steps, steps]


def test_a_failing_ray_chain_raises_its_own_error(ray_running: Any) -> None:
    def chain(index: int, advance: Any) -> int:
        advance(1)
        if index == 1:
            raise genppl.ModelError("ray chain 1 broke on purpose")
        return index

    with pytest.raises(genppl.ModelError, match="ray chain 1 broke on purpose"):
        run_chains(chain, 2, executor="ray", steps=1, progress=True, file=io.StringIO())


def test_ray_refuses_a_cuda_model(ray_running: Any) -> None:
    with pytest.raises(genppl.ModelError, match="CPU models only"):
        run_chains(_stepping(1), 2, executor="ray", device="cuda")


def test_ray_started_for_a_run_is_shut_down_after_it(
        ray_running: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a Ray of the caller's, run_chains starts a local one and shuts it down (the
    calls are recorded, and run against the module's Ray, to spare a second start)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class Uninitialised:
        """The module's Ray, as run_chains sees it, but seemingly not started."""

        def __getattr__(self, name: str) -> Any:
            return getattr(ray_running, name)

        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs: Any) -> None:
            calls.append(("init", kwargs))

        def shutdown(self) -> None:
            calls.append(("shutdown", {}))

    monkeypatch.setattr(chains, "_import_ray", Uninitialised)
    assert run_chains(_stepping(3), 2, executor="ray") == [0, 1]
    assert [name for name, _ in calls] == ["init", "shutdown"]
    init = calls[0][1]
    inspect.signature(ray_running.init).bind(**init)  # arguments this Ray's init takes
    assert init["address"] == "local" and init["include_dashboard"] is False

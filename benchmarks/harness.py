"""A small benchmark harness: cases of peer implementations, timed side by side.

The rule it enforces is that a number is only reported next to its peers from the same run,
on the same data and machine: one case holds every contender (genppl and the reference
implementations), their runs are interleaved, and the table gives each one's time as a ratio to
the case's baseline. Absolute seconds from different runs or machines are never compared.

Each contender gets ``warmup`` untimed runs (lazy imports, caches, allocator pools), then one
untimed run under ``tracemalloc`` for memory, then ``repeats`` runs timed with
:func:`time.perf_counter`; each phase runs for all contenders before the next, and the timed
runs go round-robin, so that a change in machine load affects every contender alike. As in
``timeit``, a contender whose memory run took less than ``min_run_s`` is called that many
times more per timed run (``calls``) and each run reports the time per call: a
millisecond-long call timed alone measures the cold caches the previous contender and the
collector left, more than the call. Every contender gets the same rule. Memory is
reported three ways, because no single one is right:

* ``peak_python_mb``: ``tracemalloc``'s peak, which sees Python objects and NumPy arrays but
  *not* torch's CPU tensors (torch allocates outside Python's allocator);
* ``rss_growth_mb``: on Linux, how far a timed run pushed the process's resident-set
  high-water mark (reset through ``/proc/self/clear_refs``) above its size at the start of the
  run; this does see torch, but is 0 when the run fits in memory the process already holds
  (None off Linux);
* ``peak_cuda_mb``: ``torch.cuda.max_memory_allocated`` over the traced run, on a CUDA device.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "CASES",
    "BenchConfig",
    "Case",
    "Column",
    "Contender",
    "Measurement",
    "discover",
    "get_case",
    "markdown_table",
    "register",
    "run_case",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Packages whose versions are recorded with every result, when installed.
RECORDED_PACKAGES = ("genppl", "torch", "pyro-ppl", "numpy", "scikit-learn")


@dataclass(frozen=True)
class BenchConfig:
    """How to run a case. ``quick`` asks cases for a smaller workload (a smoke run of the
    harness and the case, not numbers to quote); ``warmup``/``repeats`` are defaults that a
    contender may lower when one run is already long."""

    device: str = "cpu"
    quick: bool = False
    warmup: int = 1
    repeats: int = 3
    seed: int = 0
    min_run_s: float = 0.2  # timeit.Timer.autorange's


@dataclass(frozen=True)
class Contender:
    """One implementation in a case. ``run`` is exactly the work that is timed and returns
    what :attr:`Case.evaluate` reads; setup shared by all (data, imports) belongs outside it."""

    name: str
    run: Callable[[], Any]
    repeats: int | None = None  # None: the config's
    warmup: int | None = None
    #: False for runs of many seconds (an MCMC run): tracemalloc would slow the Python-heavy
    #: ones several-fold, doubling the case's time for a figure that says little; their
    #: memory column stays empty and they are called once per timed run.
    trace_memory: bool = True


@dataclass(frozen=True)
class Column:
    """A quality metric shown in the table: ``metrics[key]`` formatted with ``fmt``."""

    key: str
    header: str
    fmt: str = ".4g"


@dataclass(frozen=True)
class Case:
    """Peers solving one problem. ``contenders(config)`` builds them (data loaded once, shared);
    ``evaluate(results)`` turns each contender's last result into metrics, given all of them,
    so that errors can be measured against a reference; ``notes(results)`` adds context lines
    to the report (e.g. a historical solution that has no timing)."""

    name: str
    description: str
    baseline: str
    contenders: Callable[[BenchConfig], list[Contender]]
    evaluate: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None
    columns: tuple[Column, ...] = ()
    notes: Callable[[dict[str, Any]], list[str]] | None = None


@dataclass
class Measurement:
    """One contender's numbers from one run of a case."""

    contender: str
    seconds: list[float]
    peak_python_mb: float | None = None
    rss_growth_mb: float | None = None
    peak_cuda_mb: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None  # median seconds / the baseline's median seconds
    calls: int = 1  # calls per timed run (``seconds`` are per call)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min_s(self) -> float:
        return min(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"runs": len(self.seconds), "median_s": self.median_s,
                               "min_s": self.min_s}


@dataclass
class CaseResult:
    """A finished case: what was measured, where it was written, and the printed table."""

    case: Case
    config: BenchConfig
    measurements: list[Measurement]
    notes: list[str]
    timestamp: str
    environment: dict[str, Any]
    json_path: Path | None = None
    md_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case.name,
            "description": self.case.description,
            "baseline": self.case.baseline,
            "timestamp": self.timestamp,
            "config": asdict(self.config),
            "environment": self.environment,
            "rows": [m.to_dict() for m in self.measurements],
            "notes": self.notes,
        }


# --------------------------------------------------------------------------- registry
CASES: dict[str, Case] = {}


def register(case: Case) -> Case:
    """Add a case to :data:`CASES`; case modules call this at import."""
    if case.name in CASES and CASES[case.name] is not case:
        raise ValueError(f"benchmark case {case.name!r} is registered twice")
    CASES[case.name] = case
    return case


def _case_modules() -> list[str]:
    """The modules of ``benchmarks/cases/``, found on disk: the cases import this harness to
    register themselves, so the harness finds them by name rather than importing the package
    (which would make the two import each other)."""
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).with_name("cases"))]))


def _import_case_module(module: str) -> None:
    try:
        importlib.import_module(f"benchmarks.cases.{module}")
    except ImportError as e:
        raise LookupError(f"benchmarks/cases/{module}.py could not be imported: {e} "
                          "(is the bench extra installed? pip install -e '.[bench]')") from e


def discover() -> dict[str, Case]:
    """Import every module in ``benchmarks/cases/`` (each registers its case)."""
    for module in _case_modules():
        _import_case_module(module)
    return CASES


def get_case(name: str) -> Case:
    """A case by name, importing only its module when the names match."""
    if name not in CASES and name in _case_modules():
        _import_case_module(name)
    if name not in CASES:
        discover()
    if name not in CASES:
        raise LookupError(f"unknown benchmark case {name!r}; valid cases: "
                          f"{', '.join(sorted(CASES)) or '(none)'}")
    return CASES[name]


# --------------------------------------------------------------------------- measuring
def _rss_reset() -> float | None:
    """Reset the resident-set high-water mark and return the current RSS in MB (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status("VmRSS")
    except OSError:
        return None


def _proc_status(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _cuda_sync(device: str) -> None:
    # Kernels run asynchronously: without a sync the clock stops before the GPU is done.
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


def _traced_run(contender: Contender, config: BenchConfig, m: Measurement) -> None:
    """An untimed run traced for memory (tracemalloc slows Python code, so it is never on
    during a timed run)."""
    gc.collect()
    cuda_before = 0
    if _is_cuda(config.device):
        import torch

        torch.cuda.synchronize(config.device)
        torch.cuda.reset_peak_memory_stats(config.device)
        cuda_before = torch.cuda.memory_allocated(config.device)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        contender.run()
        _cuda_sync(config.device)
        # The second call at least, so one-time costs are paid; tracemalloc slows it, which
        # only makes the timed runs somewhat shorter than min_run_s.
        m.calls = max(1, int(config.min_run_s / max(time.perf_counter() - start, 1e-9)))
        m.peak_python_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    if _is_cuda(config.device):
        import torch

        m.peak_cuda_mb = (torch.cuda.max_memory_allocated(config.device) - cuda_before) / 2**20


def _timed_run(contender: Contender, config: BenchConfig, m: Measurement) -> Any:
    gc.collect()
    rss_before = _rss_reset()
    _cuda_sync(config.device)
    start = time.perf_counter()
    for _ in range(m.calls):
        result = contender.run()
    _cuda_sync(config.device)
    m.seconds.append((time.perf_counter() - start) / m.calls)
    rss_peak = _proc_status("VmHWM") if rss_before is not None else None
    if rss_before is not None and rss_peak is not None:
        m.rss_growth_mb = max(m.rss_growth_mb or 0.0, rss_peak - rss_before)
    return result


def run_case(case: Case, config: BenchConfig, *, out_dir: Path | None = RESULTS_DIR,
             echo: Callable[[str], None] | None = print) -> CaseResult:
    """Measure every contender of ``case``, write ``<timestamp>-<case>.json`` and ``.md``
    under ``out_dir`` (nothing written when None) and print the table through ``echo``."""
    timestamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    contenders = case.contenders(config)
    names = [c.name for c in contenders]
    if case.baseline not in names:
        raise ValueError(f"case {case.name!r}: baseline {case.baseline!r} is not one of its "
                         f"contenders {names}")
    measurements = {c.name: Measurement(c.name, []) for c in contenders}
    last: dict[str, Any] = {}
    env = environment(config.device)  # the load average before the work, not after it

    def say(text: str) -> None:
        if echo is not None:
            print(text, file=sys.stderr, flush=True)

    # Phases across all contenders, so that one-time costs (imports, caches) shared by several
    # are paid in warm-up, never in a measured run: warm-ups, then one traced run each for
    # memory, then the timed runs, interleaved.
    for c in contenders:
        for i in range(c.warmup if c.warmup is not None else config.warmup):
            say(f"[{case.name}] warm-up {i + 1}: {c.name}")
            c.run()
    for c in contenders:
        if c.trace_memory:
            say(f"[{case.name}] memory: {c.name}")
            _traced_run(c, config, measurements[c.name])
    repeats = {c.name: max(c.repeats if c.repeats is not None else config.repeats, 1)
               for c in contenders}
    for r in range(max(repeats.values())):
        for c in contenders:
            if r < repeats[c.name]:
                say(f"[{case.name}] run {r + 1}/{repeats[c.name]}: {c.name}")
                last[c.name] = _timed_run(c, config, measurements[c.name])

    if case.evaluate is not None:
        for name, metrics in case.evaluate(last).items():
            measurements[name].metrics.update(metrics)
    base = measurements[case.baseline].median_s
    for m in measurements.values():
        m.ratio = m.median_s / base if base > 0 else None
    env["process_max_rss_mb"] = _max_rss_mb()
    if hasattr(os, "getloadavg"):
        env["load_average_end"] = _load_average()
    result = CaseResult(case, config, list(measurements.values()),
                        case.notes(last) if case.notes is not None else [], timestamp, env)
    text = markdown_report(result)
    if out_dir is not None:
        result.json_path, result.md_path = _write(result, text, out_dir)
    if echo is not None:
        echo(text)
        if result.json_path is not None:
            echo(f"wrote {result.json_path} and {result.md_path}")
    return result


# --------------------------------------------------------------------------- reporting
def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value != value:
        return "nan"
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def _cell(text: str) -> str:
    # A bare "|" would end the cell early and break the table.
    return text.replace("|", "\\|")


def table_columns(result: CaseResult) -> list[str]:
    """The table's headers, in order (the case's quality columns last)."""
    headers = ["contender", "runs", "calls/run", "median s", "min s", "time ratio",
               "peak Python MB", "RSS growth MB"]
    if _is_cuda(result.config.device):
        headers.append("peak CUDA MB")
    return headers + [c.header for c in result.case.columns]


def markdown_table(result: CaseResult) -> str:
    headers = table_columns(result)
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for m in result.measurements:
        cells = [m.contender, str(len(m.seconds)), str(m.calls), _fmt(m.median_s, ".3g"),
                 _fmt(m.min_s, ".3g"),
                 _fmt(m.ratio, ".2f") + ("x" if m.ratio is not None else ""),
                 _fmt(m.peak_python_mb, ".1f"), _fmt(m.rss_growth_mb, ".1f")]
        if _is_cuda(result.config.device):
            cells.append(_fmt(m.peak_cuda_mb, ".1f"))
        cells += [_fmt(m.metrics.get(c.key), c.fmt) for c in result.case.columns]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def markdown_report(result: CaseResult) -> str:
    env = result.environment
    cfg = result.config
    versions = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    lines = [
        f"## {result.case.name}: {result.case.description}",
        "",
        f"{result.timestamp} · device {cfg.device}"
        + (f" ({env['device_name']})" if env.get("device_name") else "")
        + f" · {'quick' if cfg.quick else 'full'} · warm-up {cfg.warmup} · repeats "
        f"{cfg.repeats} · seed {cfg.seed} · {env['cpu_count']} CPUs, torch threads "
        f"{env.get('torch_threads', 'n/a')} · load {env.get('load_average', 'n/a')} before, "
        f"{env.get('load_average_end', 'n/a')} after",
        "",
        f"{versions}; git {env.get('git', 'n/a')}",
        "",
        markdown_table(result),
        "",
        f"- time ratio: median seconds / median seconds of {result.case.baseline}, "
        "measured in this same run.",
    ]
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def _load_average() -> str:
    """1, 5 and 15-minute load: on a shared machine, the first thing to check in a number."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _max_rss_mb() -> float | None:
    """The whole process's resident-set high-water mark (all contenders, imports included)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def environment(device: str) -> dict[str, Any]:
    """What a reader needs to judge a number: versions, CPUs, threads, load, GPU, commit."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": {},
    }
    for package in RECORDED_PACKAGES:
        try:
            env["packages"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    if hasattr(os, "getloadavg"):
        env["load_average"] = _load_average()
    if "torch" in sys.modules:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        if _is_cuda(device) and torch.cuda.is_available():
            env["device_name"] = torch.cuda.get_device_name(device)
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, text=True,
                               capture_output=True, check=True, timeout=10).stdout.strip()
        env["git"] = head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def _write(result: CaseResult, text: str, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result.timestamp}-{result.case.name}"
    n = 1
    while (out_dir / f"{stem}.json").exists():  # two runs within one second
        n += 1
        stem = f"{result.timestamp}-{result.case.name}-{n}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n",
                         encoding="utf-8")
    md_path.write_text(text, encoding="utf-8")
    return json_path, md_path

"""``python -m benchmarks.run [CASE ...] [--device cpu] [--quick]``: run benchmark cases.

Each case runs all of its contenders side by side and writes
``benchmarks/results/<timestamp>-<case>.json`` and ``.md``; the table is printed on stdout and
progress on stderr. With no CASE, every case in ``benchmarks/cases/`` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import RESULTS_DIR, BenchConfig, discover, get_case, run_case


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Measure genppl and its peers side by side; report time ratios.")
    parser.add_argument("cases", nargs="*", metavar="CASE", help="cases to run (default: all)")
    parser.add_argument("--device", default="cpu", help="torch device for genppl (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="small workloads and one timed run each: checks that the cases "
                             "run, gives no numbers to quote")
    parser.add_argument("--warmup", type=_positive_int,
                        help="untimed warm-up runs per contender (default 1), before the one "
                             "traced for memory")
    parser.add_argument("--repeats", type=_positive_int,
                        help="timed runs per contender (default 3, --quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-run", type=float, default=0.2, metavar="SECONDS",
                        help="call a contender whose memory run was shorter this many times "
                             "more per timed run, timing per call, as timeit does "
                             "(default 0.2, as timeit; 0: one call per run)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help=f"results directory (default: {RESULTS_DIR})")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cases; exit code 2 for an unknown case or unavailable device."""
    args = build_parser().parse_args(argv)
    if args.list:
        for case in discover().values():
            print(f"{case.name}: {case.description}")
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"error: --device {args.device}: CUDA is not available", file=sys.stderr)
            return 2
    try:
        cases = [get_case(n) for n in args.cases] if args.cases else list(discover().values())
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = BenchConfig(device=args.device, quick=args.quick, seed=args.seed,
                         warmup=args.warmup or 1,
                         repeats=args.repeats or (1 if args.quick else 3),
                         min_run_s=args.min_run)
    for case in cases:
        run_case(case, config, out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

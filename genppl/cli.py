"""The ``genppl`` command line: list, run and draw gallery entries, score the lineage on one
likelihood scale (``genppl leaderboard``), and a one-command demo.

Every subcommand goes through the same gallery contract (:mod:`genppl.gallery`) as the smoke
tests and the benchmarks, so what the command line shows is what those measure. User errors
(an unknown entry or engine, a bad device, a missing Graphviz, an unreadable network, an output
path that cannot be written) end in one line on stderr and an exit code, never a traceback: 2
for a command that could not be understood, 1 for one that was understood but failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from genppl.budget import memory_limit
from genppl.errors import ModelError, UnknownName
from genppl.gallery import GalleryEntry, RunConfig, RunReport, UnknownEntry, load_gallery

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
#: The command was understood but did not succeed (a model error, a missing Graphviz).
EXIT_FAILED = 1
#: The command could not be understood (argparse's own convention for usage errors).
EXIT_USAGE = 2

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
DEMO_ENTRY = "pearson_crabs"
DEMO_OUT = Path("genppl-demo")


class UsageError(Exception):
    """A request that names something that does not exist; exit code 2."""


class CommandFailed(Exception):
    """A well-formed request that could not be carried out; exit code 1."""


# --------------------------------------------------------------------------- helpers
def _device(text: str) -> str:
    """Check a device string up front: a CUDA request on a machine without CUDA would
    otherwise fail deep inside torch, after the model was built."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {text!r} requested but CUDA is not available "
                         "(this torch build or machine has no GPU); use --device cpu.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device {text!r} requested but only {torch.cuda.device_count()} "
                         "CUDA device(s) are visible (cuda:0 ...).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {text!r} requested but MPS is not available; "
                         "use --device cpu.")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4,
               "tb": 1000**4, "tib": 1024**4}


def _memory_size(text: str) -> int:
    """``--max-memory``: bytes, or a number with a unit (``512MiB``, ``4GB``, ``2g``)."""
    stripped = text.strip().lower().replace(" ", "")
    number = stripped.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = stripped[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if unit not in _SIZE_UNITS or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a positive memory size such as 512MiB, 4GB or 2000000000, got {text!r}")
    return max(1, int(value * _SIZE_UNITS[unit]))


def _make_dir(directory: Path, request: str) -> None:
    """Create a directory the command will write into, before any work starts: a path that
    cannot hold files (a regular file in the way, no permission) is reported at once rather
    than after a run of minutes or hours whose results would then be lost. ``request`` is
    how the message names what was asked, e.g. ``--out DIR`` or ``-o FILE``."""
    blocking = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()),
                    None)
    if blocking is not None:
        raise CommandFailed(f"{request}: {blocking} is a file, not a directory; "
                            "choose another path.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_failure(f"{request}: cannot create {directory}", e) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CommandFailed(f"{request}: {directory} is not writable; choose another path.")


def _os_failure(what: str, e: OSError) -> CommandFailed:
    """One line for a file-system error (a full disk, a permission, a path in the way),
    naming the file unless ``what`` already does."""
    named = e.filename is None or str(e.filename) in what
    return CommandFailed(f"{what}: {e.strerror or e}" + ("" if named else f" ({e.filename})")
                         + ".")


def _jsonable(obj: Any) -> Any:
    """JSON fallback for what entries put in metrics: tensors, arrays, paths, numpy scalars."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, Path):
        return str(obj)
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    return str(obj)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_jsonable))


def _progress() -> bool:
    """Progress bars only for a person watching: never in pipes, logs or captured output."""
    return sys.stderr.isatty()


def _run_entry(entry: GalleryEntry, config: RunConfig) -> RunReport:
    # Checked here, before any work, so an unknown engine is a usage error (exit 2) while a
    # ModelError raised by the run itself is a failure (exit 1); then the directories are
    # made, so that a bad path fails now and not after the run.
    try:
        entry.check(config)
    except ModelError as e:
        raise UsageError(str(e)) from None
    if config.out is not None:
        _make_dir(config.out, f"--out {config.out}")
    if config.checkpoint is not None:
        _make_dir(config.checkpoint, f"--checkpoint {config.checkpoint}")
    try:
        with memory_limit(config.max_memory):
            return entry.run(config)
    except ModelError as e:
        raise CommandFailed(f"{entry.name}: {e}") from None
    except OSError as e:  # writing its pictures or checkpoints: a full disk, a vanished path
        raise _os_failure(entry.name, e) from None


# --------------------------------------------------------------------------- subcommands
def cmd_gallery_list(args: argparse.Namespace) -> int:
    gallery = load_gallery()
    rows = [{"name": e.name, "title": e.title, "engines": list(e.engines),
             "default_engine": e.default_engine} for e in gallery.entries.values()]
    if args.json:
        _print_json({"entries": rows,
                     "broken": [{"module": m, "error": r} for m, r in gallery.broken.items()]})
    else:
        width = max((len(r["name"]) for r in rows), default=4)
        eng_width = max((len(", ".join(r["engines"])) for r in rows), default=7)
        print(f"{'name':<{width}}  {'engines':<{eng_width}}  title")
        for r in rows:
            print(f"{r['name']:<{width}}  {', '.join(r['engines']):<{eng_width}}  {r['title']}")
    for reason in gallery.broken.values():
        print(f"warning: {reason}", file=sys.stderr)
    return EXIT_OK


def cmd_engines(args: argparse.Namespace) -> int:
    from genppl.engines.contract import listing

    rows = listing()
    if args.json:
        _print_json({"engines": rows})
    elif args.markdown:
        print(engines_markdown(rows), end="")
    else:
        width = max((len(r["name"]) for r in rows), default=4)
        for r in rows:
            print(f"{r['name']:<{width}}  {'/'.join(r['provides']):<9}  {r['description']}")
            print(f"{'':<{width}}  returns {', '.join(r['returns'])}; accepts "
                  f"{', '.join(r['accepts'])}")
            options = ", ".join(f"{o['name']}={o['default']}" for o in r["options"])
            print(f"{'':<{width}}  options: {options or '(none)'}")
    return EXIT_OK


def _cell(text: str) -> str:
    """``text`` inside a Markdown table cell (a bar would end the cell)."""
    return text.replace("|", "\\|")


def engines_markdown(rows: list[dict[str, Any]]) -> str:
    """``docs/engines.md``: the engines' contracts as tables (``genppl engines --markdown``;
    a test fails when the file in docs/ is not what this gives)."""
    from genppl.engines.contract import PREFERENCE

    lines = ["# Engines", "",
             "Generated from the engines' contracts (`genppl.engines.contract`) by",
             "`python -m genppl engines --markdown > docs/engines.md`; do not edit by hand.",
             "`genppl.infer` without `engine=` runs the first engine of "
             f"{', '.join(PREFERENCE)} that accepts the model and finds something to do in it.",
             "", "| engine | call | returns | accepts | needs one of | what it does |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | {', '.join(r['provides'])} | "
                     f"{', '.join(r['returns'])} | {', '.join(r['accepts'])} | "
                     f"{', '.join(r['needs']) or '-'} | {r['description']} |")
    for r in rows:
        lines += ["", f"## `{r['name']}` options", ""]
        if not r["options"]:
            lines.append("None.")
            continue
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{o['name']}` | `{_cell(o['type'])}` | `{_cell(o['default'])}` | "
                  f"{_cell(o['doc'])} |" for o in r["options"]]
    return "\n".join(lines) + "\n"


def cmd_run(args: argparse.Namespace) -> int:
    entry = load_gallery(args.name).get(args.name)
    config = RunConfig(engine=args.engine, steps=args.steps, device=_device(args.device),
                       dtype=DTYPES[args.dtype], out=args.out, seed=args.seed,
                       progress=_progress(), checkpoint=args.checkpoint,
                       max_memory=args.max_memory)
    report = _run_entry(entry, config)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK
    print(report.table)
    for path in report.files:
        print(f"wrote {path}")
    print(f"({report.entry}, engine {report.engine}, {report.seconds:.1f}s)")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from genppl.graph.render import GraphvizNotFound

    entry = load_gallery(args.name).get(args.name)
    _make_dir(args.output.parent, f"-o {args.output}")
    try:
        model = entry.build()
    except ModelError as e:
        raise CommandFailed(f"{entry.name}: {e}") from None
    try:
        path = model.render(args.output)
    except GraphvizNotFound as e:
        raise CommandFailed(str(e)) from None
    except ValueError as e:  # unsupported extension: the message lists the valid ones
        raise UsageError(str(e)) from None
    except OSError as e:  # a directory at the path, a full disk
        raise _os_failure(f"-o {args.output}", e) from None
    print(f"wrote {path}")
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    from genppl.query import parse_evidence, query

    answer = query(args.network, parse_evidence(args.evidence), args.target, want_map=args.map,
                   budget_bytes=args.max_memory)
    if args.json:
        _print_json(answer)
        return EXIT_OK
    print(f"log p(evidence) = {answer['log_evidence']:.6f}")
    for var, probs in answer["marginals"].items():
        print(f"{var}: " + "  ".join(f"{s}={p:.6f}" for s, p in probs.items()))
    if "map" in answer:
        print("MAP: " + "  ".join(f"{v}={s}" for v, s in answer["map"].items()))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    entry = load_gallery(DEMO_ENTRY).get(DEMO_ENTRY)
    out: Path = args.out
    print(f"{entry.title}\n"
          f"Fitting the two components to Weldon's 1,000 crabs with genppl's em engine "
          f"(exact responsibilities, closed-form updates), next to Pearson's 1894 "
          f"method-of-moments solution.\n")
    config = RunConfig(engine="em", steps=args.steps, out=out, seed=args.seed,
                       progress=_progress())
    report = _run_entry(entry, config)
    print(report.table)
    print(f"\n({report.seconds:.1f}s)")
    for path in report.files:
        kind = ("model graph" if "graph" in Path(path).stem else
                "histogram with fitted density" if Path(path).suffix == ".png" else "file")
        print(f"{kind}: {path}")
        if Path(path).suffix == ".dot":
            print("  (Graphviz's `dot` was not found, so the graph is DOT source; install "
                  "Graphviz, e.g. `apt-get install graphviz` or `brew install graphviz`, then "
                  f"run `dot -Tsvg {path} -o {Path(path).with_suffix('.svg')}`)")
    print(f"\nNext: `genppl run {DEMO_ENTRY} --engine nuts` for the full posterior, "
          "`genppl gallery list` for the other models.")
    return EXIT_OK


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from genppl.evaluate.leaderboard import leaderboard, table, write
    from genppl.evaluate.scale import NotOnTheBoard

    if args.out is not None:
        _make_dir(args.out, f"--out {args.out}")
    try:
        board = leaderboard(args.scale, quick=args.quick, out=args.out, only=args.only)
    except NotOnTheBoard as e:  # a planned or unknown scale, an unknown row
        raise UsageError(str(e)) from None
    try:
        files = write(board, args.out) if args.out is not None else []
    except OSError as e:
        raise _os_failure(f"--out {args.out}", e) from None
    if args.json:
        _print_json(board.to_dict())
        return EXIT_OK
    print(table(board))
    for path in files:
        print(f"wrote {path}")
    return EXIT_OK


def cmd_features(args: argparse.Namespace) -> int:
    from genppl.evaluate import digits_features

    settings = digits_features.DEFAULT_SETTINGS
    record = digits_features.trained_record(settings)
    path = digits_features.cache_path(settings)
    if args.json:
        _print_json({"path": str(path), "test_accuracy": record["test_accuracy"],
                     "train_seconds": record["train_seconds"]})
        return EXIT_OK
    print(f"{path}: the feature network that scores image samples; test accuracy "
          f"{record['test_accuracy']:.4f} on the 1,000 test digits, trained in "
          f"{record['train_seconds']:.1f} s")
    return EXIT_OK


def cmd_sample_quality(args: argparse.Namespace) -> int:
    from genppl.evaluate import sample_quality

    images, labels = sample_quality.read_samples(args.file)
    scores = sample_quality.score(images)
    answer = {"file": str(args.file), "samples": len(images),
              "conditional": labels is not None, **scores._asdict()}
    if args.json:
        _print_json(answer)
        return EXIT_OK
    print(f"{args.file}: {len(images)} samples against the 1,000 test digits, in the LeNet "
          f"features (`genppl features`)")
    print(f"Fréchet LeNet distance {scores.frechet_distance:.3f}  precision "
          f"{scores.precision:.3f}  recall {scores.recall:.3f}")
    if len(images) != 1000:
        print("(compare distances only at equal sample counts: the leaderboard's are of "
              "1,000 samples)")
    return EXIT_OK


# --------------------------------------------------------------------------- parser and main
class _Parser(argparse.ArgumentParser):
    """argparse's parser with its usage errors in one line, like every other error of the
    command line, pointing to ``--help`` for the usage it would otherwise print first."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from genppl import __version__

    parser = _Parser(
        prog="genppl", description="Generative models on one graphical-model DSL, run on Pyro.")
    parser.add_argument("--version", action="version", version=f"genppl {__version__}")
    parser.set_defaults(help_parser=parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gallery = sub.add_parser("gallery", help="the model gallery")
    gallery.set_defaults(help_parser=gallery)
    gallery_sub = gallery.add_subparsers(dest="gallery_command", metavar="ACTION")
    listing = gallery_sub.add_parser("list", help="list the gallery entries and their engines")
    listing.add_argument("--json", action="store_true", help="one JSON object on stdout")
    listing.set_defaults(func=cmd_gallery_list)

    engines = sub.add_parser("engines", help="list the registered inference engines")
    engines.add_argument("--json", action="store_true", help="one JSON object on stdout")
    engines.add_argument("--markdown", action="store_true",
                         help="the tables of docs/engines.md on stdout")
    engines.set_defaults(func=cmd_engines)

    run = sub.add_parser("run", help="run a gallery entry and print its report")
    run.add_argument("name", help="gallery entry (see `genppl gallery list`)")
    run.add_argument("--engine", help="engine (default: the entry's first)")
    run.add_argument("--steps", type=_positive_int,
                     help="work to do: SVI steps, MCMC draws (default: the entry's own)")
    run.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    run.add_argument("--dtype", choices=sorted(DTYPES), default="float64",
                     help="floating-point type (default: float64)")
    run.add_argument("--out", type=Path,
                     help="directory for pictures (default: no pictures are written)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object (the report's numbers) instead of the table")
    run.add_argument("--checkpoint", type=Path, metavar="DIR",
                     help="save progress in DIR as the run goes; the same command started "
                          "again resumes from it (default: no checkpoints)")
    run.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                     help="largest table an engine may allocate, e.g. 512MiB or 4GB; a run "
                          "that needs more is refused before it allocates (default: 2GiB)")
    run.set_defaults(func=cmd_run)

    render = sub.add_parser("render", help="draw a gallery entry's model graph")
    render.add_argument("name", help="gallery entry (see `genppl gallery list`)")
    render.add_argument("-o", "--output", type=Path, required=True,
                        help="output file; .svg, .png, .pdf (needs Graphviz) or .dot/.gv")
    render.set_defaults(func=cmd_render)

    q = sub.add_parser("query", help="exact posterior queries on a Bayesian network (.bif)")
    q.add_argument("network", type=Path, help="a .bif or .bif.gz file")
    # "extend": `--evidence A=a --evidence B=b` means `--evidence A=a B=b`, not just the last
    # flag's pairs (and likewise for --target).
    q.add_argument("--evidence", nargs="+", action="extend", default=[], metavar="VAR=STATE",
                   help="observed states, in the file's names (repeatable)")
    q.add_argument("--target", nargs="+", action="extend", metavar="VAR",
                   help="variables to report, repeatable (default: every non-evidence "
                        "variable)")
    q.add_argument("--map", action="store_true",
                   help="also the most probable joint state of the non-evidence variables")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                   help="largest table the elimination may allocate, e.g. 512MiB or 4GB "
                        "(default: 2GiB)")
    q.set_defaults(func=cmd_query)

    board = sub.add_parser("leaderboard", help="score the lineage on one likelihood scale")
    board.add_argument("scale", help="text or images")
    board.add_argument("--quick", action="store_true",
                       help="small settings that run in seconds (text: the first 100,000 "
                            "characters of the training and held-out text; images: each "
                            "entry's quick setting)")
    board.add_argument("--json", action="store_true", help="print one JSON object")
    board.add_argument("--out", type=Path, metavar="DIR",
                       help="cache the rows in DIR/cache and write leaderboard_SCALE.json and "
                            ".png into DIR (default: no cache, no files)")
    board.add_argument("--only", nargs="+", action="extend", metavar="ROW",
                       help="compute only these rows (ids as in the table)")
    board.set_defaults(func=cmd_leaderboard)

    features = sub.add_parser(
        "features", help="train (or find in the cache) the LeNet whose features score image "
                         "samples")
    features.add_argument("--json", action="store_true", help="print one JSON object")
    features.set_defaults(func=cmd_features)

    quality = sub.add_parser(
        "sample-quality", help="score a samples.npz: Fréchet LeNet distance, precision, recall")
    quality.add_argument("file", type=Path, help="a samples.npz (`genppl run NAME --out DIR`)")
    quality.add_argument("--json", action="store_true", help="print one JSON object")
    quality.set_defaults(func=cmd_sample_quality)

    demo = sub.add_parser("demo", help="fit Pearson's crabs and draw the results")
    demo.add_argument("--out", type=Path, default=DEMO_OUT,
                      help=f"directory for the pictures (default: {DEMO_OUT}/)")
    demo.add_argument("--steps", type=_positive_int,
                      help="EM iterations at most (default: the entry's)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (0 ok, 1 failed, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else
                                                        EXIT_USAGE)
    func = getattr(args, "func", None)
    if func is None:  # `genppl` or `genppl gallery` alone: say what could follow
        args.help_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except UnknownEntry as e:
        print(f"genppl: error: {e} See `genppl gallery list`.", file=sys.stderr)
        return EXIT_USAGE
    except UnknownName as e:
        print(f"genppl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:
        print(f"genppl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (CommandFailed, ModelError) as e:
        print(f"genppl: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("genppl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `genppl gallery list | head`: the reader left, which is not an error; point stdout
        # at /dev/null so that the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    # Anything else is a bug in genppl or in an entry, not a user error: its traceback is
    # the useful report, so it propagates.

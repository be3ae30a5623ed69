"""Bayesian networks in the Bayesian Interchange Format (``.bif``, ``.bif.gz``).

A small tokenizer and recursive-descent parser (no ``eval``, no regex-driven guessing): every
syntax error names the file, line and column and what was expected, and anything declared
twice (a variable, a state, a table) is refused rather than silently overwritten. A file that
cannot be read as BIF text (missing, not UTF-8, broken gzip) is a ``ModelError`` naming it,
never another exception (tests/unit/test_fuzz_inputs.py holds the reader to that).
``read_bif`` returns a ``genppl.Model`` of CPT nodes with their state names; ``write_bif``
writes one back.

Rows are rescaled to sum to one exactly (published tables are rounded). Table conventions:
rows ``(s1, s2) p1, p2, ...;`` give the child's distribution for one
parent configuration; a ``table`` line lists every probability with the child's state
varying slowest (the layout bnlearn and pgmpy use), and ``default`` fills unlisted rows.
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genppl.budget import memory_budget, refuse_over
from genppl.dsl.model import Model
from genppl.dsl.tables import CPT
from genppl.errors import ModelError

# Whitespace matches no alternative, so the search skips it without a Python step. An
# unterminated ``/*`` comment runs to the end of the text (``\Z``) in one match, so that it can
# be reported, and so that many of them cost linear time rather than a rescan each.
_TOKEN = re.compile(r"//[^\n]*|/\*.*?(?:\*/|\Z)|[{}()\[\],;|]|[^\s{}()\[\],;|]+", re.S)
_PUNCTUATION = "{}()[],;|"


class BIFSyntaxError(ModelError):
    """A BIF file that does not parse; the message names file, line and column."""


@dataclass
class _Variable:
    name: str
    states: list[str]
    line: int


@dataclass
class _Probability:
    child: str
    parents: list[str]
    line: int
    rows: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    table: list[float] | None = None
    default: list[float] | None = None


def _clip(text: str) -> str:
    """A token as shown in a message: a mangled file can hold a megabyte-long 'word'."""
    return text if len(text) <= 40 else text[:37] + "..."


class _Parser:
    """Recursive descent over the token list. Tokens are kept as two flat lists, their texts
    and their offsets, and the parse passes indices into them around: a network such as
    pathfinder has 365,000 tokens, and an object per token costs more than the parse itself.
    Lines and columns are worked out from an offset only when a message or a declaration
    needs one."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        pieces = [(m.group(), m.start()) for m in _TOKEN.finditer(text)]
        for piece, offset in pieces:
            if piece.startswith("/*") and (len(piece) < 4 or not piece.endswith("*/")):
                raise BIFSyntaxError(f"{self.where(offset)}: comment '/*' is never closed by "
                                     "'*/'.")
        kept = [(p, o) for p, o in pieces if not p.startswith(("//", "/*"))]
        self.texts = [p for p, _ in kept]
        self.offsets = [o for _, o in kept]
        self.i = 0

    def where(self, offset: int) -> str:
        """``file:line:column`` of a character."""
        line = bisect.bisect_left(self.newlines, offset)
        col = offset - (self.newlines[line - 1] + 1 if line else 0) + 1
        return f"{self.source}:{line + 1}:{col}"

    def at(self, token: int) -> str:
        return self.where(self.offsets[token])

    def line(self, token: int) -> int:
        return bisect.bisect_left(self.newlines, self.offsets[token]) + 1

    def error(self, expected: str, token: int | None = None) -> BIFSyntaxError:
        token = self.i if token is None else token
        if token >= len(self.texts):
            return BIFSyntaxError(f"{self.source}: unexpected end of file; expected {expected}.")
        return BIFSyntaxError(f"{self.at(token)}: expected {expected}, "
                              f"found {_clip(self.texts[token])!r}.")

    def peek(self) -> str | None:
        return self.texts[self.i] if self.i < len(self.texts) else None

    def take(self, expected: str | None = None, what: str | None = None) -> int:
        text = self.peek()
        if text is None or (expected is not None and text != expected):
            raise self.error(what or repr(expected))
        self.i += 1
        return self.i - 1

    def word(self, what: str) -> int:
        text = self.peek()
        if text is None or text in _PUNCTUATION:
            raise self.error(what)
        self.i += 1
        return self.i - 1

    def words(self, what: str) -> list[int]:
        """``word (, word)*``: state names, parents, a row's parent states."""
        tokens = [self.word(what)]
        while self.peek() == ",":
            self.i += 1
            tokens.append(self.word(what))
        return tokens

    def repeated(self, tokens: Sequence[int]) -> int | None:
        """The first of ``tokens`` whose text an earlier one already had."""
        seen: set[str] = set()
        for token in tokens:
            if self.texts[token] in seen:
                return token
            seen.add(self.texts[token])
        return None

    def number(self) -> float:
        token = self.word("a probability")
        text = self.texts[token]
        try:
            value = float(text)
        except ValueError:
            raise self.error("a probability", token) from None
        if not math.isfinite(value) or value < 0:
            raise BIFSyntaxError(f"{self.at(token)}: probability {_clip(text)} is not a finite "
                                 "non-negative number.")
        return value

    def numbers(self) -> list[float]:
        values = [self.number()]
        while self.peek() == ",":
            self.i += 1
            values.append(self.number())
        self.take(";")
        return values

    def skip_property(self) -> None:
        while self.texts[self.take()] != ";":
            pass

    def parse(self) -> tuple[str, dict[str, _Variable], dict[str, _Probability]]:
        """Every declaration once: a second variable, or a second table for one, would
        otherwise silently replace the first."""
        name: str | None = None
        variables: dict[str, _Variable] = {}
        probabilities: dict[str, _Probability] = {}
        while (text := self.peek()) is not None:
            if text == "network":
                start = self.take()
                if name is not None:
                    raise BIFSyntaxError(f"{self.at(start)}: a second 'network' block; a file "
                                         "holds one network.")
                name = self.texts[self.word("a network name")]
                self.block(self.skip_property)
            elif text == "variable":
                var = self.variable()
                if var.name in variables:
                    raise BIFSyntaxError(
                        f"{self.source}:{var.line}: variable {var.name!r} is declared twice "
                        f"(first at line {variables[var.name].line}); remove one.")
                variables[var.name] = var
            elif text == "probability":
                prob = self.probability()
                if prob.child in probabilities:
                    raise BIFSyntaxError(
                        f"{self.source}:{prob.line}: a second probability block for "
                        f"{prob.child!r} (the first is at line "
                        f"{probabilities[prob.child].line}); give each variable one.")
                probabilities[prob.child] = prob
            else:
                raise self.error("'network', 'variable' or 'probability'")
        return name or "network", variables, probabilities

    def block(self, item: Callable[[], None]) -> None:
        self.take("{")
        while (text := self.peek()) is not None and text != "}":
            if text == "property":
                self.skip_property()
            else:
                item()
        self.take("}")

    def variable(self) -> _Variable:
        start = self.take("variable")
        name = self.texts[self.word("a variable name")]
        states: list[str] = []

        def item() -> None:
            type_token = self.take("type", "'type' or 'property'")
            if states:
                raise BIFSyntaxError(f"{self.at(type_token)}: variable {name!r} has a second "
                                     "'type'; give it one.")
            self.take("discrete", "'discrete' (only discrete variables are supported)")
            self.take("[")
            count_token = self.word("the number of states")
            self.take("]")
            self.take("{")
            tokens = self.words("a state name")
            self.take("}")
            self.take(";")
            # Compared as text: int() of a Unicode digit such as '²', or of thousands of
            # digits, raises rather than returning a count.
            count = self.texts[count_token]
            if not (count.isascii() and count.isdigit() and count.lstrip("0") == str(len(tokens))):
                raise BIFSyntaxError(f"{self.at(count_token)}: variable {name!r} declares "
                                     f"[{_clip(count)}] states but lists {len(tokens)}.")
            if (again := self.repeated(tokens)) is not None:
                raise BIFSyntaxError(f"{self.at(again)}: variable {name!r} lists state "
                                     f"{self.texts[again]!r} twice; state names must differ.")
            states.extend(self.texts[t] for t in tokens)

        self.block(item)
        if not states:
            raise BIFSyntaxError(f"{self.source}:{self.line(start)}: variable {name!r} has no "
                                 "type.")
        return _Variable(name, states, self.line(start))

    def probability(self) -> _Probability:
        start = self.take("probability")
        self.take("(")
        child = self.texts[self.word("the child variable")]
        parents: list[int] = []
        if self.peek() == "|":
            self.i += 1
            parents = self.words("a parent variable")
        self.take(")", "')'")
        if (again := self.repeated(parents)) is not None:
            raise BIFSyntaxError(f"{self.at(again)}: probability ( {child} ... ) lists parent "
                                 f"{self.texts[again]!r} twice.")
        prob = _Probability(child, [self.texts[t] for t in parents], self.line(start))

        def item() -> None:
            token = self.take()
            keyword = self.texts[token]
            where = f"{self.at(token)}: probability ( {child} ... )"
            if keyword in ("table", "default"):
                if getattr(prob, keyword) is not None:
                    raise BIFSyntaxError(f"{where} has a second {keyword!r} line.")
                setattr(prob, keyword, self.numbers())
            elif keyword == "(":
                config = tuple(self.texts[t] for t in self.words("a parent state"))
                self.take(")", "')'")
                if config in prob.rows:
                    raise BIFSyntaxError(f"{where} gives the row {config} twice.")
                prob.rows[config] = self.numbers()
            else:
                raise self.error("'table', 'default', a '(parent states)' row or 'property'",
                                 token)
            if prob.table is not None and (prob.rows or prob.default is not None):
                raise BIFSyntaxError(f"{where} mixes a 'table' line with rows or a 'default'; "
                                     "use one or the other.")

        self.block(item)
        return prob


def read_bif(path: str | Path) -> Model:
    """Parse a ``.bif`` or ``.bif.gz`` file into a model of CPT nodes (none observed)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read BIF file {path}: {e.strerror or e}.") from e
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise ModelError(f"cannot read BIF file {path}: the gzip data is cut short "
                             "(an incomplete download or copy?).") from None
        except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise ModelError(f"cannot read BIF file {path}: not valid gzip data ({e}).") from None
    try:
        text = raw.decode("utf-8-sig")  # "-sig": a byte-order mark is not part of the first word
    except UnicodeDecodeError as e:
        raise ModelError(f"cannot read BIF file {path}: not UTF-8 text (byte "
                         f"{raw[e.start]:#04x} at offset {e.start}).") from None
    name, variables, probabilities = _Parser(text, str(path)).parse()
    return _build(name, variables, probabilities, str(path))


def _build(name: str, variables: dict[str, _Variable], probabilities: dict[str, _Probability],
           source: str) -> Model:
    if not variables:  # an empty or cut-off download, or some other file under this name
        raise BIFSyntaxError(f"{source}: declares no variables; a BIF network needs at least "
                             "one 'variable' block.")
    tables: dict[str, tuple[list[str], torch.Tensor]] = {}
    lines = {v.name: v.line for v in variables.values()}
    for prob in probabilities.values():
        for v in (prob.child, *prob.parents):
            if v not in variables:
                raise BIFSyntaxError(f"{source}:{prob.line}: probability block names undeclared "
                                     f"variable {v!r}.")
        tables[prob.child] = (prob.parents, _table(prob, variables, source))
        lines[prob.child] = prob.line
    return network_model(name, {v.name: v.states for v in variables.values()}, tables,
                         where=lambda v: f"{source}:{lines[v]}", error=BIFSyntaxError)


def network_model(name: str, states: Mapping[str, Sequence[str]],
                  tables: Mapping[str, tuple[Sequence[str], torch.Tensor]], *,
                  where: Callable[[str], str], error: type[ModelError] = ModelError) -> Model:
    """A model of CPT nodes from ``{variable: state names}`` and ``{variable: (parents,
    table[parent states..., own state])}``: the one builder behind ``read_bif`` and
    ``genppl.pgmpy_io.from_pgmpy``, so both check, rescale and order a network alike.

    ``where(variable)`` says where a variable's table came from (file and line, or the pgmpy
    CPD), and ``error`` is the error raised, so each reader's messages point into its source.
    """
    missing = [v for v in states if v not in tables]
    if missing:
        raise error(f"{where(missing[0])}: variable {missing[0]!r} has no probability table; "
                    "every variable of a network needs one.")
    model = Model(name if name.isidentifier() else "network")
    for v in _parents_first(tables, where, error):
        parents, table = tables[v]
        if not v.isidentifier():
            raise error(f"{where(v)}: variable name {v!r} is not a Python identifier, which "
                        "genppl node names must be.")
        model.cpt(v, parents, _normalised(v, table, where(v), error), states=states[v])
    return model


def _table(prob: _Probability, variables: dict[str, _Variable], source: str) -> torch.Tensor:
    child = variables[prob.child]
    parent_states = [variables[p].states for p in prob.parents]
    shape = (*(len(s) for s in parent_states), len(child.states))
    where = f"{source}:{prob.line}: probability ( {prob.child} ... )"
    if prob.table is not None:
        if len(prob.table) != math.prod(shape):
            raise BIFSyntaxError(f"{where}: 'table' has {len(prob.table)} numbers, expected "
                                 f"{math.prod(shape)}.")
        values = torch.tensor(prob.table, dtype=torch.float64)
        return values.reshape(shape[-1], *shape[:-1]).movedim(0, -1)
    # A 'default' line fills every parent configuration: a few bytes of file can ask for a
    # table of any size, so its size is checked against the memory budget before it is built.
    refuse_over(math.prod(shape) * 8, memory_budget(), f"{where}'s table of "
                f"{math.prod(shape):,} probabilities", "Declare fewer parents")
    configs = list(itertools.product(*parent_states))  # in the table's (row-major) order
    rows = []
    for config in configs:
        row = prob.rows.get(config, prob.default)
        if row is None:
            raise BIFSyntaxError(f"{where}: no row for parent states {config} and no default.")
        if len(row) != len(child.states):
            raise BIFSyntaxError(f"{where}: row {config} has {len(row)} numbers for "
                                 f"{len(child.states)} states.")
        rows.append(row)
    known = set(configs)
    unknown = [c for c in prob.rows if c not in known]
    if unknown:
        raise BIFSyntaxError(f"{where}: row {unknown[0]} names states the parents do not have.")
    return torch.tensor(rows, dtype=torch.float64).reshape(shape)


def _normalised(var: str, table: torch.Tensor, where: str, error: type[ModelError]
                ) -> torch.Tensor:
    """Rows rescaled to sum to one: published tables are rounded (bnlearn's rows are off by
    up to 1e-7), which would otherwise leave every answer off by as much. A row further
    off than 1e-3 is a typo, not rounding, and is reported."""
    sums = table.sum(-1, keepdim=True)
    worst = float((sums - 1).abs().max())
    if worst > 1e-3:
        raise error(f"{where}: the table of {var!r} has a row summing to {1 + worst:.6g} or "
                    f"{1 - worst:.6g}; rows must sum to 1.")
    return table / sums


def _parents_first(tables: Mapping[str, tuple[Sequence[str], torch.Tensor]],
                   where: Callable[[str], str], error: type[ModelError]) -> list[str]:
    """The variables, each after its parents: a depth-first search on an explicit stack, so
    that a chain of thousands of variables listed child first cannot exhaust Python's
    recursion limit."""
    order: list[str] = []
    done: set[str] = set()
    for root in tables:
        if root in done:
            continue
        stack = [(root, iter(tables[root][0]))]
        path = [root]  # the variables on the stack, to name a cycle
        while stack:
            v, parents = stack[-1]
            p = next(parents, None)
            if p is None:
                stack.pop()
                path.pop()
                done.add(v)
                order.append(v)
            elif p in path:
                raise error(f"{where(p)}: the network has a cycle: "
                            + " -> ".join((*path[path.index(p):], p)) + ".")
            elif p not in done:
                stack.append((p, iter(tables[p][0])))
                path.append(p)
    return order


def write_bif(model: Model, path: str | Path) -> Path:
    """Write a model made of CPT nodes as BIF (``.gz`` compresses)."""
    path = Path(path)
    lines = [f"network {model.name} {{", "}"]
    cpts = []
    for node in model.nodes.values():
        if not isinstance(node.fn, CPT):
            raise ModelError(f"write_bif: node {node.name!r} ({node.declared_at}) is not a CPT; "
                             "only networks of model.cpt nodes can be written as BIF.")
        cpts.append(node)
    for node in cpts:
        states = node.states or tuple(str(k) for k in range(node.cardinality or 0))
        lines += [f"variable {node.name} {{",
                  f"  type discrete [ {len(states)} ] {{ {', '.join(states)} }};", "}"]
    for node in cpts:
        parents = [p.node for p in node.parents]
        table = node.fn.table  # type: ignore[union-attr]
        head = node.name + (f" | {', '.join(parents)}" if parents else "")  # type: ignore[arg-type]
        lines.append(f"probability ( {head} ) {{")
        if not parents:
            lines.append("  table " + ", ".join(repr(float(v)) for v in table) + ";")
        for index in itertools.product(*(range(n) for n in table.shape[:-1])) if parents else ():
            names = [model[p].states[i] if model[p].states else str(i)  # type: ignore[index]
                     for p, i in zip(parents, index, strict=True)]  # type: ignore[arg-type]
            row = ", ".join(repr(float(v)) for v in table[index])
            lines.append(f"  ({', '.join(names)}) {row};")
        lines.append("}")
    text = "\n".join(lines) + "\n"
    data = gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode()
    path.write_bytes(data)
    return path

"""Bayesian networks in the Bayesian Interchange Format (``.bif``, ``.bif.gz``).

A small tokenizer and recursive-descent parser (no ``eval``, no regex-driven guessing): every
syntax error names the file, line and column and what was expected. ``read_bif`` returns a
``genppl.Model`` of CPT nodes with their state names; ``write_bif`` writes one back.

Rows are rescaled to sum to one exactly (published tables are rounded). Table conventions:
rows ``(s1, s2) p1, p2, ...;`` give the child's distribution for one
parent configuration; a ``table`` line lists every probability with the child's state
varying slowest (the layout bnlearn and pgmpy use), and ``default`` fills unlisted rows.
"""

from __future__ import annotations

import gzip
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genppl.dsl.model import Model
from genppl.dsl.tables import CPT
from genppl.errors import ModelError

_TOKEN = re.compile(r"\s+|//[^\n]*|/\*.*?\*/|[{}()\[\],;|]|[^\s{}()\[\],;|]+", re.S)


class BIFSyntaxError(ModelError):
    """A BIF file that does not parse; the message names file, line and column."""


@dataclass
class _Token:
    text: str
    line: int
    col: int


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


def _tokens(text: str) -> Iterator[_Token]:
    line, start = 1, 0
    for m in _TOKEN.finditer(text):
        piece = m.group()
        if not (piece.isspace() or piece.startswith(("//", "/*"))):
            yield _Token(piece, line, m.start() - start + 1)
        newlines = piece.count("\n")
        if newlines:
            line += newlines
            start = m.start() + piece.rindex("\n") + 1


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.tokens = list(_tokens(text))
        self.i = 0
        self.source = source

    def error(self, expected: str, token: _Token | None = None) -> BIFSyntaxError:
        token = token or self.peek()
        if token is None:
            return BIFSyntaxError(f"{self.source}: unexpected end of file; expected {expected}.")
        return BIFSyntaxError(f"{self.source}:{token.line}:{token.col}: expected {expected}, "
                              f"found {token.text!r}.")

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None, what: str | None = None) -> _Token:
        token = self.peek()
        if token is None or (expected is not None and token.text != expected):
            raise self.error(what or repr(expected))
        self.i += 1
        return token

    def word(self, what: str) -> _Token:
        token = self.peek()
        if token is None or token.text in "{}()[],;|":
            raise self.error(what)
        self.i += 1
        return token

    def number(self) -> float:
        token = self.word("a probability")
        try:
            value = float(token.text)
        except ValueError:
            raise self.error("a probability", token) from None
        if not math.isfinite(value) or value < 0:
            raise BIFSyntaxError(f"{self.source}:{token.line}:{token.col}: probability "
                                 f"{token.text} is not a finite non-negative number.")
        return value

    def numbers(self) -> list[float]:
        values = [self.number()]
        while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
            self.take(",")
            values.append(self.number())
        self.take(";")
        return values

    def skip_property(self) -> None:
        while self.take().text != ";":
            pass

    def parse(self) -> tuple[str, list[_Variable], list[_Probability]]:
        name, variables, probabilities = "network", [], []
        while (token := self.peek()) is not None:
            if token.text == "network":
                self.take()
                name = self.word("a network name").text
                self.block(lambda: self.skip_property())
            elif token.text == "variable":
                variables.append(self.variable())
            elif token.text == "probability":
                probabilities.append(self.probability())
            else:
                raise self.error("'network', 'variable' or 'probability'")
        return name, variables, probabilities

    def block(self, item: object) -> None:
        self.take("{")
        while (token := self.peek()) is not None and token.text != "}":
            if token.text == "property":
                self.skip_property()
            else:
                item()  # type: ignore[operator]
        self.take("}")

    def variable(self) -> _Variable:
        start = self.take("variable")
        name = self.word("a variable name").text
        states: list[str] = []

        def item() -> None:
            self.take("type", "'type' or 'property'")
            self.take("discrete", "'discrete' (only discrete variables are supported)")
            self.take("[")
            count_token = self.word("the number of states")
            self.take("]")
            self.take("{")
            states.append(self.word("a state name").text)
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.take(",")
                states.append(self.word("a state name").text)
            self.take("}")
            self.take(";")
            if not count_token.text.isdigit() or int(count_token.text) != len(states):
                raise BIFSyntaxError(f"{self.source}:{count_token.line}:{count_token.col}: "
                                     f"variable {name!r} declares [{count_token.text}] states "
                                     f"but lists {len(states)}.")

        self.block(item)
        if not states:
            raise BIFSyntaxError(f"{self.source}:{start.line}: variable {name!r} has no type.")
        return _Variable(name, states, start.line)

    def probability(self) -> _Probability:
        start = self.take("probability")
        self.take("(")
        child = self.word("the child variable").text
        parents: list[str] = []
        if self.peek() is not None and self.peek().text == "|":  # type: ignore[union-attr]
            self.take("|")
            parents.append(self.word("a parent variable").text)
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.take(",")
                parents.append(self.word("a parent variable").text)
        self.take(")", "')'")
        prob = _Probability(child, parents, start.line)

        def item() -> None:
            token = self.peek()
            assert token is not None
            if token.text == "table":
                self.take()
                prob.table = self.numbers()
            elif token.text == "default":
                self.take()
                prob.default = self.numbers()
            elif token.text == "(":
                self.take("(")
                config = [self.word("a parent state").text]
                while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                    self.take(",")
                    config.append(self.word("a parent state").text)
                self.take(")", "')'")
                prob.rows[tuple(config)] = self.numbers()
            else:
                raise self.error("'table', 'default', a '(parent states)' row or 'property'")

        self.block(item)
        return prob


def read_bif(path: str | Path) -> Model:
    """Parse a ``.bif`` or ``.bif.gz`` file into a model of CPT nodes (none observed)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read BIF file {path}: {e.strerror}.") from e
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    name, variables, probabilities = _Parser(raw.decode("utf-8"), str(path)).parse()
    return _build(name, variables, probabilities, str(path))


def _build(name: str, variables: list[_Variable], probabilities: list[_Probability],
           source: str) -> Model:
    by_name = {v.name: v for v in variables}
    tables: dict[str, tuple[list[str], torch.Tensor]] = {}
    lines = {v.name: v.line for v in variables}
    for prob in probabilities:
        for v in (prob.child, *prob.parents):
            if v not in by_name:
                raise BIFSyntaxError(f"{source}:{prob.line}: probability block names undeclared "
                                     f"variable {v!r}.")
        tables[prob.child] = (prob.parents, _table(prob, by_name, source))
        lines[prob.child] = prob.line
    return network_model(name, {v.name: v.states for v in variables}, tables,
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
    table = torch.full(shape, math.nan, dtype=torch.float64)
    for config in itertools.product(*parent_states):
        row = prob.rows.get(config, prob.default)
        if row is None:
            raise BIFSyntaxError(f"{where}: no row for parent states {config} and no default.")
        if len(row) != len(child.states):
            raise BIFSyntaxError(f"{where}: row {config} has {len(row)} numbers for "
                                 f"{len(child.states)} states.")
        index = tuple(s.index(c) for s, c in zip(parent_states, config, strict=True))
        table[index] = torch.tensor(row, dtype=torch.float64)
    unknown = [c for c in prob.rows if c not in set(itertools.product(*parent_states))]
    if unknown:
        raise BIFSyntaxError(f"{where}: row {unknown[0]} names states the parents do not have.")
    return table


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
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(v: str, path: tuple[str, ...]) -> None:
        if state.get(v) == 2:
            return
        if state.get(v) == 1:
            raise error(f"{where(v)}: the network has a cycle: "
                        + " -> ".join((*path, v)) + ".")
        state[v] = 1
        for p in tables[v][0]:
            visit(p, (*path, v))
        state[v] = 2
        order.append(v)

    for v in tables:
        visit(v, ())
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

"""Declarations: what a model is made of, as plain immutable records.

A node records its kind, the callable that produces its value or distribution, its named
parents, and where it sits (plates, chain). Nothing here runs Pyro; the compiler in
``genppl.pyro`` reads these records, and ``model.graph`` is built from them.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from genppl.errors import ModelError

NodeKind = Literal["latent", "observed", "deterministic", "param", "module", "input", "factor"]

#: Suffix of a factory argument that reads a chain node at the previous step.
PREV_SUFFIX = "_prev"


@dataclass(frozen=True)
class Parent:
    """A dependence: the child reads ``name`` at the same step (lag 0) or the previous (lag 1).

    ``name`` is the factory argument name; ``node`` is the node it resolves to (they differ for
    ``z_prev`` -> ``z`` and for the chain index, whose ``node`` is ``None``).
    """

    arg: str
    node: str | None
    lag: int = 0


@dataclass(frozen=True)
class PlateSpec:
    """A conditionally independent batch dimension (``pyro.plate``).

    A *ragged* plate (``sizes`` set) sits inside its ``parent`` plate with a size of its own
    for each of the parent's entries, read from the input node ``sizes`` (documents of
    different lengths, each with its words). ``symbol`` is the letter its size is drawn
    with while unknown (``"N"``); ``None`` derives one from the name.
    """

    name: str
    size: int | None
    subsample_size: int | None
    dim: int | None
    parent: str | None
    declared_at: str
    sizes: str | None = None
    symbol: str | None = None

    @property
    def ragged(self) -> bool:
        return self.sizes is not None


@dataclass(frozen=True)
class ChainSpec:
    """A time index along which nodes repeat, each step reading the previous one."""

    name: str
    length: int | None
    reverse: bool
    plates: tuple[str, ...]
    declared_at: str


@dataclass(frozen=True)
class Node:
    """One declared node of a model or guide.

    ``fn`` maps parent values (by argument name) to a distribution (random variables), a value
    (deterministic), or a log-potential (factor). ``init_fn`` is the first-step factory of a
    chain node that reads the previous step. ``value`` holds a param's initial value or a
    module object.
    """

    name: str
    kind: NodeKind
    declared_at: str
    fn: Callable[..., Any] | None = None
    parents: tuple[Parent, ...] = ()
    init_fn: Callable[..., Any] | None = None
    init_parents: tuple[Parent, ...] = ()
    plates: tuple[str, ...] = ()
    chain: str | None = None
    value: Any = None
    constraint: Any = None
    event_dim: int = 0
    states: tuple[str, ...] | None = None
    cardinality: int | None = None
    enumerate: bool = True
    infer: dict[str, Any] = field(default_factory=dict)
    #: In a ragged plate, the enclosing plate whose axis the ragged plate's one flat axis
    #: replaces in the node's data and program (see ``layout_plates``); ``None`` elsewhere.
    flattened: str | None = None

    @property
    def is_random(self) -> bool:
        return self.kind in ("latent", "observed")

    @property
    def layout_plates(self) -> tuple[str, ...]:
        """The plates with an axis in the node's data and values: its plates, except that a
        ragged plate and its enclosing plate share one axis, the concatenation of the
        enclosing plate's entries (all words of all documents, document by document)."""
        return tuple(p for p in self.plates if p != self.flattened)

    @property
    def parent_nodes(self) -> tuple[str, ...]:
        """Every node read, at any lag and by either factory, without repeats."""
        seen: dict[str, None] = {}
        for p in (*self.parents, *self.init_parents):
            if p.node is not None:
                seen.setdefault(p.node)
        return tuple(seen)


def caller_location() -> str:
    """``file:line`` of the user code that declared something, for error messages.

    Walks out of genppl's declaration code (and ``contextlib``, for ``with model.plate``) to
    the first frame that belongs to the user.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None and frame.f_globals.get("__name__", "").startswith(
                ("genppl.dsl", "contextlib")):
            frame = frame.f_back
        if frame is None:
            return "<unknown>"
        return f"{frame.f_code.co_filename}:{frame.f_lineno}"
    finally:
        del frame


def check_identifier(name: str, what: str, where: str) -> None:
    """Node names double as factory argument names, so they must be Python identifiers."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ModelError(
            f"{what} name {name!r} ({where}) is not a valid Python identifier; node names are "
            "used as factory argument names, so use letters, digits and underscores."
        )


def argument_names(fn: Callable[..., Any], node: str, where: str) -> tuple[str, ...]:
    """The parents of a factory are its argument names; reject forms that hide them."""
    if not callable(fn):
        raise ModelError(f"node {node!r} ({where}): expected a callable, got {type(fn).__name__}.")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise ModelError(
            f"node {node!r} ({where}): cannot read the factory's signature ({e}); pass a "
            "lambda or def whose argument names are the parents."
        ) from e
    names = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ModelError(
                f"node {node!r} ({where}): the factory takes *{p.name}/**{p.name}; parents must "
                "be named explicitly, one argument per parent."
            )
        names.append(p.name)
    return tuple(names)

"""Engine options as typed frozen dataclasses: one declaration gives each option its type,
default, documentation and (for the few a caller sets for every engine alike) its role, and
``build_options`` turns a caller's keywords into such an object or refuses them, naming the
option and the engine.

An engine's options class is the only place its options are written down: ``genppl.infer``
checks keywords against it, ``genppl engines`` and ``docs/engines.md`` list it, and the
gallery finds the option that counts draws by its role, so none of them can drift from what
the engine takes.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import numbers
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from genppl.errors import ModelError, suggest

T = TypeVar("T")


class Role(enum.Enum):
    """What an option means to code that drives every engine alike (the gallery, the CLI)."""

    DRAWS = "draws"  # how many draws (per chain) to keep
    STEPS = "steps"  # how many iterations of an optimiser or fixed-point loop
    SEED = "seed"  # the random seed of the run
    PROGRESS = "progress"  # whether to draw a progress bar


def option(default: Any, doc: str, *, role: Role | None = None) -> Any:
    """A field of an options dataclass: its default, a one-line ``doc`` (listed by
    ``genppl engines`` and ``docs/engines.md``) and its ``role``, if any."""
    return dataclasses.field(default=default, metadata={"doc": doc, "role": role})


def fields(options: type[Any]) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(options)


def with_role(options: type[Any], role: Role) -> str | None:
    """The name of the option of ``options`` that plays ``role``, if one does."""
    return next((f.name for f in fields(options) if f.metadata.get("role") is role), None)


def build_options(options: type[T], engine: str, given: Mapping[str, Any]) -> T:
    """``options(**given)``, once every name is an option of ``options`` and every value is
    of its declared type; otherwise a ``ModelError`` naming the engine, the option and (for
    an unknown name) the valid ones."""
    valid = [f.name for f in fields(options)]
    hints = _hints(options)
    for name, value in given.items():
        if name not in valid:
            raise ModelError(f"engine {engine!r} has no option {name!r}." + suggest(name, valid))
        if not conforms(value, hints[name]):
            raise ModelError(f"engine {engine!r}: option {name}= must be {describe(hints[name])}, "
                             f"got {value!r}.")
    return options(**given)


@functools.cache
def _hints(options: type[Any]) -> dict[str, Any]:
    """The options' types, resolved once per class (their annotations are strings)."""
    return get_type_hints(options)


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of type ``hint`` as far as options go: unions, literals, numbers
    (an int is a float, a bool is neither), and containers by their outer type only."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        kind = numbers.Integral if hint is int else numbers.Real
        return isinstance(value, kind) and not isinstance(value, bool)
    outer = origin or hint
    if outer in (dict, Mapping):
        return isinstance(value, Mapping)
    if outer in (list, tuple, Sequence):
        return isinstance(value, Sequence) and not isinstance(value, str)
    if outer is Callable:
        return callable(value)
    if outer is Path:
        return isinstance(value, Path)
    return isinstance(value, outer)


def describe(hint: Any) -> str:
    """A type as a reader of an error message would say it."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(hint))
    if hint is type(None):
        return "None"
    outer = origin or hint
    names = {bool: "a bool", int: "an int", float: "a number", str: "a str", dict: "a mapping",
             Mapping: "a mapping", Sequence: "a sequence", list: "a sequence",
             tuple: "a sequence", Callable: "a callable", Path: "a path"}
    return names.get(outer, getattr(outer, "__name__", str(outer)))

"""The seam through which a declaration reaches the compiler above it.

The DSL sits below the Pyro compiler (``genppl.pyro``): the compiler reads declarations, so
the declarations must not import the compiler. Yet ``m.pyro_model``, ``m.prior_program()``
and ``m.graph`` (whose distribution families come from one prior draw of the compiled
program) are public API on the declaration. This module is the explicit seam between the
two: the DSL names what it needs of a compiler (``Compiler``), and ``genppl.pyro`` installs
its implementation when it is imported. Importing any ``genppl`` module imports
``genppl/__init__``, which imports the compiler, so in practice one is always installed;
a missing one is a ``ModelError`` that says which package to import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from genppl.errors import ModelError

if TYPE_CHECKING:
    from genppl.dsl.declaration import Declaration

#: (family, support kind, cardinality) of a random node, e.g. ``("Categorical", "finite", 3)``.
Family = tuple[str, str, "int | None"]


class Compiler(Protocol):
    """What the DSL asks of the compiler."""

    def program(self, declaration: Declaration, *, generative: bool) -> Callable[..., Any]:
        """The Pyro callable of a model or guide; ``generative`` samples observed nodes
        whose data is absent."""

    def plate_dims(self, declaration: Declaration) -> Mapping[str, int]:
        """The batch dim of each plate in the compiled program."""

    def families(self, declaration: Declaration) -> Mapping[str, Family]:
        """The family, support and cardinality of each random node it can tell without
        data (the graph's node attributes)."""


_installed: list[Compiler] = []


def install(compiler: Compiler) -> None:
    """Make ``compiler`` the one the declarations use (``genppl.pyro`` calls this)."""
    _installed[:] = [compiler]


def compiler() -> Compiler:
    """The installed compiler."""
    if not _installed:
        raise ModelError("no compiler is installed for genppl's declarations; import "
                         "genppl (or genppl.pyro) before compiling or drawing a model.")
    return _installed[0]

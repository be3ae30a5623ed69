"""The compiler the declarations reach through ``genppl.dsl.compiler``'s seam."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from genppl.pyro.families import families
from genppl.pyro.layout import plate_dims
from genppl.pyro.program import PyroProgram

if TYPE_CHECKING:
    from genppl.dsl.compiler import Family
    from genppl.dsl.declaration import Declaration


class PyroCompiler:
    """Declarations to Pyro callables (``genppl.pyro.program``), plate dims and families."""

    def program(self, declaration: Declaration, *, generative: bool) -> Callable[..., Any]:
        return PyroProgram(declaration, declaration.name, generative=generative)

    def plate_dims(self, declaration: Declaration) -> Mapping[str, int]:
        return plate_dims(getattr(declaration, "model", declaration))

    def families(self, declaration: Declaration) -> Mapping[str, Family]:
        return families(declaration)

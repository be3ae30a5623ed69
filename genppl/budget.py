"""The memory budget: the largest table an engine may allocate, checked before it allocates.

Engines take ``budget_bytes=`` per call; left out, it is the budget in force here, 2 GiB
unless a caller set another with ``memory_limit`` (as ``genppl run --max-memory`` does for
every engine an entry runs). The budget lives in a context variable, so it is scoped to the
``with`` block (and to its thread or task), never a process-wide setting left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from genppl.errors import ModelError

DEFAULT_BUDGET_BYTES = 2 * 1024**3

_BUDGET: ContextVar[int] = ContextVar("genppl_memory_budget", default=DEFAULT_BUDGET_BYTES)


def memory_budget(budget_bytes: int | None = None) -> int:
    """``budget_bytes`` when given (checked), else the budget in force."""
    if budget_bytes is None:
        return _BUDGET.get()
    if not isinstance(budget_bytes, int) or isinstance(budget_bytes, bool) or budget_bytes < 1:
        raise ModelError(f"budget_bytes must be a positive int (bytes), got {budget_bytes!r}.")
    return budget_bytes


@contextmanager
def memory_limit(budget_bytes: int | None) -> Iterator[None]:
    """Engines called inside use ``budget_bytes`` as their default budget (``None``: leave
    the budget as it is)."""
    if budget_bytes is None:
        yield
        return
    token = _BUDGET.set(memory_budget(budget_bytes))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def refuse_over(need_bytes: int, budget_bytes: int, what: str, instead: str) -> None:
    """Refuse, before allocating, work whose largest allocation would exceed the budget."""
    if need_bytes > budget_bytes:
        raise ModelError(f"{what} needs {readable(need_bytes)}, over the memory budget of "
                         f"{readable(budget_bytes)}. {instead}, or raise the budget "
                         "(budget_bytes=, genppl.memory_limit, --max-memory).")


def readable(nbytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes in messages, at a scale a person reads."""
    if nbytes < 1024:
        return f"{int(nbytes)} B"
    for unit in ("KiB", "MiB", "GiB"):
        nbytes /= 1024
        if nbytes < 1024:
            return f"{nbytes:.3g} {unit}"
    return f"{nbytes / 1024:.3g} TiB"

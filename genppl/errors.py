"""The one exception type users see when a model, a guide or its data is wrong.

Every message names the node (and the file and line where it was declared) and says what
would fix the problem, so that a mistake never surfaces as a traceback from deep in torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ModelError(Exception):
    """A model, guide, engine option or data set that cannot work as given.

    Deliberately not a ``ValueError``: Pyro's tracer rewrites ``ValueError`` messages with
    shape tables, which would bury the one line that says what to fix.
    """


class UnknownName(ModelError):
    """A request that cannot be understood as given: it names something that does not exist
    (an entry, a variable, a state; the message lists the valid names), or is malformed or
    contradicts itself (``--evidence`` that is not VAR=STATE, or gives a variable twice).
    The command line answers it with exit code 2."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """Return a ' Did you mean ...?' hint plus the list of valid names, for error messages."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(valid) if valid else "(none)"
    return f"{hint} Valid names: {listing}."

"""What a declaration's factories return, read from one prior draw of the compiled program.

Distribution families and supports of factory nodes are read from one prior draw (with
placeholder sizes where no size is declared, params at their initial values, and nothing
left in Pyro's param store): drawing from the prior is not inference, and it is the only way
to know what a factory returns without asking the user to say it twice. ``model.graph``
records them as node attributes (through the seam ``genppl.dsl.compiler``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro import poutine

from genppl.errors import ModelError
from genppl.pyro.layout import resolve_sizes
from genppl.pyro.program import PyroProgram

if TYPE_CHECKING:
    from genppl.dsl.compiler import Family
    from genppl.dsl.declaration import Declaration

_PLACEHOLDER_SIZE = 2


def describe_distribution(fn: Any) -> Family:
    """(family, support kind, cardinality) of a distribution, looking through wrappers."""
    base = fn
    while True:
        inner = getattr(base, "base_dist", None)
        if inner is None or type(base).__name__ not in (
                "Independent", "ExpandedDistribution", "MaskedDistribution", "AtEntries"):
            break
        base = inner
    family = type(base).__name__
    if fn.has_enumerate_support:
        card = int(fn.enumerate_support(expand=False).shape[0])
        return family, "finite", card
    support = "discrete" if fn.support.is_discrete else "continuous"
    return family, support, None


def families(model: Declaration) -> dict[str, Family]:
    """Families of random nodes, from one prior draw. A draw that stops early (an input
    without data) still tells the families of the nodes it reached."""
    owner = getattr(model, "model", model)
    program = PyroProgram(model, model.name, generative=True, lenient=True)
    sizes, lengths = resolve_sizes(owner, {}, default=_PLACEHOLDER_SIZE)
    tracer = poutine.trace(program.execute)
    try:
        # (a draw of its own: looking at a model must not move the caller's random stream)
        with pyro.get_param_store().scope(), torch.no_grad(), poutine.block(), \
                torch.random.fork_rng(devices=[owner.device] if owner.device.type == "cuda"
                                      else []):
            tracer({}, sizes, lengths)
    except ModelError:
        pass  # e.g. a factory that needs real data: nodes not reached keep family None
    trace = tracer.msngr.trace
    out: dict[str, Family] = {}
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["infer"].get("_deterministic"):
            continue
        name = site["name"].split("[", 1)[0]
        if name in model.nodes and model.nodes[name].is_random and name not in out:
            out[name] = describe_distribution(site["fn"])
    return out

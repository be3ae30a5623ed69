"""A node's factory called on a grid of its parents' states, and what the tabulation reads off
the distribution it returns: exact log-probabilities (a mask kept apart), the support, its
kind, whether the table is a conditional distribution. Shared by the reference tabulator and
the replay of its record, so that both read a factory's result the same way."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.distributions.torch_distribution import MaskedDistribution

from genppl.distributions import exact_log_probs
from genppl.dsl.model import Model
from genppl.dsl.nodes import Node
from genppl.dsl.tables import CountingMeasure
from genppl.errors import ModelError
from genppl.exact.broadcasting import compact
from genppl.library_internals import categories, mask_of, with_batch_shape
from genppl.pyro.program import as_data


@dataclass(frozen=True)
class Fixed:
    """A factory argument read by name from the params, modules and point values."""

    name: str


@dataclass(frozen=True)
class Derived:
    """A factory argument that is a deterministic node, called on the reader's grid."""

    node: Node
    args: Args


#: A factory's arguments: ``(name, source)``, the source a tensor (a grid of latent states,
#: laid-out data, chain steps), a ``Fixed`` or a ``Derived``.
Args = tuple[tuple[str, Any], ...]


def evaluate(plan: Args, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """A factory's arguments from their sources at the current ``fixed`` values."""
    args: dict[str, Any] = {}
    for arg, source in plan:
        if type(source) is Fixed:
            args[arg] = fixed[source.name]
        elif type(source) is Derived:
            args[arg] = call_factory(source.node, source.node.fn, evaluate(source.args, fixed))
        else:
            args[arg] = source
    return args


def call_factory(node: Node, fn: Any, args: dict[str, Any]) -> Any:
    """``fn(**args)``, its failures explained as a tabulation's (factories must broadcast
    over the grid's leading axes)."""
    try:
        return fn(**args)
    except ModelError:
        raise
    except (ValueError, RuntimeError, TypeError, IndexError, KeyError) as e:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in args.items()
                           if isinstance(v, torch.Tensor))
        raise ModelError(f"node {node.name!r} ({node.declared_at}): its factory raised "
                         f"{type(e).__name__}: {e} while tabulating it over its parents' "
                         f"states (argument shapes {shapes}); factories must broadcast over "
                         "leading axes: index tables with pyro.ops.indexing.Vindex.") from e


def global_value(model: Model, node: Node, grad: bool) -> Any:
    """A param's value from Pyro's param store (initialised from its declaration), or a
    module registered with Pyro; detached unless ``grad``."""
    if node.kind == "module":
        return pyro.module(node.name, node.value)
    init = node.value() if callable(node.value) else node.value
    value = pyro.param(node.name, lambda: as_data(model, node.name, init).clone(),
                       constraint=node.constraint)
    if not grad:
        value = value.detach()
    return value.to(model.device, model.dtype) if value.is_floating_point() else value


def log_prob_and_mask(d: Any, value: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor | bool | None]:
    """``(log_prob, mask)``: for ``d.mask(m)``, the unmasked log-probabilities computed on
    the parameters' own shapes (Pyro's masked distribution first broadcasts its base to the
    mask's shape, which for a chain's transition is a K x K table per step and sequence) and
    the mask apart; otherwise ``d.log_prob(value)`` and no mask. Exact log-probabilities
    (``exact_log_probs``): a probability of 0 is -inf, not log eps; the distribution that
    engines inspect (EM's and CAVI's closed forms read its class and ``probs``) is the
    factory's own."""
    if isinstance(d, MaskedDistribution):
        return exact_log_probs(_unexpanded(d.base_dist)).log_prob(value), mask_of(d)
    return exact_log_probs(d).log_prob(value), None


def _unexpanded(d: Any) -> Any:
    """A shallow copy of a torch distribution with every broadcast (stride-0) axis of its
    tensors cut to size 1 -- the same values, without the copies ``expand`` stands for."""
    new = copy.copy(d)
    for key, value in vars(d).items():
        if isinstance(value, torch.Tensor):
            setattr(new, key, compact(value))
    shapes = [t.shape[: t.dim() - c.event_dim] for name, c in d.arg_constraints.items()
              if isinstance(t := vars(new).get(name), torch.Tensor)]
    if not shapes:
        return d
    return with_batch_shape(new, torch.broadcast_shapes(*shapes))


def sums_to_one(log_table: torch.Tensor) -> bool:
    """Whether a latent's table is a conditional distribution over its last axis, to
    rounding: its factory's log-probabilities over the whole support (an undirected
    variable's counting measure, for one, is not)."""
    t = log_table.detach()
    tol = 16 * t.shape[-1] * torch.finfo(t.dtype).eps
    return bool((torch.logsumexp(t, -1).abs() <= tol).all())


def support_of(node: Node, d: Any) -> torch.Tensor:
    """A latent's states: the finite scalar support of its distribution, the same across
    its plates and parents."""
    if not d.has_enumerate_support or d.event_shape:
        raise ModelError(f"latent {node.name!r} ({node.declared_at}) has no finite scalar "
                         f"support ({type(d).__name__}); engine 'exact' needs finite latents.")
    support = d.enumerate_support(expand=False)
    flat = support.reshape(support.shape[0], -1)
    if not bool((flat == flat[:, :1]).all()):
        raise ModelError(f"latent {node.name!r} ({node.declared_at}) has a support that varies "
                         "across its plates or parents; engine 'exact' needs one set of states.")
    return flat[:, 0]


def form(d: Any) -> tuple[type, type | None]:
    """A distribution's kind: its type, and its base's when masked."""
    return (type(d), type(d.base_dist) if isinstance(d, MaskedDistribution) else None)


_CATEGORICAL = (torch.distributions.Categorical, pyro.distributions.Categorical)
_BERNOULLI = (torch.distributions.Bernoulli, pyro.distributions.Bernoulli)


def shaped_states(d: Any) -> int | None:
    """The number of states of a distribution whose support is its states in order and
    follows from its shape (Categorical, Bernoulli, counting measure; masked or not), so
    that counting them checks it; None for others, whose support is compared whole."""
    base = d.base_dist if isinstance(d, MaskedDistribution) else d
    kind = type(base)
    if kind in _CATEGORICAL:
        return categories(base)
    if kind in _BERNOULLI:
        return 2
    if kind is CountingMeasure:
        return base.logits.shape[-1]
    return None

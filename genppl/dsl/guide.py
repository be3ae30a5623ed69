"""``genppl.Guide``: a variational family declared with the model's own DSL.

A guide is a model over the same latent sites, conditioned on the data: its factories may read
the model's observed nodes and inputs by name (a VAE encoder reads ``x``), its own params and
modules, and its own earlier latents. Each guide latent must be a latent of the model and
takes that node's plates and chain, so the two stay aligned by construction; a chain's step
order may be overridden (a diffusion model's forward process runs forward while its reverse
process runs backward).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from genppl.dsl.declaration import Declaration
from genppl.dsl.nodes import ChainSpec, Node, NodeKind, Parent, caller_location
from genppl.errors import ModelError, suggest

if TYPE_CHECKING:
    from genppl.dsl.model import Model


class Guide(Declaration):
    """A guide for ``model``; create it with ``model.guide()``."""

    def __init__(self, model: Model, name: str) -> None:
        super().__init__(name)
        self.model = model
        self.plates = model.plates  # shared: a guide's plates are the model's plates
        self.chains = dict(model.chains)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> Guide:
        """A guide lives where its model does: moving one moves both."""
        self.model.to(device, dtype)
        return self

    @contextmanager
    def plate(self, name: str, size: int | None = None, *, subsample_size: int | None = None,
              dim: int | None = None, sizes: str | None = None,
              symbol: str | None = None) -> Iterator[str]:
        """Guides take their plates from the model; this only checks the name."""
        if name not in self.plates:
            raise ModelError(f"guide {self.name!r}: plate {name!r} is not a plate of model "
                             f"{self.model.name!r}." + suggest(name, self.plates))
        yield name

    @contextmanager
    def chain(self, name: str, length: int | None = None, *,
              reverse: bool = False) -> Iterator[str]:
        """Enter the model's chain ``name`` in the guide, optionally with the other step order."""
        where = caller_location()
        spec = self.model.chains.get(name)
        if spec is None:
            raise ModelError(f"guide {self.name!r} ({where}): model {self.model.name!r} has no "
                             f"chain {name!r}." + suggest(name, self.model.chains))
        self.chains[name] = ChainSpec(name, spec.length, reverse, spec.plates, spec.declared_at)
        self._chain = name
        try:
            yield name
        finally:
            self._chain = None
        self._check_pending_prev(name)

    # Guides may not declare observations, undirected structure or inputs of their own.
    def observed(self, name: str, fn: Callable[..., Any], **_: Any) -> str:
        raise ModelError(f"guide {self.name!r}: guides do not observe data; read the model's "
                         f"observed node {name!r} as an argument of a latent's factory instead.")

    def factor(self, name: str, fn: Callable[..., Any]) -> str:
        raise ModelError(f"guide {self.name!r}: factors belong to the model, not the guide.")

    def latent(self, name: str, fn: Callable[..., Any], *,
               init: Callable[..., Any] | None = None, enumerate: bool = False,
               infer: dict[str, Any] | None = None,
               parents: Sequence[str] | None = None) -> str:
        """Declare q(name | parents); ``name`` must be a latent of the model."""
        target = self.model.nodes.get(name)
        if target is None or target.kind != "latent":
            where = caller_location()
            raise ModelError(f"guide {self.name!r} ({where}) declares {name!r}, which is not a "
                             f"latent of model {self.model.name!r}."
                             + suggest(name, self.model.latent_names))
        saved = self._plate_stack, self._chain
        self._plate_stack = list(target.plates)
        if self._chain is None:
            self._chain = target.chain
        try:
            return self._declare_random(name, "latent", fn, init, enumerate, infer, parents)
        finally:
            self._plate_stack, self._chain = saved

    @property
    def pyro_guide(self) -> Callable[..., Any]:
        """A plain Pyro guide callable taking the same keyword arguments as the model."""
        return self.pyro_model

    @property
    def uncovered(self) -> list[str]:
        """Model latents this guide does not propose, in model order."""
        return [n for n in self.model.latent_names if n not in self.nodes]

    def _resolve_external(self, arg: str) -> Parent | None:
        data = self.model.nodes.get(arg)
        if data is None or data.kind not in ("observed", "input"):
            return None
        kind: NodeKind = "input"
        self.nodes[arg] = Node(arg, kind, data.declared_at, event_dim=data.event_dim,
                               plates=data.plates, chain=data.chain, flattened=data.flattened)
        return Parent(arg, arg)

    def _add(self, node: Node) -> None:
        clash = self.model.nodes.get(node.name)
        if clash is not None and node.kind in ("param", "module"):
            raise ModelError(f"guide {self.name!r}: {node.kind} {node.name!r} "
                             f"({node.declared_at}) has the name of the model's {clash.kind} "
                             f"declared at {clash.declared_at}; Pyro's param store would mix "
                             "them up. Rename it (e.g. 'q_" + node.name + "').")
        super()._add(node)

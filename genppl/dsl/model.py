"""``genppl.Model``: declare a generative program once, as a graph of named nodes.

A model is written the way the math reads::

    m = Model("mixture")
    m.param("weights", torch.ones(2) / 2, constraint=constraints.simplex)
    m.param("locs", torch.tensor([0.0, 1.0]))
    with m.plate("data", size=1000):
        m.latent("z", lambda weights: dist.Categorical(weights))
        m.observed("x", lambda z, locs: dist.Normal(locs[z], 1.0))

Each factory's argument names *are* its parents, so the graph is exact and static. The same
declaration compiles to a Pyro callable (``m.pyro_model``), renders in plate notation
(``m.render``), and is read by every engine in ``genppl.engines``. The declaring machinery is
``dsl.declaration``'s, shared with guides; a model adds its guides and where it lives.
"""

from __future__ import annotations

import torch

from genppl.dsl.declaration import Declaration
from genppl.dsl.guide import Guide
from genppl.errors import ModelError


class Model(Declaration):
    """A generative model declared as named nodes inside plates and chains."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._guides: list[Guide] = []

    def guide(self, name: str | None = None) -> Guide:
        """Start a guide for this model, declared with the same DSL (see ``genppl.Guide``)."""
        guide = Guide(self, name or f"{self.name}_guide")
        self._guides.append(guide)
        return guide

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> Model:
        """Move the model and its guides: params, modules and every tensor they make follow
        ``device``/``dtype``."""
        if device is not None:
            self._device = torch.device(device)
        if dtype is not None:
            if not dtype.is_floating_point:
                raise ModelError(f"model.to(dtype={dtype}): dtype must be floating point.")
            self._dtype = dtype
        for owner in (self, *self._guides):
            for node in owner.nodes.values():
                if node.kind == "module":
                    node.value.to(device=self._device, dtype=self._dtype)
        return self

"""A model's tables for the elimination engine: ``model_factors``, the reference (it re-derives
everything but a Bayesian network's evidence-free tables), and ``Tabulation``, which records
what the reference derived for one model and one data set and replays it for engines that
tabulate again and again with other params or point values (contrastive divergence per
update, NUTS with finite latents summed out per leapfrog step, HMC-within-Gibbs per
iteration). The tests hold the two equal, invalidation included.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from genppl.dsl.model import Model
from genppl.errors import ModelError
from genppl.library_internals import version
from genppl.pyro.program import default_tensor_context
from genppl.tabulation.factories import global_value
from genppl.tabulation.networks import NetworkTables, is_network, network_tables
from genppl.tabulation.replay import Const, Plan, Recipe, Stale, signature, structure
from genppl.tabulation.tabulator import Tabulator, model_data
from genppl.tabulation.uses import Retable, TabulatedModel


def model_factors(model: Model, data: Mapping[str, Any], *, track: bool = False,
                  point: Mapping[str, torch.Tensor] | None = None, grad: bool = False,
                  retable: Retable | None = None) -> TabulatedModel:
    """Tabulate every node of ``model`` given ``data`` (compact layout, see
    ``genppl.tabulation.tabulator``).

    ``track=True`` makes every random node's table a differentiable leaf, recorded in
    ``uses`` with what produced it (for EM's expected sufficient statistics). ``point``
    fixes latents at values, read like params (EM's point-estimated continuous latents).
    ``grad=True`` keeps every table differentiable in the model's params (contrastive
    divergence follows gradients of log-potentials at sampled states). ``retable`` (with
    ``track=True``) replaces tracked tables (see ``Retable``). A Bayesian network given
    only evidence takes its tables from the model's ``NetworkTables``.
    """
    if retable is not None and not track:
        raise ModelError("model_factors: retable= replaces tracked tables; pass track=True.")
    data = model_data(model, data)
    if not track and not point and not grad and is_network(model):
        return network_tables(model).with_evidence(model, data)
    with default_tensor_context(model.device, model.dtype), torch.set_grad_enabled(grad):
        return Tabulator(model, data, track, point or {}, grad, retable=retable).run()


class Tabulation:
    """``model_factors(model, data, ...)`` for many calls on one model and one data set
    with other params or ``point`` values: the engines that re-tabulate per step
    (contrastive divergence per update, NUTS with the finite latents summed out per
    leapfrog step, HMC-within-Gibbs per iteration). ``Tabulation(model, data)`` once, then
    ``tabulation(point=..., grad=..., track=...)`` per step, with ``model_factors``'s
    meaning and result (same variables, factor order, tables, masks, child links, chain
    blocks and uses).

    The first call runs the reference tabulation and records, per table, what it derived
    from the model's structure and the data -- plates and sizes, scopes, where each factory
    argument comes from (grids of latent states, laid-out data, chain steps), supports,
    evidence indicators, the tables' shapes -- so later calls only call the factories on
    those grids (and deterministic nodes on theirs) and lay their log-probabilities out:
    the structural work is most of a small model's tabulation.

    An object the engine holds rather than a cache inside ``model_factors``: the engine
    knows the model and data stay the same, the record lives exactly as long as the
    engine's run, and the reference function keeps no hidden state to invalidate.

    A Bayesian network given only evidence is tabulated once and kept in the tabulation's
    own ``NetworkTables``.

    Invalidation. Before replaying, each call checks that the model has the same nodes,
    plates and chains on the same device and dtype, that no data tensor was edited in place
    (their version counters, as the model's Bayesian-network tables are kept), and that
    the params, modules and point values have the names, shapes, dtypes and devices of the
    record. A CPT given a new table (``set_table``) is read afresh. While replaying, what
    the record derived from a factory's result is checked against the new result: the
    table's shape, the kind of distribution (masked or not), a latent's number of states --
    or its whole support, for distributions other than Categorical, Bernoulli and counting
    measures, whose states follow from their shape -- and an observed node's event dims.
    Any difference, and the model is tabulated again by the reference and recorded anew.
    A latent's child link (its table sums to 1 over its states) is re-derived per call
    except for those three kinds of distribution, which are normalised by construction
    (a table of NaNs is the exception: the record keeps its link, the reference drops
    it). A counting measure's table is 0 whatever its logits: it is kept, its batch shape
    checked. Data other than tensors (arrays, lists) are copied here, so the data are the
    ones given; a factory's closure is not watched beyond the checks above.
    """

    def __init__(self, model: Model, data: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self._data = {k: v if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                      for k, v in (data or {}).items() if v is not None}
        self._plan: Plan | None = None
        self._network = NetworkTables()

    def __getstate__(self) -> dict[str, Any]:  # the records hold factories: made anew
        return {**self.__dict__, "_plan": None, "_network": NetworkTables()}

    def __call__(self, *, point: Mapping[str, Any] | None = None, grad: bool = False,
                 track: bool = False, retable: Retable | None = None) -> TabulatedModel:
        model, point = self.model, point or {}
        if retable is not None and not track:
            raise ModelError("Tabulation: retable= replaces tracked tables; pass track=True.")
        if not (track or point or grad) and is_network(model):
            return self._network.with_evidence(model, model_data(model, self._data))
        plan = self._plan
        with default_tensor_context(model.device, model.dtype), torch.set_grad_enabled(grad):
            if plan is not None and plan.current(model):
                fixed = dict(point)
                for node in plan.globals:
                    fixed[node.name] = global_value(model, node, grad)
                if signature(fixed) == plan.signature:
                    try:
                        return plan.replay(fixed, track, grad, retable)
                    except Stale:
                        pass
            self._plan = None
            data = model_data(model, self._data)
            recipes: list[Recipe | Const] = []
            tab = Tabulator(model, data, track, point, grad, recipes, retable)
            fm = tab.run()
        self._plan = Plan(
            structure=structure(model),
            versions=tuple((t, version(t)) for t in self._data.values()
                           if isinstance(t, torch.Tensor)),
            signature=signature(tab.fixed),
            globals=tuple(n for n in model.nodes.values() if n.kind in ("param", "module")),
            recipes=recipes, variables=fm.variables, plates=fm.plates, sizes=fm.sizes,
            chains=tuple((b.name, b.length, b.plates, b.reverse) for b in fm.chains),
            latents=fm.latents, nested=fm.nested)
        return fm

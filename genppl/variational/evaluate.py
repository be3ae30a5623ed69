"""Held-out ELBO and the importance-weighted bound IWAE-k (Burda et al. 2016).

For a guide q and data x, the log-weights ``log w = log p(x, z) - log q(z)`` with z ~ q give
both bounds: the ELBO is E[log w], and IWAE-k = E[log (1/k) sum_j w_j] for k independent z_j,
which increases with k towards log p(x) (tested on conjugate models where log p(x) is known:
ELBO <= IWAE-k <= log p, equality for the exact posterior). The k weights are drawn in
vectorised batches and combined with a running log-sum-exp, so k = 5000 needs the memory of
one batch only.

Two refinements a VAE evaluation needs:

* **Per item.** With ``items="images"`` each item of that plate gets its own bound,
  IWAE-k_i = log (1/k) sum_j w_ji with w_ji the item's share of the weight (its sites'
  log p minus log q); the reported total is their sum, the convention of the VAE
  literature (a bound on sum_i log p(x_i), tighter than the whole-set IWAE-k, whose k
  weights would each have to be good for every item at once). It needs the item's latents
  to be its own: a latent outside that plate is refused.
* **Finite latents the guide does not propose** (marked for enumeration) are summed out
  exactly inside each log-weight, ``log w = log sum_d p(x, z, d) - log q(z)``, by the same
  tensor contraction ``TraceEnum_ELBO`` uses (plates respected), so the ELBO here equals
  TraceEnum_ELBO's and IWAE-k still increases to log p(x).

Evaluation is of the whole data: a plate declared with ``subsample_size`` runs in full.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.poutine.util import site_is_subsample

from genppl.dsl.guide import Guide
from genppl.dsl.model import Model
from genppl.errors import ModelError, suggest
from genppl.results import FitResult

_PARTICLES = "_iwae_particles"


@dataclass(frozen=True)
class Evaluation:
    """Bounds on log p(data) in nats: the ELBO (with its Monte Carlo standard error, from
    ``num_particles`` draws) and, when asked, IWAE-``k`` with the delta-method standard
    error of that one estimate (its expectation is a bound; one estimate may pass log p by a
    few standard errors). With ``items``, ``elbo_items`` and ``iwae_items`` hold each item's
    bound (``iwae`` is their sum plus the log-probability of sites outside the plate, and
    ``iwae_se`` combines the items' independent errors)."""

    elbo: float
    elbo_se: float
    num_particles: int
    iwae: float | None = None
    iwae_se: float | None = None
    k: int | None = None
    items: str | None = None
    elbo_items: torch.Tensor | None = None
    iwae_items: torch.Tensor | None = None
    iwae_items_se: torch.Tensor | None = None


@dataclass(frozen=True)
class _Items:
    """The plate whose items get separate bounds: its name, batch dim and size."""

    name: str
    dim: int
    size: int


def _reduce(lp: Any, n: int, nesting: int, items: _Items | None,
            in_items: bool) -> torch.Tensor:
    """A log-probability tensor summed to one value per particle, shape (n,), or with
    ``in_items`` one per particle and item, shape (n, items.size). Particles sit at batch
    dim ``-(nesting + 1)``."""
    lp = torch.as_tensor(lp)
    lp = lp.reshape((1,) * (nesting + 1 - lp.dim()) + tuple(lp.shape))
    if items is None or not in_items:
        return lp.reshape(lp.shape[0], -1).sum(-1).expand(n)
    lp = lp.movedim(lp.dim() + items.dim, 1)
    return lp.reshape(lp.shape[0], lp.shape[1], -1).sum(-1).expand(n, items.size)


def _in_plate(site: dict[str, Any], name: str) -> bool:
    return any(f.name == name for f in site["cond_indep_stack"])


def _enumerated_log_joint(trace: Any, n: int, nesting: int, items: _Items | None
                          ) -> list[tuple[torch.Tensor, bool]]:
    """The model's log-probability terms with its enumerated sites summed out exactly: every
    site's packed log-probability grouped by its plates, the enumeration dims contracted out
    in the log semiring plate by plate (``contract_tensor_tree``, as TraceEnum_ELBO does),
    each remaining term reduced per particle (and item)."""
    trace.pack_tensors()
    tree: OrderedDict[frozenset[str], list[torch.Tensor]] = OrderedDict()
    sum_dims: set[str] = set()
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        ordinal = frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"]
                            if f.vectorized)
        term = site["packed"]["log_prob"]
        tree.setdefault(ordinal, []).append(term)
        if site["infer"].get("_enumerate_dim") is not None:
            sum_dims.update(term._pyro_dims)
    sum_dims -= set(trace.plate_to_symbol.values())
    item_symbol = None if items is None else trace.plate_to_symbol.get(items.name)
    out = []
    for ordinal, terms in contract_tensor_tree(tree, sum_dims).items():
        in_plate = item_symbol is not None and item_symbol in ordinal
        for term in terms:
            out.append((_reduce(packed.unpack(term, trace.symbol_to_dim), n, nesting, items,
                                in_plate), in_plate))
    return out


def _log_weight_parts(program: Callable[..., Any], guide: Callable[..., Any],
                      data: Mapping[str, Any], n: int, nesting: int,
                      items: _Items | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` log-weights split into the items' shares, shape (n, items.size) (or (n, 0)
    without ``items``), and the rest, shape (n,)."""
    dim = -(nesting + 1)
    with pyro.plate(_PARTICLES, n, dim=dim):
        guide_trace = poutine.trace(guide).get_trace(**data)
    with pyro.plate(_PARTICLES, n, dim=dim):
        model_trace = poutine.trace(poutine.enum(
            poutine.replay(program, trace=guide_trace), first_available_dim=dim - 1)
        ).get_trace(**data)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    samples = [(name, site) for name, site in model_trace.nodes.items()
               if site["type"] == "sample" and not site_is_subsample(site)]
    if items is not None:
        outside = [name for name, site in samples
                   if not site["is_observed"] and not _in_plate(site, items.name)]
        if outside:
            raise ModelError(f"per-item bounds over plate {items.name!r}: latent {outside[0]!r} "
                             "is outside that plate, so the items' weights do not factorise; "
                             "evaluate the whole data set's bound (items=None).")
    enumerated = any(site["infer"].get("_enumerate_dim") is not None for _, site in samples)
    terms: list[tuple[torch.Tensor, bool]] = []
    if enumerated:
        terms = _enumerated_log_joint(model_trace, n, nesting, items)
    else:
        terms = [(_reduce(site["log_prob"], n, nesting, items, in_plate), in_plate)
                 for _, site in samples
                 for in_plate in [items is not None and _in_plate(site, items.name)]]
    for site in guide_trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if site["infer"].get("_enumerate_dim") is not None:
            raise ModelError(f"guide site {site['name']!r} enumerates; log-weights need a "
                             "guide that draws its latents.")
        in_plate = items is not None and _in_plate(site, items.name)
        terms.append((-_reduce(site["log_prob"], n, nesting, items, in_plate), in_plate))
    like = terms[0][0] if terms else torch.zeros(())  # the model's dtype and device
    per_item = like.new_zeros(n, 0 if items is None else items.size)
    rest = like.new_zeros(n)
    for value, in_plate in terms:
        if in_plate:
            per_item = per_item + value
        else:
            rest = rest + value
    return per_item, rest


def log_weights(program: Callable[..., Any], guide: Callable[..., Any],
                data: Mapping[str, Any], num: int, *, max_plate_nesting: int,
                batch: int = 1000) -> torch.Tensor:
    """``num`` independent log-weights ``log p(data, z) - log q(z)``, z ~ ``guide``, drawn
    ``batch`` at a time as a vectorised plate outside the model's plates; finite latents the
    guide does not propose are summed out exactly."""
    chunks = []
    with torch.no_grad():
        for start in range(0, num, batch):
            n = min(batch, num - start)
            _, rest = _log_weight_parts(program, guide, data, n, max_plate_nesting, None)
            chunks.append(rest)
    return torch.cat(chunks)


def _bounds(program: Callable[..., Any], guide: Callable[..., Any], data: Mapping[str, Any],
            k: int, nesting: int, batch: int, items: _Items | None
            ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """IWAE-k of each item (or of the whole data, one "item") with its delta-method
    standard error sqrt(var(w) / k) / mean(w), from running log-sums of w and w**2 over
    batches of particles; and the mean of the weights' remaining part (the log-probability
    of sites outside the items' plate, the same for every particle)."""
    s1 = s2 = None
    rest_sum = 0.0
    with torch.no_grad():
        for start in range(0, k, batch):
            n = min(batch, k - start)
            per_item, rest = _log_weight_parts(program, guide, data, n, nesting, items)
            w = (rest[:, None] if items is None else per_item).double()
            a, b = torch.logsumexp(w, 0), torch.logsumexp(2 * w, 0)
            s1, s2 = (a, b) if s1 is None or s2 is None else (
                torch.logaddexp(s1, a), torch.logaddexp(s2, b))
            if items is not None:
                rest_sum += float(rest.double().sum())
    assert s1 is not None and s2 is not None  # k >= 1
    ratio = torch.exp(s2 + math.log(k) - 2 * s1)  # E[w^2] / E[w]^2 >= 1
    se = ((ratio - 1.0).clamp(min=0.0) / k).sqrt()
    return s1 - math.log(k), se, rest_sum / k


@contextmanager
def whole_plates(model: Model) -> Iterator[None]:
    """While inside, every plate of ``model`` (and so of its DSL guides, which share the
    model's plates) runs in full, whatever ``subsample_size`` it was declared with."""
    saved = dict(model.plates)
    try:
        for name, spec in saved.items():
            if spec.subsample_size is not None:
                model.plates[name] = dataclasses.replace(spec, subsample_size=None)
        yield
    finally:
        model.plates.update(saved)


def fitted_guide(guide: FitResult | Guide | Callable[..., Any], caller: str
                 ) -> tuple[Callable[..., Any], AbstractContextManager[Any]]:
    """The Pyro guide program of ``guide`` and the context to run it in: for a
    ``FitResult`` of ``engine="svi"``, a param store holding the fit's own params (whatever
    the store holds now); for a DSL ``Guide`` or a Pyro guide callable, the store as it is."""
    if isinstance(guide, FitResult):
        if guide.engine != "svi" or "guide" not in guide.info:
            raise ModelError(f"{caller} needs a fit of engine='svi', not {guide.engine!r}.")
        state = guide.info.get("param_state")
        program = guide.info["guide"]
        if state is None:
            return program, nullcontext()
        return program, pyro.get_param_store().scope(
            {"params": dict(state["params"]), "constraints": dict(state["constraints"])})
    if isinstance(guide, Guide):
        return guide.pyro_guide, nullcontext()
    if not callable(guide):
        raise ModelError(f"{caller}: guide must be an svi fit, a DSL Guide or a Pyro guide "
                         f"callable, not {type(guide).__name__}.")
    return guide, nullcontext()


def evaluate(model: Model, guide: FitResult | Guide | Callable[..., Any],
             data: Mapping[str, Any], *, num_particles: int = 1000, iwae: int | None = None,
             batch: int = 1000, items: str | None = None,
             seed: int | None = None) -> Evaluation:
    """The ELBO of ``data`` under ``model`` and ``guide`` (from ``num_particles`` draws) and,
    with ``iwae=k``, the bound IWAE-k, both in nats.

    ``guide`` is a ``FitResult`` of ``engine="svi"`` (its guide, with the params it ended
    with), a DSL ``Guide`` or a Pyro guide callable (with the params now in Pyro's param
    store). On held-out data the guide must apply to new data: global latents only, or an
    amortised DSL guide. Finite latents the guide does not propose are summed out exactly.
    ``items`` names a plate whose items get one bound each (see the module docstring).
    ``batch`` particles are drawn at once: memory grows with ``batch`` times the size of
    one run of the model (for a VAE, ``batch`` x images x pixels). ``seed`` fixes the draws.
    """
    from genppl.pyro.layout import resolve_sizes
    from genppl.tabulation.prepared import prepare

    if num_particles < 1 or (iwae is not None and iwae < 1) or batch < 1:
        raise ModelError("num_particles, iwae and batch must be positive.")
    if items is not None and items not in model.plates:
        raise ModelError(f"items={items!r} is not a plate of model {model.name!r}."
                         + suggest(items, model.plates))
    guide, params = fitted_guide(guide, "evaluate()")
    with ExitStack() as stack:
        stack.enter_context(whole_plates(model))
        stack.enter_context(params)
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            pyro.set_rng_seed(seed)
        prep = prepare(model, data)
        nesting = prep.max_plate_nesting
        plate = None if items is None else _Items(
            items, prep.program.dims[items], resolve_sizes(model, prep.data)[0][items])
        parts = []
        with torch.no_grad():
            for start in range(0, num_particles, batch):
                n = min(batch, num_particles - start)
                per_item, rest = _log_weight_parts(prep.program, guide, prep.data, n,
                                                   nesting, plate)
                parts.append((per_item.double(), rest.double()))
        per_item = torch.cat([p for p, _ in parts])
        w = per_item.sum(1) + torch.cat([r for _, r in parts])
        se = float(w.std() / math.sqrt(num_particles)) if num_particles > 1 else math.nan
        bound = bound_se = item_bounds = item_se = None
        if iwae is not None:
            item_bounds, item_se, rest_mean = _bounds(prep.program, guide, prep.data, iwae,
                                                      nesting, batch, plate)
            bound = float(item_bounds.sum()) + rest_mean
            bound_se = float(item_se.square().sum().sqrt())
            if plate is None:
                item_bounds = item_se = None
    return Evaluation(float(w.mean()), se, num_particles, bound, bound_se, iwae, items,
                      None if plate is None else per_item.mean(0), item_bounds, item_se)

"""``genppl.fit(model, data, engine="em")``: expectation-maximisation with exact E-steps.

E-step: one contraction of the exact engine (``genppl.exact``) with every node's log table
as a leaf. The gradient of log p(data) with respect to a node's log table is its family
marginal -- a mixture's responsibilities, Baum-Welch's gammas and xis, a Bayesian network's
expected counts -- so plates, chains and evidence need nothing of their own here.

M-step: closed form for parameters that a node's distribution reads directly as

- ``Categorical`` / ``Bernoulli`` probabilities (``dist.Categorical(trans[z_prev])``, a
  mixture's weights, an emission table, a CPT, naive Bayes's words read through their
  document's class): normalised expected counts, plus optional Dirichlet pseudo-counts (a
  MAP estimate); each observation's weights are added at its category, never as a one-hot
  (a corpus's words would make a tokens x rows x vocabulary tensor);
- ``Multinomial`` or ``WordCounts`` probabilities (``WordCounts(n, probs=words[c])``, a
  document's count vector): the same, each observation adding its vector of counts;
- ``Normal`` ``loc`` and ``scale`` (``dist.Normal(mu[z], sigma[z])``, or one shared scale):
  weighted means and variances;
- ``Poisson`` ``rate``: weighted means.

Which parameter plays which role is found by probing, once: the factory is called with a
random valid value of the param, and a role is recognised only when the distribution's
attribute *is* that value broadcast over the parents' states. Anything else (a param
passed through a network, a softmax, a sum) has no closed form and is a clear error that
points to engine ``svi``. Log-likelihood (plus the log prior with pseudo-counts) never
decreases between iterations.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import MaskedDistribution

from genppl.distributions import COUNT_VECTORS, WordCounts
from genppl.dsl.model import Model
from genppl.dsl.tables import CPT
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError, suggest
from genppl.exact.broadcasting import compact, sum_to_shape
from genppl.exact.sum_product import contract
from genppl.pyro.program import as_data, default_tensor_context
from genppl.results import FitResult
from genppl.runtime.checkpoint import RunCheckpoint, check_checkpoint, digest
from genppl.runtime.options import Role, option
from genppl.runtime.params import param_values
from genppl.runtime.progress import progress_bar
from genppl.tabulation.tabulation import model_factors
from genppl.tabulation.uses import TabulatedModel, Use
from genppl.variational.params import snapshot

#: Attributes with a closed-form M-step, by distribution type.
ROLES: dict[type, tuple[str, ...]] = {
    dist.Categorical: ("probs",),
    dist.Bernoulli: ("probs",),
    dist.Multinomial: ("probs",),
    WordCounts: ("probs",),
    dist.Normal: ("loc", "scale"),
    dist.Poisson: ("rate",),
}


@dataclass(frozen=True)
class _Role:
    """Use number ``use`` of the tabulation reads ``target`` as its ``attr``."""

    target: str
    attr: str
    use: int


@dataclass(frozen=True, kw_only=True)
class EMOptions:
    """Options of engine ``em``."""

    steps: int = option(100, "most EM iterations", role=Role.STEPS)
    tol: float = option(1e-8, "stop when the objective improves by less than this, relative")
    pseudo_counts: float = option(0.0, "counts added to every category (a Dirichlet(1 + "
                                  "pseudo_counts) prior's MAP)")
    learn: Sequence[str] | None = option(None, "what to re-estimate: params, CPT nodes, global "
                                         "continuous latents (None: see fit)")
    init: dict[str, Any] | None = option(None, "starting values of params and point-estimated "
                                         "latents by name")
    seed: int = option(0, "seed of the prior draws that start point-estimated latents",
                       role=Role.SEED)
    progress: bool = option(True, "a progress bar", role=Role.PROGRESS)
    checkpoint: str | Path | None = option(None, "a directory: the run saves em.pt there and "
                                           "a repeated call resumes it")
    checkpoint_every: int = option(100, "iterations between two checkpoint saves")


def fit(model: Model, data: dict[str, Any] | None, options: EMOptions) -> FitResult:
    """Run up to ``steps`` EM iterations; stop early when the objective improves by less
    than ``tol`` relative.

    ``learn`` names what to re-estimate: params, CPT nodes, and global continuous latents
    (point-estimated: their MAP under a Uniform or Dirichlet prior, so a model declared for
    NUTS fits by EM unchanged). By default: every param and global continuous latent, or
    every CPT when there are none. ``pseudo_counts`` adds that many counts to every category
    (a Dirichlet(1 + pseudo_counts) prior's MAP). ``init`` gives starting values of params
    (default: their declared initial values) and of point-estimated latents (default: a draw
    from their prior with ``seed``).

    Params live in a param store of their own for the run, so a fit starts from the
    declaration (or ``init``), never from what an earlier run left in Pyro's global store,
    and leaves that store as it was; the fitted values come back in ``FitResult.params``.

    Checkpoints (``genppl.runtime.checkpoint``): with ``checkpoint=directory``, the run saves
    ``em.pt`` every ``checkpoint_every`` iterations and at the end -- the current params (the
    param store's unconstrained values), CPT tables and point estimates, and the trajectories
    -- and the same call started again resumes there, with the params and log-likelihoods of
    an uninterrupted run, bit for bit; a finished run answers from its checkpoint. Another
    run's checkpoint (model, data sizes, options, init) is refused. Each E-step's elimination
    is checked against the memory budget (``genppl.budget``)."""
    steps, tol, pseudo_counts, seed = (options.steps, options.tol, options.pseudo_counts,
                                       options.seed)
    checkpoint, checkpoint_every = options.checkpoint, options.checkpoint_every
    check_checkpoint("engine 'em'", checkpoint, seed, checkpoint_every)
    if steps < 1:
        raise ModelError(f"engine 'em': steps must be >= 1, got {steps}.")
    if pseudo_counts < 0:
        raise ModelError(f"engine 'em': pseudo_counts must be >= 0, got {pseudo_counts}.")
    start = time.perf_counter()
    init = dict(options.init or {})
    params = model.names("param")
    data = data or {}
    with param_values(model, {n: v for n, v in init.items() if n in params}):
        targets = _Targets(model, options.learn, init, seed)
        store = None
        if checkpoint is not None:
            store = RunCheckpoint(checkpoint, "em", {
                "engine": "em", "format": FORMAT, "model": model.name,
                "data": digest({k: v for k, v in data.items() if v is not None}),
                "steps": steps, "tol": tol, "pseudo_counts": pseudo_counts,
                "learn": targets.names, "seed": seed, "init": digest(init)})
        return _fit(model, data, steps, tol, pseudo_counts, targets, options.progress, start,
                    store, checkpoint_every)


#: The layout of EM checkpoint records; a file of another layout is refused like another run's.
FORMAT = 1


def _fit(model: Model, data: dict[str, Any], steps: int, tol: float, pseudo_counts: float,
         targets: _Targets, progress: bool, start: float, store: RunCheckpoint | None,
         every: int) -> FitResult:
    roles: list[_Role] | None = None
    log_likelihoods: list[float] = []
    objectives: list[float] = []
    converged = unsaved = False
    saved = store.load() if store is not None else None
    if saved is not None:
        targets.load_state_dict(saved["targets"])
        log_likelihoods, objectives = list(saved["log_likelihood"]), list(saved["objective"])
        converged = bool(saved["converged"])

    def save() -> None:
        assert store is not None
        store.save({"targets": targets.state_dict(), "log_likelihood": log_likelihoods,
                    "objective": objectives, "converged": converged})

    first = steps if converged else len(log_likelihoods)
    for step in progress_bar(range(first, steps), total=steps - first, desc="em",
                             enabled=progress):
        fm = model_factors(model, data, track=True, point=targets.point)
        if roles is None:
            roles = _identify(fm, targets)
        log_z, grads = _expected_statistics(fm)
        if not math.isfinite(log_z):
            raise ModelError(f"engine 'em': log p(data) = {log_z} under {model.name!r} at "
                             f"iteration {step}; the data has probability zero under the "
                             "current parameters (try pseudo_counts > 0).")
        objective = log_z + targets.log_prior() + _pseudo_prior(targets, fm, roles,
                                                                pseudo_counts)
        log_likelihoods.append(log_z)
        if objectives and objective - objectives[-1] < tol * abs(objectives[-1]):
            objectives.append(objective)
            converged = unsaved = True
            break
        objectives.append(objective)
        _maximise(targets, fm, roles, grads, pseudo_counts)
        unsaved = True
        if store is not None and (step + 1) % every == 0:
            save()
            unsaved = False
    if store is not None and unsaved:  # the end: steps done, or converged
        save()
    fitted = {t: targets.current(t) for t in targets.names}
    return FitResult(model.name, "em", fitted, losses=[-o for o in objectives],
                     seconds=time.perf_counter() - start,
                     info={"log_likelihood": log_likelihoods, "converged": converged,
                           "iterations": len(log_likelihoods)})


class _Targets:
    """What EM re-estimates, and where each lives: params in Pyro's param store, CPT tables
    in their nodes, point-estimated global latents here (with their priors)."""

    def __init__(self, model: Model, learn: Sequence[str] | None, init: dict[str, Any],
                 seed: int) -> None:
        self.model = model
        params = model.names("param")
        cpts = [n for n in model.names("latent", "observed") if isinstance(model[n].fn, CPT)]
        roots = [n for n in model.latent_names
                 if not model[n].plates and model[n].chain is None and not model[n].parents]
        with default_tensor_context(model.device, model.dtype):
            priors = {n: model[n].fn() for n in roots}  # type: ignore[misc]
        self.priors = {n: d for n, d in priors.items() if not d.has_enumerate_support}
        known = [*params, *self.priors, *cpts]
        init = {n: v for n, v in init.items() if n not in params}
        if learn is None:
            learn = [*params, *self.priors] or cpts
            if not learn:
                raise ModelError(f"engine 'em': model {model.name!r} has no params, global "
                                 "continuous latents or CPTs to fit.")
        for name in learn:
            if name not in known:
                raise ModelError(f"engine 'em': learn= names {name!r}, which is not a param, "
                                 f"CPT node or global continuous latent of {model.name!r}."
                                 + suggest(name, known))
        for name in init:
            if name not in self.priors:
                raise ModelError(f"engine 'em': init= names {name!r}, which is not a param or "
                                 f"global continuous latent of {model.name!r}."
                                 + suggest(name, [*params, *self.priors]))
        self.names = list(learn)
        missing = [n for n in self.priors if n not in self.names]
        if missing:
            raise ModelError(f"engine 'em': continuous latent {missing[0]!r} is not in learn=; "
                             "EM's E-step sums over finite latents only, so every continuous "
                             "one needs a point estimate.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.point = {n: as_data(model, n, init[n]) if n in init else d.sample()
                          for n, d in self.priors.items()}
        for n, d in self.priors.items():
            _flat_or_dirichlet(n, model[n].declared_at, d)
            if not bool(d.support.check(self.point[n]).all()):
                raise ModelError(f"engine 'em': init for {n!r} lies outside its prior's support "
                                 f"{d.support}.")

    def current(self, name: str) -> torch.Tensor:
        model = self.model
        node = model[name]
        if name in self.point:
            value = self.point[name]
        else:
            value = pyro.param(name).detach() if node.kind == "param" else \
                node.fn.table  # type: ignore[union-attr]
        return value.to(model.device, model.dtype)

    def state_dict(self) -> dict[str, Any]:
        """The current values, for a checkpoint. Params as the param store keeps them,
        unconstrained: put back as they were, they read back bit for bit (a constrained value
        would go through the transform's inverse and back)."""
        params = [n for n in self.names if self.model[n].kind == "param"]
        unconstrained = snapshot()
        return {"params": {n: unconstrained[n] for n in params if n in unconstrained},
                "tables": {n: self.model[n].fn.table  # type: ignore[union-attr]
                           for n in self.names if n not in self.point
                           and self.model[n].kind != "param"},
                "point": dict(self.point)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put a ``state_dict`` back: the params into the run's param store, the tables into
        their CPT nodes, the point estimates here (on the model's device)."""
        device = self.model.device
        pyro.get_param_store().set_state({
            "params": {n: v.to(device).requires_grad_(True) for n, v in state["params"].items()},
            "constraints": {n: self.model[n].constraint for n in state["params"]}})
        for name, table in state["tables"].items():
            self.model[name].fn.set_table(table)  # type: ignore[union-attr]
        self.point.update({n: v.to(device) for n, v in state["point"].items()})

    def constraint(self, name: str) -> Any:
        return self.priors[name].support if name in self.priors else self.model[name].constraint

    def extra_counts(self, name: str) -> torch.Tensor | float:
        """A Dirichlet prior's concentration minus one: its MAP adds these counts."""
        prior = self.priors.get(name)
        if prior is None:
            return 0.0
        base = _flat_or_dirichlet(name, self.model[name].declared_at, prior)
        return base.concentration - 1 if isinstance(base, dist.Dirichlet) else 0.0

    def log_prior(self) -> float:
        return sum(float(d.log_prob(self.point[n]).sum()) for n, d in self.priors.items())

    def assign(self, name: str, value: torch.Tensor) -> None:
        node = self.model[name]
        if name in self.point:
            base = _flat_or_dirichlet(name, node.declared_at, self.priors[name])
            if isinstance(base, dist.Uniform):  # the MAP under a box prior: the box's closest
                value = torch.maximum(torch.minimum(value, base.high), base.low)
            self.point[name] = value.detach()
            return
        if node.kind != "param":
            node.fn.set_table(value)  # type: ignore[union-attr]
            return
        # The param store keeps unconstrained values (``transform_to``). A simplex param is
        # kept as its logs (softmax): an exact 0 is -inf there and comes back an exact 0, so
        # a cell no expected count reaches (an absorbing state's row) stays impossible, as in
        # hmmlearn. A scale of 0 would leave the support: scales stay positive. (Pyro's
        # unit-interval transform keeps a probability in [tiny, 1 - eps] itself.)
        if node.constraint is dist.constraints.positive:
            value = value.clamp(min=torch.finfo(value.dtype).tiny)
        pyro.get_param_store()[name] = value.detach()


def _flat_or_dirichlet(name: str, where: str, d: Any) -> Any:
    """The prior under ``.expand``/``.to_event``, if it has a closed-form MAP update."""
    base = d
    while isinstance(base, dist.Independent | dist.ExpandedDistribution):
        base = base.base_dist
    if not isinstance(base, dist.Dirichlet | dist.Uniform):
        raise ModelError(f"engine 'em': latent {name!r} ({where}) has prior "
                         f"{type(base).__name__}; EM point-estimates continuous latents only "
                         "under Uniform (flat) or Dirichlet priors. Use svi (MAP) or nuts.")
    return base


def _base(d: Any) -> Any:
    """The distribution under a ``.mask(...)``."""
    return d.base_dist if isinstance(d, MaskedDistribution) else d


def _identify(fm: TabulatedModel, targets: _Targets) -> list[_Role]:
    """Which use reads which target as which attribute, by probing with random values."""
    roles: list[_Role] = []
    for i, use in enumerate(fm.uses):
        if isinstance(use.fn, CPT):
            if use.node.name in targets.names:
                roles.append(_Role(use.node.name, "probs", i))
            continue
        for p in use.parents:
            if p.node not in targets.names:
                continue
            attr = _probe(use, p.arg, targets.constraint(p.node))
            if attr is None:
                raise ModelError(
                    f"engine 'em': node {use.node.name!r} ({use.node.declared_at}) reads param "
                    f"{p.node!r}, but not directly as Categorical/Bernoulli/Multinomial "
                    "probs, Normal loc/scale or Poisson rate (e.g. "
                    "dist.Categorical(trans[z_prev]), dist.Normal(mu[z], sigma[z])), so it "
                    "has no closed-form M-step. Use "
                    "engine='svi', or leave it out with learn=[...].")
            roles.append(_Role(p.node, attr, i))
    found = {r.target for r in roles}
    missing = [t for t in targets.names if t not in found]
    if missing:
        raise ModelError(f"engine 'em': {missing[0]!r} is not read by any random node, so the "
                         "data say nothing about it; leave it out with learn=[...].")
    return roles


def _probe(use: Use, arg: str, constraint: Any) -> str | None:
    """The attribute of the use's distribution that equals the param, broadcast, if any."""
    value = use.args[arg]
    transform = dist.transforms.biject_to(constraint)
    gen = torch.Generator(device=value.device).manual_seed(0)
    raw = transform.inv(value)
    probe = transform(torch.randn(raw.shape, generator=gen, dtype=raw.dtype,
                                  device=raw.device))
    d = _base(use.fn(**{**use.args, arg: probe}))
    for kind, attrs in ROLES.items():
        if type(d) is not kind:
            continue
        for attr in attrs:
            seen = compact(getattr(d, attr))  # broadcast axes add nothing to compare
            try:
                expected = probe.expand(seen.shape)
            except RuntimeError:
                continue
            if torch.allclose(seen, expected, rtol=1e-6, atol=0):
                return attr
    return None


def _expected_statistics(fm: TabulatedModel) -> tuple[float, list[torch.Tensor]]:
    """log p(data) and, per use, the gradient of log p(data) with respect to its table."""
    tables = [u.table for u in fm.uses]
    with torch.enable_grad():
        log_z = contract(fm)
        grads = torch.autograd.grad(log_z.sum(), tables, allow_unused=True)
    return float(log_z.detach().sum()), [torch.zeros_like(t) if g is None else g
                                for t, g in zip(tables, grads, strict=True)]


def _counts(use: Use, grad: torch.Tensor, shape: torch.Size | tuple[int, ...]
            ) -> torch.Tensor:
    """Expected counts per (parent states, category), summed down to the param's ``shape``
    (categories last). (Masked entries, e.g. padding, have no gradient: the tabulation
    keeps their mask outside the leaf, so they count zero.)"""
    if use.value is None:  # a latent: the gradient is its family marginal
        return sum_to_shape(grad, shape)
    if isinstance(_base(use.distribution), COUNT_VECTORS):  # a vector of counts per entry
        return sum_to_shape(use.value.to(grad.dtype) * grad.unsqueeze(-1), shape)
    return _category_counts(use.value.long(), grad, shape)


def _category_counts(value: torch.Tensor, weight: torch.Tensor,
                     shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """``sum_to_shape(one_hot(value) * weight[..., None], shape)`` without the one-hot:
    each entry's weight added at (its row of the param, its category). A corpus's words
    read through a class or topic would otherwise make a (tokens x rows x vocabulary)
    tensor."""
    full = torch.broadcast_shapes(value.shape, weight.shape)
    rows, categories = tuple(shape[:-1]), shape[-1]
    lead = len(full) - len(rows)
    if lead < 0 or any(r not in (1, f) for r, f in zip(rows, full[lead:], strict=True)):
        onehot = torch.nn.functional.one_hot(value, categories).to(weight.dtype)
        return sum_to_shape(onehot * weight.unsqueeze(-1), shape)
    row = value.new_zeros(())
    stride = 1
    for axis in range(len(rows) - 1, -1, -1):  # the entry's row of the param, row-major
        if rows[axis] > 1:
            at = [1] * len(full)
            at[lead + axis] = -1
            row = row + torch.arange(rows[axis], device=value.device).reshape(at) * stride
            stride *= rows[axis]
    flat = (row * categories + value).expand(full).reshape(-1)
    counts = weight.new_zeros(stride * categories)
    return counts.index_add_(0, flat, weight.expand(full).reshape(-1)).reshape(shape)


def _maximise(targets: _Targets, fm: TabulatedModel, roles: list[_Role], grads: list[torch.Tensor],
              pseudo_counts: float) -> None:
    by_target: dict[str, list[_Role]] = defaultdict(list)
    for r in roles:
        by_target[r.target].append(r)
    new: dict[str, torch.Tensor] = {}
    for target, group in by_target.items():
        attrs = {r.attr for r in group}
        if attrs == {"probs"}:
            new[target] = _probabilities(targets, fm, target, group, grads, pseudo_counts)
        elif attrs == {"rate"} or attrs == {"loc"}:
            new[target] = _weighted_mean(targets, fm, target, group, grads)
        elif attrs != {"scale"}:
            raise ModelError(f"engine 'em': param {target!r} is read as {sorted(attrs)} by "
                             "different nodes; one role per param has a closed form.")
    for target, group in by_target.items():  # scales use the new means
        if {r.attr for r in group} == {"scale"}:
            new[target] = _weighted_scale(targets, fm, target, group, grads, new)
    for target, value in new.items():
        targets.assign(target, value)


def _probabilities(targets: _Targets, fm: TabulatedModel, target: str, group: list[_Role],
                   grads: list[torch.Tensor], pseudo_counts: float) -> torch.Tensor:
    old = targets.current(target)
    bernoulli = _is_bernoulli(fm, group)
    shape = (*old.shape, 2) if bernoulli else old.shape
    counts = old.new_zeros(shape)
    for r in group:
        counts = counts + _counts(fm.uses[r.use], grads[r.use], shape)
    counts = (counts + pseudo_counts + targets.extra_counts(target)).clamp(min=0)
    total = counts.sum(-1, keepdim=True)
    probs = counts / total.clamp(min=torch.finfo(old.dtype).tiny)
    if bernoulli:
        return torch.where(total[..., 0] > 0, probs[..., 1], old)
    return torch.where(total > 0, probs, old)  # a row never used keeps its values


def _is_bernoulli(fm: TabulatedModel, group: list[_Role]) -> bool:
    return isinstance(_base(fm.uses[group[0].use].distribution), dist.Bernoulli)


def _moments(fm: TabulatedModel, group: list[_Role], grads: list[torch.Tensor],
             shape: torch.Size, term: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed posterior weights and weighted ``term(use)`` over the group's uses, summed
    down to the param's ``shape``."""
    s0 = s1 = None
    for r in group:
        use = fm.uses[r.use]
        if use.value is None:
            raise ModelError(f"engine 'em': latent {use.node.name!r} ({use.node.declared_at}) "
                             f"reads {r.target!r} as a continuous parameter; EM's exact E-step "
                             "needs finite latents.")
        weight = grads[r.use]
        values = term(use).to(weight.dtype)
        full = torch.broadcast_shapes(weight.shape, values.shape)
        a = sum_to_shape(weight.expand(full), shape)
        b = sum_to_shape((weight * values).expand(full), shape)
        s0, s1 = (a, b) if s0 is None or s1 is None else (s0 + a, s1 + b)
    assert s0 is not None and s1 is not None
    return s0, s1


def _weighted_mean(targets: _Targets, fm: TabulatedModel, target: str, group: list[_Role],
                   grads: list[torch.Tensor]) -> torch.Tensor:
    old = targets.current(target)
    s0, s1 = _moments(fm, group, grads, old.shape, lambda use: use.value)
    return torch.where(s0 > 0, s1 / s0.clamp(min=torch.finfo(s0.dtype).tiny), old)


def _weighted_scale(targets: _Targets, fm: TabulatedModel, target: str, group: list[_Role],
                    grads: list[torch.Tensor], new: dict[str, torch.Tensor]) -> torch.Tensor:
    """Root mean squared deviation from each cell's *new* mean (the joint M-step of a
    Gaussian's mean and variance): the factory is re-run with the new params to get it."""
    old = targets.current(target)

    def squared_deviation(use: Use) -> torch.Tensor:
        args = {p.arg: new[p.node] for p in use.parents if p.node in new}
        loc = _base(use.fn(**{**use.args, **args})).loc
        return (use.value - loc) ** 2  # type: ignore[operator]

    s0, s2 = _moments(fm, group, grads, old.shape, squared_deviation)
    variance = torch.where(s0 > 0, s2 / s0.clamp(min=torch.finfo(s0.dtype).tiny), old ** 2)
    return variance.clamp(min=torch.finfo(variance.dtype).tiny).sqrt()


def _pseudo_prior(targets: _Targets, fm: TabulatedModel, roles: list[_Role],
                  pseudo_counts: float) -> float:
    """log density (up to a constant) of the Dirichlet/Beta prior the pseudo-counts add."""
    if not pseudo_counts:
        return 0.0
    total = 0.0
    for target in dict.fromkeys(r.target for r in roles if r.attr == "probs"):
        probs = targets.current(target)
        if _is_bernoulli(fm, [r for r in roles if r.target == target]):
            probs = torch.stack([1 - probs, probs], -1)
        total += pseudo_counts * float(probs.clamp(min=torch.finfo(probs.dtype).tiny).log().sum())
    return total


EM = register(Engine(
    "em", "expectation-maximisation with exact E-steps (Baum-Welch for HMMs, EM for mixtures "
    "and Bayesian networks): closed-form M-steps, optional pseudo-counts",
    returns=Returns.FIT, accepts=Feature.FINITE | Feature.CONTINUOUS | Feature.FACTORS
    | Feature.NEURAL, needs=Feature.NONE, options=EMOptions, fit=fit))

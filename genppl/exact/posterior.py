"""Queries of a factor model answered by one contraction: every posterior marginal (the
gradient of log Z with respect to a zero table over each latent), exact joint posterior draws
(the sample semiring's backward pass), and the results laid out as the data are."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from genppl.errors import ModelError
from genppl.exact import contract
from genppl.exact.factors import FactorModel
from genppl.exact.rings import SAMPLE, SUM, Ring
from genppl.exact.sum_product import contract as contract_model


def posterior_marginals(fm: FactorModel, *, chain_method: str = "auto",
                        budget_bytes: int | None = None,
                        per: str | None = None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(log Z, {latent: probabilities (..., K)})``: one contraction and its gradient
    (log Z per entry of plate ``per`` when given). A flat network (no plates, no chains) takes
    the elimination's hand-written calibration pass, several times faster than autograd's
    for the many small steps of a Bayesian network."""
    if not fm.plates and not fm.chains and per is None:
        log_z, single, _ = contract.marginals([f for _, f in fm.factors],
                                              budget_bytes=budget_bytes, families=False)
        return log_z, {name: single[name] for name in fm.variables}
    return leaf_gradients(fm, ring=SUM, chain_method=chain_method,
                           budget_bytes=budget_bytes, per=per)


def posterior_draws(fm: FactorModel, num_samples: int, chain_method: str = "auto",
                    budget_bytes: int | None = None
                    ) -> dict[str, torch.Tensor]:
    """Joint posterior draws of every latent, ``(1, num_samples, *shape)`` in the data's
    layout: one forward contraction, one sampling backward pass each (also the exact block
    update of ``hmc_gibbs``)."""
    leaves = latent_leaves(fm)
    draws: dict[str, list[torch.Tensor]] = {name: [] for name in leaves}
    with torch.enable_grad():
        value = contract_model(fm, ring=SAMPLE, leaves=leaves,
                               chain_method=chain_method, budget_bytes=budget_bytes)
        for i in range(num_samples):
            for name, one_hot in _gradients(fm, value, leaves,
                                            retain=i < num_samples - 1).items():
                draws[name].append(fm.variables[name].states[one_hot.argmax(-1)])
    return {name: torch.stack(d).unsqueeze(0) for name, d in draws.items()}


def latent_leaves(fm: FactorModel) -> dict[str, torch.Tensor]:
    """A zero table over each latent: the gradient of the contraction lands on these."""
    like = _any_table(fm)
    cases = fm.cases()
    return {name: like.new_zeros((*fm.leaf_shape(name, cases), len(v.states))
                                 ).requires_grad_() for name, v in fm.variables.items()}


def data_layout(fm: FactorModel, name: str, table: torch.Tensor) -> torch.Tensor:
    """A leaf-shaped result in the data's compact layout: steps in index order, absent
    plates dropped."""
    var = fm.variables[name]
    if var.chain is not None and next(b.reverse for b in fm.chains if b.name == var.chain):
        table = table.flip(0)
    if not fm.plates:
        return table
    lead = 1 if var.chain is not None else 0
    plates = (fm.sizes[p] for p in fm.along(var.plates))
    return table.reshape(*table.shape[:lead], *plates, table.shape[-1])


@contextlib.contextmanager
def draw_stream(fm: FactorModel, seed: int | None) -> Iterator[None]:
    """Draws from torch's global stream, advancing it (so unseeded calls differ), or with
    ``seed`` from a stream of their own that leaves the global one where it was (so seeded
    calls repeat without disturbing anyone else's draws)."""
    if seed is None:
        yield
        return
    device = _device(fm)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # seeds just the streams it restores
        torch.random.default_generator.manual_seed(seed)
        for d in cuda:
            torch.cuda.default_generators[d.index].manual_seed(seed)
        yield


def _gradients(fm: FactorModel, value: torch.Tensor, leaves: dict[str, torch.Tensor], *,
               retain: bool = False) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(value.sum(), list(leaves.values()), allow_unused=True,
                                retain_graph=retain)
    return {name: data_layout(fm, name, torch.zeros_like(leaf) if g is None else g)
            for (name, leaf), g in zip(leaves.items(), grads, strict=True)}


def leaf_gradients(fm: FactorModel, *, ring: Ring, chain_method: str,
                    budget_bytes: int, per: str | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(value, {latent: gradient})``: the contraction in ``ring`` and its gradient at a
    zero table over each latent, in the data's layout -- marginals for ``SUM``, the
    indicator of one most probable assignment for ``MAX``."""
    leaves = latent_leaves(fm)
    with torch.enable_grad():
        value = contract_model(fm, ring=ring, leaves=leaves, chain_method=chain_method,
                               budget_bytes=budget_bytes, per=per)
        out = _gradients(fm, value, leaves)
    return value.detach(), out


def _device(fm: FactorModel) -> torch.device:
    return _any_table(fm).device


def _any_table(fm: FactorModel) -> torch.Tensor:
    for _, f in fm.factors:
        return f.log_table
    for block in fm.chains:
        for f in (*block.first, *block.rest):
            return f.log_table
    raise ModelError("the model has no tables for engine 'exact'.")

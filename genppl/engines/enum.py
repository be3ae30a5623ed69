"""``engine="enum"``: Pyro's exact enumeration (``TraceEnum_ELBO``) over all finite latents.

Kept as the baseline the exact engine is measured against: exact marginals of every finite
latent and log p(data), within Pyro's limits on the number of enumerated variables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO

from genppl.dsl.model import Model
from genppl.engines.contract import Engine, Feature, Returns, register
from genppl.errors import ModelError
from genppl.pyro.values import by_node, from_pyro_layout, split_site
from genppl.results import Posterior
from genppl.runtime.params import FixedParams
from genppl.tabulation.prepared import check_enumeration, prepare


def _empty_guide(**_: Any) -> None:
    return None


def _state_probs(d: Any) -> torch.Tensor:
    """State probabilities ``(..., K)`` of a marginal from ``compute_marginals``.

    Pyro builds each marginal as ``type(site_fn)(logits=...)``: for a counting-measure
    variable those logits are unnormalised (and the class has no ``.probs``), and a Bernoulli
    gets one logit, so normalise here instead of reading ``.probs``.
    """
    if isinstance(d, dist.Bernoulli):
        return torch.stack([1 - d.probs, d.probs], -1)
    return torch.softmax(d.logits, -1)


@dataclass(frozen=True, kw_only=True)
class EnumOptions(FixedParams):
    """Options of engine ``enum``: only the params it runs at."""


def infer(model: Model, data: dict[str, Any] | None, options: EnumOptions) -> Posterior:
    """Exact marginals of every finite latent and log p(data). A model whose enumeration
    would need more than the memory budget (``genppl.budget``) is refused before Pyro
    allocates it."""
    start = time.perf_counter()
    prep = prepare(model, data)
    if prep.continuous:
        raise ModelError(
            f"engine 'enum' sums over finite latents only, but {prep.continuous[0]!r} of model "
            f"{model.name!r} is continuous; use engine='nuts' (which enumerates the finite ones) "
            "or 'svi'.")
    check_enumeration(prep, "Use engine 'exact' or 'gibbs'")
    elbo = TraceEnum_ELBO(max_plate_nesting=prep.max_plate_nesting)
    try:
        with torch.no_grad():
            log_evidence = -float(elbo.loss(prep.program, _empty_guide, **prep.data))
            # (checked before the marginals, which are 0/0 when the evidence is impossible)
            if log_evidence != log_evidence or log_evidence == float("-inf"):
                raise ModelError(f"the data has probability zero under {model.name!r} "
                                 f"(log p(data) = {log_evidence}); check evidence against the "
                                 "tables.")
            dists = elbo.compute_marginals(prep.program, _empty_guide, **prep.data)
    except ModelError:
        raise
    except ValueError as e:
        limit = ("; Pyro enumerates at most 64 variables at once (25 on CUDA)"
                 if "dim" in str(e) and "enumerat" in str(e).lower() else "")
        raise ModelError(f"Pyro's enumeration failed on {model.name!r}: {e}{limit}.") from e
    marginals = by_node(
        (site, from_pyro_layout(model[split_site(site)[0]], _state_probs(d),
                                prep.program.dims, 1))
        for site, d in dists.items())
    return Posterior(model.name, "enum", marginals=marginals, log_evidence=log_evidence,
                     seconds=time.perf_counter() - start)


ENUM = register(Engine(
    "enum", "Pyro's exact enumeration of finite latents (TraceEnum_ELBO): marginals and log "
    "evidence; the baseline for 'exact'", returns=Returns.MARGINALS | Returns.EVIDENCE,
    accepts=Feature.FINITE | Feature.FACTORS | Feature.NEURAL, needs=Feature.FINITE,
    options=EnumOptions, infer=infer))

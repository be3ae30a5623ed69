"""What a set of importance weights says about the estimate they make.

With C weights w_c of one item, the estimate is log((1/C) sum_c w_c). Its standard error by
the delta method is sqrt(var(w) / C) / mean(w) = sqrt((C sum w^2 / (sum w)^2 - 1) / C), and
the effective sample size is (sum w)^2 / sum w^2 (Kong 1992): C when the weights are equal,
1 when one weight carries them all. Everything in log space, so weights of e^-1000 are fine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WeightSummary:
    """Per item (the weights' trailing shape): the estimate log mean w, its delta-method
    standard error and the weights' effective sample size."""

    log_mean: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor


def summarise(log_weights: torch.Tensor) -> WeightSummary:
    """Summarise ``log_weights`` of shape ``(C, *items)`` along its first axis."""
    count = log_weights.shape[0]
    first = torch.logsumexp(log_weights, 0)
    second = torch.logsumexp(2 * log_weights, 0)
    ess = torch.exp(2 * first - second)
    stderr = ((count / ess - 1.0).clamp(min=0.0) / count).sqrt()
    return WeightSummary(first - math.log(count), stderr, ess)

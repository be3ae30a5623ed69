"""Temperature schedules of the annealing path f_b(z) = p(z) p(x | z)^b, b from 0 to 1.

As diffusers' schedulers are swappable parts, a schedule here is only the list of inverse
temperatures 0 = b_0 < b_1 < ... < b_T = 1:

* ``"sigmoid"`` (Grosse et al. 2013, used by Wu et al. 2017 for decoder-based models):
  b_t = (s(t) - s(0)) / (s(T) - s(0)) with s(t) = sigmoid(delta (2t/T - 1)), delta = 4.
  It spends more temperatures at both ends, where the tempered targets change fastest
  relative to the prior (small b) and where the posterior sharpens (b near 1).
* ``"geometric"``: b_1, ..., b_T geometrically spaced from 1e-4 to 1 (Neal 2001's choice
  for widely different prior and posterior scales).
* ``"linear"``: b_t = t / T, the baseline.

Plain Python floats: a schedule has no device or dtype of its own.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from genppl.errors import ModelError

Schedule = Literal["sigmoid", "geometric", "linear"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)

#: The sigmoid schedule's steepness (Grosse et al. 2013's delta).
SIGMOID_DELTA = 4.0
#: The geometric schedule's first non-zero inverse temperature.
GEOMETRIC_START = 1e-4


def temperatures(schedule: str, num: int) -> tuple[float, ...]:
    """``num + 1`` inverse temperatures from exactly 0 to exactly 1 (``num`` >= 1)."""
    if num < 1:
        raise ModelError(f"num_temperatures must be >= 1, got {num}.")
    if schedule == "linear":
        inner = [t / num for t in range(1, num)]
    elif schedule == "sigmoid":
        s = [1.0 / (1.0 + math.exp(-SIGMOID_DELTA * (2.0 * t / num - 1.0)))
             for t in range(num + 1)]
        inner = [(s[t] - s[0]) / (s[num] - s[0]) for t in range(1, num)]
    elif schedule == "geometric":
        ratio = math.log(GEOMETRIC_START)
        inner = [math.exp(ratio * (num - t) / (num - 1)) for t in range(1, num)]
    else:
        raise ModelError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got "
                         f"{schedule!r}.")
    return (0.0, *inner, 1.0)

"""Weldon's Naples crabs, as fitted by Pearson (1894) with a two-component normal mixture.

1,000 crabs, "forehead" breadth to body length, grouped in 29 bins of width 0.004. The table
gives each bin's upper bound (the last bin is open above 0.6915). Pearson's own solution
(method of moments) is given for comparison.
"""

from __future__ import annotations

import torch

BIN_WIDTH = 0.004
#: Upper bounds 0.5835, 0.5875, ..., 0.6915 of the first 28 bins; the 29th is open.
UPPER_BOUNDS = tuple(round(0.5835 + BIN_WIDTH * k, 4) for k in range(28))
COUNTS = (1, 3, 5, 2, 7, 10, 13, 19, 20, 25, 40, 31, 60, 62, 54, 74, 84, 86, 96, 85, 75, 47,
          43, 24, 19, 9, 5, 0, 1)

#: Pearson's 1894 moment solution (weights, means, standard deviations) as usually quoted.
PEARSON_1894 = {"weights": (0.4145, 0.5855), "locs": (0.63262, 0.65604),
                "scales": (0.01788, 0.01250)}


def midpoints() -> tuple[float, ...]:
    """Bin midpoints, the convention used here: each bin's upper bound minus half a width;
    the open last bin is given the midpoint a closed bin of the same width would have."""
    uppers = (*UPPER_BOUNDS, round(UPPER_BOUNDS[-1] + BIN_WIDTH, 4))
    return tuple(round(u - BIN_WIDTH / 2, 4) for u in uppers)


def ratios(dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
           ) -> torch.Tensor:
    """The 1,000 observations, each crab at its bin's midpoint."""
    mids = torch.tensor(midpoints(), dtype=dtype, device=device)
    counts = torch.tensor(COUNTS, device=device)
    return mids.repeat_interleave(counts)

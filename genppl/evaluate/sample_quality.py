"""How good are a model's samples: scores of sample sets in the features of a network.

Likelihood bounds say how much probability a model gives the test digits; they say little
about what its samples look like. Here the samples and the test digits are both mapped to
the penultimate layer of the LeNet trained in the project (``digits_features``), and
compared by

* the **Fréchet distance** of Gaussians fitted to the two feature sets (Heusel et al. 2017,
  FID; with LeNet features, the Fréchet LeNet distance), which mixes fidelity and
  diversity into one number; and
* **precision and recall** of the sample manifold (Kynkäänniemi et al. 2019), which keep
  them apart: precision is the fraction of samples that fall inside the manifold of the
  real features (the union of balls reaching each real point's k-th nearest real
  neighbour), recall the fraction of real points inside the samples' manifold.

All statistics are computed in float64 whatever the features' dtype. Compare scores only at
equal sample counts: the Fréchet distance is biased upwards by few samples (the 4,000
training digits against the test digits, in the default features: 8.6 all together, 17.0
for the first 1,000), and precision can be high for junk whose features huddle inside the
ball of one odd real digit (binary noise: 0.55); recall and the distance expose it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from genppl.data import digits
from genppl.errors import ModelError
from genppl.evaluate import digits_features

#: The k of the k-nearest-neighbour balls (Kynkäänniemi et al. 2019 use 3).
NEIGHBOURS = 3
#: Rows of a distance matrix computed at once: memory ~ CHUNK x points.
CHUNK = 1024


class Moments(NamedTuple):
    """Mean and (unbiased) covariance of a feature set, float64."""

    mean: torch.Tensor
    covariance: torch.Tensor


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


class SampleQuality(NamedTuple):
    """The scores of a sample set against the test digits."""

    frechet_distance: float
    precision: float
    recall: float


def moments(features: torch.Tensor) -> Moments:
    """The Gaussian fit of ``features`` (rows are points): mean and covariance in float64."""
    points = _as_points(features, "features")
    if len(points) < 2:
        raise ValueError(f"features needs at least two rows to fit a covariance, not "
                         f"{len(points)}.")
    return Moments(points.mean(0), torch.cov(points.T).reshape(points.shape[1], -1))


def frechet_distance_of_moments(first: Moments, second: Moments) -> float:
    """The Fréchet (2-Wasserstein squared) distance of two Gaussians,
    |m1 - m2|^2 + tr C1 + tr C2 - 2 tr (C1^1/2 C2 C1^1/2)^1/2.

    tr (C1 C2)^1/2 is computed from the symmetric form C1^1/2 C2 C1^1/2 (same eigenvalues as
    C1 C2), whose eigenvalues ``eigvalsh`` finds accurately. Eigenvalues of these positive
    semi-definite matrices below rounding level are set to 0: a rank-deficient covariance
    (fewer points than features, a feature that is always 0) has exact zeros that rounding
    turns into ±1e-16, whose square roots would add ~1e-8 each."""
    first, second = (Moments(*(t.to(torch.float64) for t in m)) for m in (first, second))
    root = _psd_sqrt(first.covariance)
    cross = _above_rounding(torch.linalg.eigvalsh(root @ second.covariance @ root)).sqrt().sum()
    distance = ((first.mean - second.mean).square().sum() + first.covariance.trace()
                + second.covariance.trace() - 2 * cross)
    return distance.clamp(min=0).item()


def frechet_distance(first: torch.Tensor, second: torch.Tensor) -> float:
    """The Fréchet distance of Gaussians fitted to two feature sets (rows are points)."""
    return frechet_distance_of_moments(moments(first), moments(second))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = NEIGHBOURS
                     ) -> PrecisionRecall:
    """Kynkäänniemi et al.'s (2019) precision (fraction of ``fake`` inside the k-NN balls of
    ``real``) and recall (fraction of ``real`` inside the k-NN balls of ``fake``)."""
    real, fake = _as_points(real, "real"), _as_points(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake must have the same number of features, not "
                         f"{real.shape[1]} and {fake.shape[1]}.")
    for name, points in (("real", real), ("fake", fake)):
        if not 1 <= k < len(points):
            raise ValueError(f"k must be 1..{len(points) - 1} (fewer than the {len(points)} "
                             f"{name} points), not {k}.")
    return PrecisionRecall(_inside(fake, real, _radii(real, k)),
                           _inside(real, fake, _radii(fake, k)))


def frechet_lenet_distance(images: torch.Tensor, network: digits_features.LeNet | None = None,
                           reference: torch.Tensor | None = None) -> float:
    """The Fréchet distance of ``images`` (pixels in [0, 1]) to ``reference`` in the
    network's features; ``reference`` defaults to the 1,000 binarised test digits (what the
    models are fit to), ``network`` to the cached default feature network."""
    return frechet_distance(*_real_and_fake(images, network, reference))


def score(images: torch.Tensor, network: digits_features.LeNet | None = None,
          reference: torch.Tensor | None = None, k: int = NEIGHBOURS) -> SampleQuality:
    """Fréchet LeNet distance, precision and recall of ``images`` against ``reference``
    (defaults as in ``frechet_lenet_distance``)."""
    real, fake = _real_and_fake(images, network, reference)
    return SampleQuality(frechet_distance(real, fake), *precision_recall(real, fake, k))


def diagnostics(images: torch.Tensor, network: digits_features.LeNet | None = None
                ) -> dict[str, float | int]:
    """``score(images)`` as a leaderboard row's diagnostics (``Row.diagnostics``):
    ``fld``, ``precision``, ``recall`` and the number of ``samples`` they were computed on
    (distances compare only at equal counts)."""
    quality = score(images, network)
    return {"fld": quality.frechet_distance, "precision": quality.precision,
            "recall": quality.recall, "samples": len(images)}


def read_samples(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(images, labels or None)`` of a ``samples.npz`` file written by an image entry's
    ``genppl run NAME --out DIR`` (``Report.samples``: ``images`` N x 28 x 28 in [0, 1],
    ``labels`` optional), checked against that convention. Read without pickles."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not a readable samples.npz ({error}); write it with "
                         "`genppl run NAME --out DIR` or Report.samples.") from None
    if "images" not in arrays:
        raise ModelError(f"{path}: no array 'images' (it has {sorted(arrays)}); the convention "
                         "is images N x 28 x 28 in [0, 1] and optional labels (N,).")
    images = torch.as_tensor(arrays["images"]).to(torch.float64)
    if images.dim() != 3 or images.shape[1:] != (digits.SIDE, digits.SIDE) or len(images) < 2 \
            or not bool(((images >= 0) & (images <= 1)).all()):
        raise ModelError(f"{path}: images must be N x {digits.SIDE} x {digits.SIDE} (N >= 2) "
                         f"with values in [0, 1]; got shape {tuple(images.shape)}.")
    labels = arrays.get("labels")
    if labels is not None and labels.shape != (len(images),):
        raise ModelError(f"{path}: labels must be one per image, shape ({len(images)},); got "
                         f"{labels.shape}.")
    return images, None if labels is None else torch.as_tensor(labels)


def _real_and_fake(images: torch.Tensor, network: digits_features.LeNet | None,
                   reference: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The features of ``reference`` (default: the binarised test digits) and ``images``."""
    network = digits_features.load_or_train() if network is None else network
    reference = digits.binarised().test_images if reference is None else reference
    return (digits_features.features(reference, network),
            digits_features.features(images, network))


def _as_points(features: torch.Tensor, name: str) -> torch.Tensor:
    if features.dim() != 2:
        raise ValueError(f"{name} must be a matrix of points x features, not of shape "
                         f"{tuple(features.shape)}.")
    return features.to(torch.float64)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix, by its eigenvectors."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * _above_rounding(values).sqrt()) @ vectors.T


def _above_rounding(eigenvalues: torch.Tensor) -> torch.Tensor:
    """A positive semi-definite matrix's eigenvalues with those within rounding error of 0
    (relative to the largest, times the dimension) set to 0."""
    scale = eigenvalues.abs().max().clamp(min=torch.finfo(eigenvalues.dtype).tiny)
    tolerance = len(eigenvalues) * torch.finfo(eigenvalues.dtype).eps * scale
    return torch.where(eigenvalues > tolerance, eigenvalues, torch.zeros_like(eigenvalues))


def _distances(rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distances (not the matrix-product form, which rounds identical
    points to a small positive distance)."""
    return torch.cdist(rows, points, compute_mode="donot_use_mm_for_euclid_dist")


def _radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Each point's distance to its k-th nearest neighbour among the others."""
    return torch.cat([_distances(chunk, points).kthvalue(k + 1, dim=1).values
                      for chunk in points.split(CHUNK)])


def _inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """The fraction of ``queries`` within ``radii`` of at least one of ``centres``."""
    hits = torch.cat([(_distances(chunk, centres) <= radii).any(dim=1)
                      for chunk in queries.split(CHUNK)])
    return hits.double().mean().item()

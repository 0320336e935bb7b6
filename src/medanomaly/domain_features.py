"""A cheap, label-free appearance reference for the domain check: image statistics + a Mahalanobis distance.

Each preprocessed slice becomes a small vector (an 8x8 thumbnail, a 16-bin intensity histogram, intensity moments,
edge energy, dark/bright fractions). Training fits their mean and a shrunk covariance (Ledoit-Wolf) on the training
normals; the distance of held-out normals gives the bound. A Mahalanobis distance on features as an out-of-
distribution score follows Lee et al. 2018, https://arxiv.org/abs/1807.03888 (here on image statistics, so it works
for every method, with no backbone weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf

THUMBNAIL = 8
HISTOGRAM_BINS = 16
BOUND_QUANTILE = 0.99
BOUND_MARGIN = 2.0
MAX_FIT_ROWS = 4000


def embed(images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Image-statistics vectors of preprocessed slices.

    Args:
        images: (N, C, R, R) float in [0, 1] (colour is averaged to grey).
        chunk: Slices embedded at a time (bounds the memory used).

    Returns:
        (N, D) float64, D = 8 * 8 + 16 + 9.
    """
    parts = [_embed_chunk(images[start : start + chunk]) for start in range(0, len(images), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, THUMBNAIL**2 + HISTOGRAM_BINS + 9))


def _embed_chunk(images: np.ndarray) -> np.ndarray:
    grey = np.asarray(images, dtype=np.float32).mean(axis=1)
    n, size = grey.shape[0], grey.shape[-1]
    cell = max(size // THUMBNAIL, 1)
    cropped = grey[:, : cell * THUMBNAIL, : cell * THUMBNAIL]
    thumbnail = cropped.reshape(n, THUMBNAIL, cell, THUMBNAIL, cell).mean(axis=(2, 4)).reshape(n, -1)
    flat = grey.reshape(n, -1)
    histogram = np.stack([np.histogram(row, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] for row in flat]) / flat.shape[1]
    quantiles = np.quantile(flat, [0.05, 0.5, 0.95], axis=1).T
    edges = np.stack([np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)), np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))])
    extremes = np.stack([(flat < 0.05).mean(axis=1), (flat > 0.95).mean(axis=1)])
    moments = np.stack([flat.mean(axis=1), flat.std(axis=1)])
    return np.concatenate([thumbnail, histogram, quantiles, edges.T, extremes.T, moments.T], axis=1).astype(np.float64)


@dataclass
class AppearanceReference:
    """Mean and precision of the training normals' embeddings, with the distance bound from held-out normals.

    Attributes:
        mean: (D,) mean embedding.
        precision: (D, D) inverse of the shrunk covariance.
        bound: Distance above which a slice is unlike the training images.
        quantiles: Held-out normals' distance quantiles (``q50``, ``q90``, ``q99``, ``max``) and their count ``n``.
    """

    mean: np.ndarray
    precision: np.ndarray
    bound: float
    quantiles: dict[str, float]

    def distances(self, images: np.ndarray) -> np.ndarray:
        """(N,) Mahalanobis distances of preprocessed slices (N, C, R, R) to the training normals."""
        return self.feature_distances(embed(images))

    def feature_distances(self, features: np.ndarray) -> np.ndarray:
        """(N,) Mahalanobis distances of embeddings (N, D)."""
        centred = features - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, self.precision, centred), 0.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (float32 precision is plenty for a distance)."""
        return {
            "feature": "image_statistics_v1",
            "mean": np.round(self.mean, 6).tolist(),
            "precision": self.precision.astype(np.float32).tolist(),
            "bound": self.bound,
            "bound_rule": f"{BOUND_MARGIN} x quantile {BOUND_QUANTILE} of held-out normals",
            "quantiles": self.quantiles,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppearanceReference:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["precision"], dtype=np.float64),
            float(data["bound"]),
            dict(data.get("quantiles", {})),
        )


def fit_reference(
    train: np.ndarray, held_out: np.ndarray, random_state: int = 0, n_folds: int = 5
) -> AppearanceReference:
    """Fit the reference on training slices and bound it by out-of-sample distances of normals.

    The bound comes from distances the fit has not seen: the held-out normals', and each training slice's distance
    under a fit on the other folds (``n_folds``-fold), so small training sets do not get an optimistic bound.

    Args:
        train: (N, C, R, R) training normal slices in [0, 1]; at most 4000 rows are used (seeded sample).
        held_out: (M, C, R, R) held-out normal slices (may be empty).
        random_state: Seed of the subsample and of the folds.
        n_folds: Folds of the out-of-sample training distances.
    """
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(len(train), MAX_FIT_ROWS, replace=False)) if len(train) > MAX_FIT_ROWS else slice(None)
    features = embed(train[rows])
    reference = _fit(features)
    n_folds = min(n_folds, len(features) // 2)
    folds = rng.permutation(len(features)) % max(n_folds, 1)
    if n_folds < 2:  # too few slices for folds (2 or 3): in-sample distances (optimistic)
        out_of_sample = [reference.feature_distances(features)]
    else:
        out_of_sample = [_fit(features[folds != k]).feature_distances(features[folds == k]) for k in range(n_folds)]
    held = reference.distances(held_out) if len(held_out) else np.zeros(0)
    distances = np.concatenate([*out_of_sample, held])
    reference.quantiles = {
        "q50": float(np.quantile(distances, 0.5)),
        "q90": float(np.quantile(distances, 0.9)),
        "q99": float(np.quantile(distances, 0.99)),
        "max": float(distances.max()),
        "n": int(len(distances)),
        "n_held_out": int(len(held)),
    }
    reference.bound = float(BOUND_MARGIN * np.quantile(distances, BOUND_QUANTILE))
    return reference


def _fit(features: np.ndarray) -> AppearanceReference:
    covariance = LedoitWolf().fit(features).covariance_
    return AppearanceReference(features.mean(axis=0), np.linalg.pinv(covariance), 0.0, {})

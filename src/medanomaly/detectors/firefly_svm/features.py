"""Hand-crafted image features of the Firefly-SVM method: grey-level co-occurrence texture, intensity statistics, HOG.

Texture and HOG come from scikit-image, the moments from numpy; the features of an image depend only on its pixels
(no randomness, no state), so the same image always gives the same vector. Haralick et al., "Textural features for image
classification", IEEE TSMC 1973 (co-occurrence texture); Dalal & Triggs, CVPR 2005 (HOG).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.feature import graycomatrix, graycoprops, hog
from torch import Tensor

GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
PERCENTILES = (5, 25, 50, 75, 95)
INTENSITY_NAMES = ("mean", "std", "skewness", "kurtosis", "entropy", *(f"p{q}" for q in PERCENTILES))


@dataclass(frozen=True)
class TextureFeatures:
    """Settings of the feature vector.

    Attributes:
        image_size: Side the grey image is resized to before any feature (pixels).
        levels: Grey levels of the co-occurrence matrix (the image is quantised to them).
        distances: Pixel offsets of the co-occurrence matrix; each property is averaged over 4 angles per distance.
        hog_cells: HOG cells per side (cell size = ``image_size // hog_cells``).
        orientations: HOG orientation bins.
        histogram_bins: Bins of the intensity histogram behind the entropy.
    """

    image_size: int = 128
    levels: int = 32
    distances: Sequence[int] = (1, 2, 4)
    hog_cells: int = 4
    orientations: int = 9
    histogram_bins: int = 64

    @property
    def names(self) -> list[str]:
        """One name per feature, in vector order."""
        glcm = [f"glcm_{prop}_d{distance}" for distance in self.distances for prop in GLCM_PROPS]
        cells = [f"hog_r{r}c{c}_o{o}" for r in range(self.hog_cells) for c in range(self.hog_cells)
                 for o in range(self.orientations)]  # fmt: skip
        return glcm + [f"intensity_{name}" for name in INTENSITY_NAMES] + cells

    def __call__(self, images: Tensor) -> np.ndarray:
        """Feature vectors of a batch.

        Args:
            images: (N, C, H, W) float in [0, 1]; colour channels are averaged to grey.

        Returns:
            (N, F) float64 array, F = ``len(self.names)``, all finite.
        """
        if images.ndim != 4:
            msg = f"texture features: expected images (N, C, H, W), got {tuple(images.shape)}"
            raise ValueError(msg)
        grey = resize_grey(images, int(self.image_size))
        return np.stack([self.single(image) for image in grey]) if len(grey) else np.zeros((0, len(self.names)))

    def single(self, image: np.ndarray) -> np.ndarray:
        """(F,) float64 features of one (S, S) grey image in [0, 1]."""
        parts = [self._glcm(image), _intensity(image, self.histogram_bins), self._hog(image)]
        return np.nan_to_num(np.concatenate(parts), nan=0.0, posinf=0.0, neginf=0.0)

    def _glcm(self, image: np.ndarray) -> np.ndarray:
        quantised = np.clip(np.floor(image * self.levels), 0, self.levels - 1).astype(np.uint8)
        matrix = graycomatrix(quantised, list(self.distances), list(GLCM_ANGLES), levels=self.levels,
                              symmetric=True, normed=True)  # fmt: skip
        # (n_distances, n_angles) per property -> mean over angles: rotation-tolerant, one value per distance
        values = np.stack([graycoprops(matrix, prop).mean(axis=1) for prop in GLCM_PROPS], axis=1)
        return values.reshape(-1)

    def _hog(self, image: np.ndarray) -> np.ndarray:
        cell = max(image.shape[0] // self.hog_cells, 1)
        vector = hog(image, orientations=self.orientations, pixels_per_cell=(cell, cell), cells_per_block=(1, 1),
                     feature_vector=True)  # fmt: skip
        expected = self.hog_cells**2 * self.orientations
        return np.resize(vector, expected) if vector.size != expected else vector


def resize_grey(images: Tensor, size: int) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, size, size) float64 grey (channel mean, antialiased bilinear resize)."""
    grey = images.detach().to("cpu", torch.float32).mean(dim=1, keepdim=True)
    if tuple(grey.shape[-2:]) != (size, size):
        grey = F.interpolate(grey, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return grey[:, 0].clamp(0.0, 1.0).double().numpy()


def _intensity(image: np.ndarray, bins: int) -> np.ndarray:
    """Mean, std, skewness, kurtosis (Fisher, biased: scipy.stats' defaults), histogram entropy (bits), percentiles.

    The moments are written out in numpy (scipy.stats' per-call overhead dominated at small image sizes).
    """
    pixels = image.reshape(-1)
    mean, centred = pixels.mean(), pixels - pixels.mean()
    m2 = float(np.mean(centred**2))
    flat = m2 < 1e-24
    skewness = 0.0 if flat else float(np.mean(centred**3)) / m2**1.5
    kurtosis = 0.0 if flat else float(np.mean(centred**4)) / m2**2 - 3.0
    histogram, _ = np.histogram(pixels, bins=bins, range=(0.0, 1.0))
    p = histogram[histogram > 0] / max(histogram.sum(), 1)
    entropy = float(-(p * np.log2(p)).sum())
    percentiles = np.percentile(pixels, PERCENTILES)
    return np.array([mean, np.sqrt(m2), skewness, kurtosis, entropy, *percentiles], dtype=np.float64)

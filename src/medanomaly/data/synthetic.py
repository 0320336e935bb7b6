"""Synthetic chest-like phantoms with planted lesions of known masks, for tests and the demo.

A phantom is a body ellipse with two dark lungs, a mediastinum, a spine and ribs, smooth texture and noise, each
anatomy part jittered per image. An abnormal phantom adds one or more bright nodules inside the lungs; the mask
marks them exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

ABNORMAL_LABEL = "LESION"
NORMAL_LABEL = "NORMAL"


def _ellipse(rows: np.ndarray, cols: np.ndarray, center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    return ((rows - center[0]) / radii[0]) ** 2 + ((cols - center[1]) / radii[1]) ** 2 <= 1.0


def _lungs(rows: np.ndarray, cols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lungs = np.zeros(rows.shape, dtype=bool)
    for side in (-1, 1):
        center = (0.48 + rng.normal(0, 0.015), 0.5 + side * (0.19 + rng.normal(0, 0.01)))
        radii = (0.27 + rng.normal(0, 0.015), 0.12 + rng.normal(0, 0.008))
        lungs |= _ellipse(rows, cols, center, radii)
    return lungs


def make_phantom(
    rng: np.random.Generator,
    size: int = 64,
    lesion: bool = False,
    n_lesions: int = 1,
    lesion_radius: tuple[float, float] = (0.05, 0.09),
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom.

    Args:
        rng: Source of all randomness.
        size: Side in pixels.
        lesion: Plant nodules inside the lungs.
        n_lesions: How many nodules when ``lesion``.
        lesion_radius: Range of nodule radii, as fractions of the image side.

    Returns:
        (size, size) float32 image in [0, 1] and (size, size) uint8 {0, 1} lesion mask.
    """
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.zeros((size, size), np.float32)
    body = _ellipse(rows, cols, (0.5 + rng.normal(0, 0.01), 0.5), (0.44 + rng.normal(0, 0.01), 0.42))
    image[body] = 0.55
    lungs = _lungs(rows, cols, rng)
    image[lungs] = 0.18
    for k in range(6):  # ribs: faint bright arcs across the lungs
        arc = np.abs(rows - (0.26 + 0.085 * k + 0.03 * np.cos(6 * (cols - 0.5)) + rng.normal(0, 0.004))) < 0.012
        image[arc & body] += 0.12
    image[_ellipse(rows, cols, (0.58, 0.47 + rng.normal(0, 0.01)), (0.12, 0.09))] = 0.62  # heart
    image[(np.abs(cols - 0.5) < 0.035) & body] = 0.85  # spine
    texture = gaussian_filter(rng.normal(0, 1, (size, size)).astype(np.float32), sigma=size / 32)
    image += 0.03 * texture / (texture.std() + 1e-6) * body
    mask = np.zeros((size, size), np.uint8)
    if lesion:
        mask = _plant_lesions(image, lungs, rows, cols, rng, n_lesions, lesion_radius)
    image += rng.normal(0, 0.015, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), mask


def _plant_lesions(image, lungs, rows, cols, rng, n_lesions, lesion_radius) -> np.ndarray:
    mask = np.zeros(image.shape, np.uint8)
    candidates = np.argwhere(lungs)
    for _ in range(n_lesions):
        for _attempt in range(20):
            center_rc = candidates[rng.integers(len(candidates))] / image.shape[0]
            radii = (rng.uniform(*lesion_radius), rng.uniform(*lesion_radius))
            nodule = _ellipse(rows, cols, tuple(center_rc), radii)
            if (nodule & lungs).sum() >= 0.8 * nodule.sum():
                break
        distance = ((rows - center_rc[0]) / radii[0]) ** 2 + ((cols - center_rc[1]) / radii[1]) ** 2
        image += np.where(nodule, 0.45 * (1.0 - 0.5 * distance), 0.0).astype(np.float32)
        mask |= nodule.astype(np.uint8)
    return mask


def make_phantom_set(
    n_normal: int, n_abnormal: int, size: int = 64, seed: int = 0, lesion_radius: tuple[float, float] = (0.05, 0.09)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normals then abnormals (nodule radii drawn from ``lesion_radius``, fractions of the side).

    Returns:
        images (N, 1, size, size) float32 in [0, 1], labels (N,) {0, 1}, masks (N, size, size) uint8.
    """
    rng = np.random.default_rng(seed)
    pairs = [
        make_phantom(rng, size, lesion=i >= n_normal, lesion_radius=lesion_radius) for i in range(n_normal + n_abnormal)
    ]
    images = np.stack([image for image, _ in pairs])[:, None]
    masks = np.stack([mask for _, mask in pairs])
    labels = np.array([0] * n_normal + [1] * n_abnormal, dtype=np.int64)
    return images, labels, masks


def make_phantom_volume(
    rng: np.random.Generator, n_slices: int = 8, size: int = 64, lesion: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A stack of phantom slices; an abnormal volume has a nodule on a few consecutive middle slices.

    Returns:
        (S, size, size) float32 volume in [0, 1] and (S, size, size) uint8 mask.
    """
    slices = [make_phantom(rng, size) for _ in range(n_slices)]
    volume = np.stack([image for image, _ in slices])
    mask = np.zeros(volume.shape, np.uint8)
    if lesion:
        middle = n_slices // 2
        _, nodule_mask = make_phantom(rng, size, lesion=True)
        for index in range(max(0, middle - 1), min(n_slices, middle + 2)):
            volume[index] = np.clip(volume[index] + 0.45 * nodule_mask, 0, 1)
            mask[index] = nodule_mask
    return volume, mask


def write_phantom_dataset(
    root: str | Path,
    n_train: int = 200,
    n_test_normal: int = 40,
    n_test_abnormal: int = 40,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a ``<split>/<label>/`` PNG data set (NORMAL / LESION) plus ``masks/test/LESION/`` ground truth."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan = [("train", NORMAL_LABEL, n_train, False), ("val", NORMAL_LABEL, max(4, n_train // 10), False)]
    plan += [("test", NORMAL_LABEL, n_test_normal, False), ("test", ABNORMAL_LABEL, n_test_abnormal, True)]
    for split, label, count, lesion in plan:
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, mask = make_phantom(rng, size, lesion=lesion)
            name = f"{split}_{label.lower()}_{index:04d}.png"
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / name)
            if lesion:
                mask_dir = root / "masks" / split / label
                mask_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask * 255).save(mask_dir / name)
    return root

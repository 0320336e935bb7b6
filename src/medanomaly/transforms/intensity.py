"""Intensity transforms: windowing (CT), percentile normalisation (X-ray/MR), histogram equalisation / CLAHE."""

from __future__ import annotations

import numpy as np
from skimage import exposure

#: (center, width) in HU of the usual CT display windows.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
}


def parse_window(spec: str, file_window: tuple[float, float] | None = None) -> tuple[float, float]:
    """Turn a window spec into (center, width).

    Args:
        spec: A preset name (``lung``, ``mediastinum``, ``abdomen``, ``brain``, ``bone``), ``dicom`` for the file's
            own window, or ``"CENTER,WIDTH"``.
        file_window: The (center, width) stored in the file, used by ``dicom``.
    """
    key = spec.strip().lower()
    if key in WINDOW_PRESETS:
        return WINDOW_PRESETS[key]
    if key == "dicom":
        if file_window is None:
            msg = "window 'dicom' asked, but the file holds no WindowCenter/WindowWidth; choose a preset instead"
            raise ValueError(msg)
        return float(file_window[0]), float(file_window[1])
    try:
        center, width = (float(part) for part in key.split(","))
    except ValueError:
        msg = f"unknown window {spec!r}: use one of {', '.join(WINDOW_PRESETS)}, 'dicom' or 'CENTER,WIDTH'"
        raise ValueError(msg) from None
    if width <= 0:
        msg = f"window width must be positive, got {width}"
        raise ValueError(msg)
    return center, width


def apply_window(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window/level to [0, 1] (values outside the window are clipped)."""
    low = center - width / 2.0
    return np.clip((pixels.astype(np.float32) - low) / width, 0.0, 1.0)


def percentile_normalize(pixels: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Scale so that the ``lower``/``upper`` percentiles map to 0/1, clipped; constant images become 0."""
    values = pixels.astype(np.float32)
    low, high = np.percentile(values, [lower, upper])
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def equalize(image: np.ndarray, method: str = "none", clip_limit: float = 0.01) -> np.ndarray:
    """Histogram equalisation of a [0, 1] image (H, W) or (H, W, C).

    Args:
        image: Values in [0, 1].
        method: ``none``, ``hist`` (global) or ``clahe`` (contrast-limited adaptive).
        clip_limit: CLAHE clip limit (skimage's convention).
    """
    if method == "none":
        return image
    if method == "hist":
        return exposure.equalize_hist(image).astype(np.float32)
    if method == "clahe":
        return exposure.equalize_adapthist(image, clip_limit=clip_limit).astype(np.float32)
    msg = f"unknown equalisation {method!r}: use none, hist or clahe"
    raise ValueError(msg)

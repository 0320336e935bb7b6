"""Threshold-based organ masks that decide where AnatPaste may paste a synthetic lesion.

No learned segmentation: a global threshold plus scikit-image morphology, good enough to keep fake lesions inside
the organ (the point of AnatPaste: anomalies that look anatomically plausible). Masks are registered by name, so a
detector's ``organ_mask`` hyper-parameter stays a JSON-able string; add your own with :func:`register_organ_mask`.

Built in:
    ``lung``: chest X-ray lung fields: the dark region inside the body (Otsu threshold of the smoothed image,
        border-touching air removed, the two largest components, holes filled).
    ``body``: CT/MR slices: the bright foreground (Otsu), its largest component, holes filled.
    ``none``: the whole image (plain CutPaste-style pasting).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import disk
from skimage.segmentation import clear_border

#: A mask function maps a (H, W) float image in [0, 1] to a (H, W) bool mask.
OrganMask = Callable[[np.ndarray], np.ndarray]
_MASKS: dict[str, OrganMask] = {}
#: A mask covering less than this fraction of the image is not trusted: the whole image is used instead.
MIN_FRACTION = 0.02


def register_organ_mask(name: str) -> Callable[[OrganMask], OrganMask]:
    """Decorator registering a mask function under ``name`` (unique)."""

    def decorator(function: OrganMask) -> OrganMask:
        if name in _MASKS:
            msg = f"an organ mask named {name!r} is already registered"
            raise ValueError(msg)
        _MASKS[name] = function
        return function

    return decorator


def available_organ_masks() -> list[str]:
    """Registered mask names, sorted."""
    return sorted(_MASKS)


def get_organ_mask(name: str) -> OrganMask:
    """The mask function registered as ``name``; ValueError naming the choices otherwise."""
    if name not in _MASKS:
        msg = f"unknown organ_mask {name!r}; available: {', '.join(available_organ_masks())}"
        raise ValueError(msg)
    return _MASKS[name]


def organ_masks(images: np.ndarray, name: str) -> np.ndarray:
    """Masks of a batch, falling back to the whole image where a mask is (nearly) empty.

    Args:
        images: (N, C, H, W) float in [0, 1] (channels averaged to grey).
        name: A registered mask name.

    Returns:
        (N, H, W) bool.
    """
    function = get_organ_mask(name)
    grey = np.asarray(images, dtype=np.float32).mean(axis=1)
    masks = np.stack([np.asarray(function(image), dtype=bool) for image in grey]) if len(grey) else grey.astype(bool)
    small = masks.reshape(len(masks), -1).mean(axis=1) < MIN_FRACTION
    masks[small] = True
    return masks


@register_organ_mask("none")
def full_mask(image: np.ndarray) -> np.ndarray:
    """Everything: (H, W) all True."""
    return np.ones(image.shape, dtype=bool)


@register_organ_mask("body")
def body_mask(image: np.ndarray) -> np.ndarray:
    """Bright foreground of a CT/MR slice: Otsu threshold, largest component, holes filled; (H, W) bool."""
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma=max(image.shape) / 128)
    if np.ptp(smooth) < 1e-6:
        return np.ones(image.shape, dtype=bool)
    foreground = _open(smooth > threshold_otsu(smooth), disk(_radius(image, 1 / 64)))
    return ndimage.binary_fill_holes(_largest(foreground, 1))


@register_organ_mask("lung")
def lung_mask(image: np.ndarray) -> np.ndarray:
    """Lung fields of a frontal chest X-ray: the large dark regions of the chest's centre; (H, W) bool.

    The smoothed image is split at the Otsu threshold of its central part (lungs against mediastinum, bone and
    soft tissue). Dark components touching the border (air around the body) are dropped; when that leaves almost
    nothing (the lungs merge with the air beside the arms), a thin frame is cut away instead and only components
    whose centre lies well inside the image are kept. The two largest, closed and hole-filled, are the lungs.
    """
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma=max(image.shape) / 128)
    height, width = smooth.shape
    centre = smooth[height // 8 : height - height // 8, width // 8 : width - width // 8]
    if np.ptp(centre) < 1e-6:
        return np.ones(image.shape, dtype=bool)
    dark = _open(smooth < threshold_otsu(centre), disk(_radius(image, 1 / 64)))
    inside = clear_border(dark)
    if inside.mean() < 2 * MIN_FRACTION:
        inside = _central_components(dark)
    lungs = _close(_largest(inside, 2), disk(_radius(image, 1 / 32)))
    return ndimage.binary_fill_holes(lungs)


def _central_components(dark: np.ndarray) -> np.ndarray:
    """Components of ``dark`` (a thin frame cut away) whose centroid lies in the central 76 % of each axis."""
    height, width = dark.shape
    dark = dark.copy()
    frame = _radius(dark, 0.04)
    dark[:frame], dark[-frame:], dark[:, :frame], dark[:, -frame:] = False, False, False, False
    labels = label(dark, connectivity=1)
    for region in regionprops(labels):
        row, col = region.centroid
        if not (0.12 * height < row < 0.88 * height and 0.12 * width < col < 0.88 * width):
            labels[labels == region.label] = 0
    return labels > 0


def _largest(mask: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest 8-connected components of ``mask``."""
    labels = label(mask, connectivity=2)
    if labels.max() == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes)[::-1][:count]
    keep = keep[sizes[keep] > 0]
    return np.isin(labels, keep)


def _radius(image: np.ndarray, fraction: float) -> int:
    """A structuring-element radius of ``fraction`` of the image side, at least 1 pixel."""
    return max(int(round(min(image.shape) * fraction)), 1)


def _open(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    return ndimage.binary_opening(mask, structure=footprint)


def _close(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Closing that does not erode at the image border (scipy treats outside pixels as background)."""
    pad = footprint.shape[0]
    padded = np.pad(mask, pad, mode="edge")
    return ndimage.binary_closing(padded, structure=footprint)[pad:-pad, pad:-pad]

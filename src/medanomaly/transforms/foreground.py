"""Label-free foreground masks: where an image holds anatomy, so that maps and scores ignore the rest.

No learned segmentation: a global threshold plus scikit-image/scipy morphology. One module owns these masks: the
anomaly scores of the reconstruction methods restrict themselves to them (background, padding, borders and burnt-in
text then do not dominate), and AnatPaste pastes its synthetic lesions inside them. Masks are registered by name, so
a detector's hyper-parameter stays a JSON-able string; add your own with :func:`register_mask`.

Built in:
    ``lung``: chest X-ray lung fields: the dark region inside the body (Otsu threshold of the smoothed image,
        border-touching air removed, the two largest components, holes filled).
    ``body``: CT/MR slices: the bright foreground (Otsu), its largest component, holes filled.
    ``outline``: the head or body outline of a CT/MR slice, for scoring: tissue above half the Otsu threshold (so dim
        tissue counts), its large components, their convex hull (so lungs and ventricles inside count), eroded by 1/32
        of the side so that the outline's edge, which every reconstruction misses a little, is left out.
    ``auto``: ``outline`` when the image's outer frame is dark background (a CT/MR slice, a padded image), else the
        whole image (a radiograph filling its field).
    ``none``: the whole image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import convex_hull_image, disk
from skimage.segmentation import clear_border

#: A mask function maps a (H, W) float image in [0, 1] to a (H, W) bool mask.
MaskFunction = Callable[[np.ndarray], np.ndarray]
_MASKS: dict[str, MaskFunction] = {}
#: The outer frame is background when its median is below this (images in [0, 1]).
DARK_FRAME = 0.1
#: A mask covering less than this fraction of the image is not trusted: the whole image is used instead.
MIN_FRACTION = 0.02


def register_mask(name: str) -> Callable[[MaskFunction], MaskFunction]:
    """Decorator registering a mask function under ``name`` (unique)."""

    def decorator(function: MaskFunction) -> MaskFunction:
        if name in _MASKS:
            msg = f"a mask named {name!r} is already registered"
            raise ValueError(msg)
        _MASKS[name] = function
        return function

    return decorator


def available_masks() -> list[str]:
    """Registered mask names, sorted."""
    return sorted(_MASKS)


def get_mask(name: str) -> MaskFunction:
    """The mask function registered as ``name``; ValueError naming the choices otherwise."""
    if name not in _MASKS:
        msg = f"unknown mask (foreground, organ_mask) {name!r}; available: {', '.join(available_masks())}"
        raise ValueError(msg)
    return _MASKS[name]


def masks(images: np.ndarray, name: str) -> np.ndarray:
    """Masks of a batch, falling back to the whole image where a mask is (nearly) empty.

    Args:
        images: (N, C, H, W) float in [0, 1] (channels averaged to grey).
        name: A registered mask name.

    Returns:
        (N, H, W) bool.
    """
    function = get_mask(name)
    grey = np.asarray(images, dtype=np.float32).mean(axis=1)
    found = np.stack([np.asarray(function(image), dtype=bool) for image in grey]) if len(grey) else grey.astype(bool)
    small = found.reshape(len(found), -1).mean(axis=1) < MIN_FRACTION
    found[small] = True
    return found


@register_mask("none")
def full_mask(image: np.ndarray) -> np.ndarray:
    """Everything: (H, W) all True."""
    return np.ones(image.shape, dtype=bool)


@register_mask("body")
def body_mask(image: np.ndarray) -> np.ndarray:
    """Bright foreground of a CT/MR slice: Otsu threshold, largest component, holes filled; (H, W) bool."""
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma=max(image.shape) / 128)
    if np.ptp(smooth) < 1e-6:
        return np.ones(image.shape, dtype=bool)
    foreground = _open(smooth > threshold_otsu(smooth), disk(_radius(image, 1 / 64)))
    return ndimage.binary_fill_holes(_largest(foreground, 1))


@register_mask("outline")
def outline_mask(image: np.ndarray) -> np.ndarray:
    """Convex outline of the anatomy in a CT/MR slice, eroded by 1/32 of the side; (H, W) bool.

    Tissue is what lies above half the Otsu threshold of the smoothed image; components smaller than
    ``MIN_FRACTION`` of the image (burnt-in text, noise) are dropped, except the largest. The convex hull of the rest
    also covers dark structures the tissue surrounds only in part (lungs of a cropped chest CT, ventricles).
    """
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma=max(image.shape) / 128)
    if np.ptp(smooth) < 1e-6:
        return np.ones(image.shape, dtype=bool)
    tissue = _open(smooth > 0.5 * threshold_otsu(smooth), disk(_radius(image, 1 / 64)))
    labels = label(tissue, connectivity=2)
    if labels.max() == 0:
        return tissue
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    kept = np.isin(labels, np.flatnonzero((sizes >= MIN_FRACTION * tissue.size) | (sizes == sizes.max())))
    return ndimage.binary_erosion(convex_hull_image(kept), structure=disk(_radius(image, 1 / 32)))


@register_mask("auto")
def auto_mask(image: np.ndarray) -> np.ndarray:
    """``outline`` when the outer frame (1/16 of the side) is dark background, else the whole image; (H, W) bool."""
    return outline_mask(image) if has_dark_frame(image) else full_mask(image)


def has_dark_frame(image: np.ndarray) -> bool:
    """Whether the outer frame of an (H, W) [0, 1] image is mostly background (median below ``DARK_FRAME``)."""
    width = _radius(image, 1 / 16)
    frame = np.concatenate([image[:width].ravel(), image[-width:].ravel(), image[:, :width].ravel(),
                            image[:, -width:].ravel()])  # fmt: skip
    return bool(np.median(frame) < DARK_FRAME)


@register_mask("lung")
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

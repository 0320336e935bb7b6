"""Anomaly-map post-processing: median filter, slice aggregation, regions ("findings"), overlays.

Median filtering works in 2D, or in 3D across the slices of a volume.

Median filtering of residual maps follows Baur et al., "Autoencoders for unsupervised anomaly segmentation in
brain MR images: a comparative study", Medical Image Analysis 69, 2021 (https://arxiv.org/abs/2004.03271).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

_SLICE_SIZE = 3  # median-filter extent across slices in a volume


def _check_map(anomaly_map: np.ndarray, name: str = "anomaly_map") -> np.ndarray:
    """Return ``anomaly_map`` as a float32 (H, W) or (S, H, W) array, else raise ValueError."""
    array = np.asarray(anomaly_map, dtype=np.float32)
    if array.ndim not in (2, 3):
        msg = f"{name} must be (H, W) or (S, H, W), got shape {array.shape}"
        raise ValueError(msg)
    return array


def filter_map(anomaly_map: np.ndarray, size: int = 5, *, volume: bool | None = None) -> np.ndarray:
    """Median-filter an anomaly map, in 2D or in 3D across the slices of a volume.

    Args:
        anomaly_map: (H, W) map or (S, H, W) stack of slice maps.
        size: In-plane window size in pixels; ``size <= 1`` returns an unfiltered copy.
        volume: For (S, H, W) input, filter in 3D (window of 3 slices when ``S >= 3`` and ``size >= 3``) rather
            than slice by slice. Default: ``S > 1``.

    Returns:
        Filtered map, same shape, float32.

    Raises:
        ValueError: If the map is neither 2D nor 3D.
    """
    array = _check_map(anomaly_map)
    if size <= 1:
        return array.copy()
    if array.ndim == 2:
        return ndimage.median_filter(array, size=size, mode="nearest")
    n_slices = array.shape[0]
    in_volume = n_slices > 1 if volume is None else volume
    depth = _SLICE_SIZE if in_volume and n_slices >= _SLICE_SIZE and size >= _SLICE_SIZE else 1
    return ndimage.median_filter(array, size=(depth, size, size), mode="nearest")


def topk_mean(values: np.ndarray, fraction: float = 0.01) -> float:
    """Mean of the largest ``fraction`` of the values (at least one value).

    Args:
        values: Array of any shape, e.g. an (H, W) anomaly map.
        fraction: Share of values in (0, 1] to average.

    Returns:
        The mean of the top ``ceil(fraction * n)`` values.

    Raises:
        ValueError: If ``values`` is empty or ``fraction`` is outside (0, 1].
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        msg = "cannot take the top-k mean of an empty array"
        raise ValueError(msg)
    if not 0.0 < fraction <= 1.0:
        msg = f"fraction must lie in (0, 1], got {fraction}"
        raise ValueError(msg)
    k = max(1, math.ceil(fraction * flat.size - 1e-9))
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())


def aggregate_slices(slice_scores: np.ndarray, how: str = "topk", k: int | float = 0.1) -> float:
    """Aggregate the per-slice scores of a volume into one volume score.

    Args:
        slice_scores: (S,) slice scores, higher = more anomalous.
        how: ``"max"``, ``"mean"`` or ``"topk"`` (mean of the k highest slice scores).
        k: For ``"topk"``: an int is a count (clipped to S), a float in (0, 1] a fraction of S; at least 1 slice.

    Returns:
        The volume score.

    Raises:
        ValueError: On empty or NaN scores, an unknown ``how`` or an invalid ``k``.
    """
    scores = np.asarray(slice_scores, dtype=np.float64).ravel()
    if scores.size == 0 or np.isnan(scores).any():
        msg = f"slice_scores must be non-empty and free of NaN, got {scores.size} value(s)"
        raise ValueError(msg)
    if how == "max":
        return float(scores.max())
    if how == "mean":
        return float(scores.mean())
    if how != "topk":
        msg = f"unknown slice aggregation {how!r}; expected 'max', 'mean' or 'topk'"
        raise ValueError(msg)
    if isinstance(k, bool) or not isinstance(k, int | float | np.integer | np.floating):
        msg = f"k must be an int count or a float fraction, got {k!r}"
        raise ValueError(msg)
    if isinstance(k, int | np.integer):
        if k < 1:
            msg = f"k must be at least 1 slice, got {k}"
            raise ValueError(msg)
        count = min(int(k), scores.size)
        return float(np.sort(scores)[scores.size - count :].mean())
    return topk_mean(scores, float(k))


@dataclass(frozen=True)
class Finding:
    """One connected anomalous region in one slice.

    Attributes:
        slice_index: Slice the region lies in (0 for a 2D map).
        bbox: (row0, col0, row1, col1), half-open, in pixels.
        centroid: (row, col) centre of mass of the region's pixels (unweighted).
        area_px: Number of pixels.
        area_mm2: Area in mm² when the pixel spacing is known, else None.
        mean_score: Mean anomaly-map value inside the region.
        max_score: Maximum anomaly-map value inside the region.
    """

    slice_index: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area_px: int
    area_mm2: float | None
    mean_score: float
    max_score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able representation (tuples become lists)."""
        return {
            "slice_index": int(self.slice_index),
            "bbox": [int(v) for v in self.bbox],
            "centroid": [float(v) for v in self.centroid],
            "area_px": int(self.area_px),
            "area_mm2": None if self.area_mm2 is None else float(self.area_mm2),
            "mean_score": float(self.mean_score),
            "max_score": float(self.max_score),
        }


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _slice_findings(
    slice_map: np.ndarray, slice_index: int, threshold: float, min_area: int, pixel_mm2: float | None
) -> list[Finding]:
    """Find the 8-connected regions of ``slice_map > threshold`` in one (H, W) slice."""
    labels, n_regions = ndimage.label(slice_map > threshold, structure=_EIGHT_CONNECTED)
    if n_regions == 0:
        return []
    index = np.arange(1, n_regions + 1)
    areas = ndimage.sum_labels(np.ones_like(slice_map), labels, index)
    means = ndimage.mean(slice_map, labels, index)
    maxima = ndimage.maximum(slice_map, labels, index)
    centroids = ndimage.center_of_mass(np.ones_like(slice_map), labels, index)
    findings = []
    for i, box in enumerate(ndimage.find_objects(labels)):
        area = int(round(areas[i]))
        if box is None or area < min_area:
            continue
        findings.append(
            Finding(
                slice_index=slice_index,
                bbox=(box[0].start, box[1].start, box[0].stop, box[1].stop),
                centroid=(float(centroids[i][0]), float(centroids[i][1])),
                area_px=area,
                area_mm2=None if pixel_mm2 is None else area * pixel_mm2,
                mean_score=float(means[i]),
                max_score=float(maxima[i]),
            )
        )
    return findings


def find_regions(
    anomaly_map: np.ndarray,
    threshold: float,
    *,
    min_area: int = 4,
    spacing: tuple[float, float] | None = None,
    max_findings: int = 20,
) -> list[Finding]:
    """Segment an anomaly map into findings: threshold, then 8-connected components slice by slice.

    Args:
        anomaly_map: (H, W) map or (S, H, W) stack of slice maps.
        threshold: Pixels with ``value > threshold`` are anomalous (the model's ``postprocessing.region_threshold``).
        min_area: Regions with fewer pixels are dropped.
        spacing: (row, col) pixel spacing in mm, to report ``area_mm2``.
        max_findings: Keep at most this many findings.

    Returns:
        Findings sorted by ``max_score``, highest first.

    Raises:
        ValueError: If the map is neither 2D nor 3D or ``spacing`` is not two positive numbers.
    """
    array = _check_map(anomaly_map)
    volume = array[None] if array.ndim == 2 else array
    pixel_mm2 = None
    if spacing is not None:
        if len(spacing) < 2 or min(float(spacing[0]), float(spacing[1])) <= 0:
            msg = f"spacing must be (row_mm, col_mm) with positive values, got {spacing!r}"
            raise ValueError(msg)
        pixel_mm2 = float(spacing[0]) * float(spacing[1])
    findings = []
    for index, slice_map in enumerate(volume):
        findings.extend(_slice_findings(slice_map, index, float(threshold), min_area, pixel_mm2))
    findings.sort(key=lambda f: f.max_score, reverse=True)
    if len(findings) > max_findings:
        logger.debug("keeping %d of %d findings", max_findings, len(findings))
    return findings[: max(0, max_findings)]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3|4) colour image, float in [0, 1] or uint8, to (H, W, 3) float in [0, 1]."""
    array = np.asarray(image)
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    rgb = array.astype(np.float64) / scale
    if rgb.ndim == 3 and rgb.shape[0] == 1:
        rgb = rgb[0]
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        msg = f"image must be (H, W) grey or (H, W, 3) colour, got shape {array.shape}"
        raise ValueError(msg)
    return np.clip(np.nan_to_num(rgb[..., :3]), 0.0, 1.0)


def overlay(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    mask_below: float | None = None,
) -> np.ndarray:
    """Blend a heat-map of ``anomaly_map`` over ``image``.

    Args:
        image: (H, W) grey or (H, W, 3) colour image, floats in [0, 1] (uint8 is rescaled).
        anomaly_map: (H, W) map; resize it first with :func:`resize_map` if needed.
        vmin: Map value shown as the colormap's low end (default: map minimum).
        vmax: Map value shown as the colormap's high end (default: map maximum).
        alpha: Opacity of the heat-map in [0, 1].
        cmap: Matplotlib colormap name.
        mask_below: Pixels whose map value is below this are left untinted.

    Returns:
        (H, W, 3) uint8 RGB picture.

    Raises:
        ValueError: On mismatched shapes or an unknown colormap.
    """
    import matplotlib as mpl  # only the colormap registry: no backend, no pyplot

    rgb = _as_rgb(image)
    values = np.asarray(anomaly_map, dtype=np.float64)
    if values.shape != rgb.shape[:2]:
        msg = f"anomaly_map shape {values.shape} differs from image shape {rgb.shape[:2]}; use resize_map first"
        raise ValueError(msg)
    low = float(np.nanmin(values)) if vmin is None else float(vmin)
    high = float(np.nanmax(values)) if vmax is None else float(vmax)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    try:
        colormap = mpl.colormaps[cmap]
    except KeyError:
        msg = f"unknown matplotlib colormap {cmap!r}"
        raise ValueError(msg) from None
    heat = colormap(np.nan_to_num(scaled))[..., :3]
    weight = np.full(values.shape, float(np.clip(alpha, 0.0, 1.0)))
    if mask_below is not None:
        weight[~(values >= mask_below)] = 0.0  # NaN counts as below
    blended = (1.0 - weight[..., None]) * rgb + weight[..., None] * heat
    return np.round(blended * 255.0).astype(np.uint8)


def resize_map(anomaly_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an anomaly map to a new in-plane size, keeping its value range.

    Args:
        anomaly_map: (H, W) or (S, H, W) map.
        shape: Target (H', W').

    Returns:
        (H', W') or (S, H', W') float32 map.

    Raises:
        ValueError: If the map is neither 2D nor 3D or ``shape`` is not two positive ints.
    """
    from skimage.transform import resize

    array = _check_map(anomaly_map)
    if len(shape) != 2 or min(shape) < 1:
        msg = f"shape must be (height, width) with positive sizes, got {shape!r}"
        raise ValueError(msg)
    target = (int(shape[0]), int(shape[1]))
    if array.shape[-2:] == target:
        return array.copy()
    stack = array[None] if array.ndim == 2 else array
    out = np.stack(
        [resize(s, target, order=1, mode="edge", preserve_range=True, anti_aliasing=False) for s in stack]
    ).astype(np.float32)
    return out[0] if array.ndim == 2 else out

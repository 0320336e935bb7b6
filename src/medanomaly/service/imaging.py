"""What the viewer and the report draw: display slices, anomaly maps and extras saved per result, rendered as PNG.

At scoring time :func:`save_arrays` keeps, in one compressed ``.npz`` (no pickles), the study's slices in their own
units (HU for CT) downsampled to at most ``DISPLAY_MAX`` pixels a side, the filtered anomaly maps and any
``reconstruction``/``translation`` extras cropped to the image (model grid without padding), and a JSON header with
the display window and the map's colour scale. Window/level happens at render time, so presets are exact.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skimage.transform import resize

from medanomaly.mapping import overlay, resize_map
from medanomaly.model import Model
from medanomaly.pipeline import StudyResult
from medanomaly.transforms.intensity import WINDOW_PRESETS, apply_window
from medanomaly.types import Study

DISPLAY_MAX = 768
EXTRA_NAMES = ("reconstruction", "translation")
COLORMAPS = ("jet", "inferno", "magma", "viridis", "hot", "turbo")
GENERIC_WINDOWS = {"auto": "Auto (0.5-99.5 %)", "full": "Full range", "contrast": "High contrast (5-95 %)"}
_HU_KINDS = ("dicom", "dicom_series", "nifti")


@dataclass
class StudyArrays:
    """The arrays of one result, loaded.

    Attributes:
        display: (S, H, W) float32 in file units, or (S, H, W, 3) uint8 colour.
        maps: (S, h, w) float32 filtered anomaly maps over the image area, or None.
        extras: name -> (S, h, w) or (S, h, w, 3) uint8 images (reconstruction, translation).
        header: ``is_hu``, ``file_window``, ``auto_range``, ``map_range``, ``region_threshold``.
    """

    display: np.ndarray
    maps: np.ndarray | None
    extras: dict[str, np.ndarray]
    header: dict[str, Any]

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.display.shape[0])

    def window_choices(self) -> dict[str, str]:
        """Window presets that make sense for this study: key -> label."""
        choices = dict(GENERIC_WINDOWS)
        if self.header.get("is_hu"):
            choices.update({name: f"{name.title()} (C {c:g} / W {w:g})" for name, (c, w) in WINDOW_PRESETS.items()})
        if self.header.get("file_window"):
            choices["dicom"] = "As stored in the file"
        return choices


def _to_display(pixels: np.ndarray) -> np.ndarray:
    """Downsample slices so the longer side is at most ``DISPLAY_MAX``; colour kept as uint8."""
    height, width = pixels.shape[1:3]
    scale = min(1.0, DISPLAY_MAX / max(height, width))
    if pixels.ndim == 4:
        array = pixels.astype(np.float32)
        if array.max() > 255 or pixels.dtype != np.uint8:
            array = 255 * (array - array.min()) / max(float(np.ptp(array)), 1e-6)
        pixels = np.clip(array, 0, 255).astype(np.uint8)
    if scale < 1.0:
        shape = (round(height * scale), round(width * scale)) + pixels.shape[3:]
        pixels = np.stack([resize(s, shape, order=1, preserve_range=True, anti_aliasing=True) for s in pixels])
        pixels = pixels.astype(np.uint8 if pixels.ndim == 4 else np.float32)
    return pixels if pixels.ndim == 4 else pixels.astype(np.float32)


def _extra_images(result: StudyResult) -> dict[str, np.ndarray]:
    extras = {}
    for name in EXTRA_NAMES:
        value = result.extras.get(name)
        if value is None or value.ndim != 4:
            continue
        cropped = np.clip(result.geometry.crop(value), 0.0, 1.0).transpose(0, 2, 3, 1)
        cropped = cropped[..., 0] if cropped.shape[-1] == 1 else cropped[..., :3]
        extras[name] = np.round(cropped * 255).astype(np.uint8)
    return extras


def save_arrays(path: Path, study: Study, result: StudyResult, model: Model) -> Path:
    """Write the result's display arrays and header to ``path`` (``.npz``); returns the path."""
    display = _to_display(study.pixels)
    maps = None if result.anomaly_maps is None else result.geometry.crop(result.anomaly_maps).astype(np.float32)
    grey = display.ndim == 3
    header: dict[str, Any] = {
        "is_hu": study.meta.get("modality") == "CT" and study.meta.get("kind") in _HU_KINDS,
        "file_window": list(study.meta["window"]) if study.meta.get("window") else None,
        "auto_range": [float(v) for v in np.percentile(display, [0.5, 99.5])] if grey else [0.0, 255.0],
        "contrast_range": [float(v) for v in np.percentile(display, [5, 95])] if grey else [0.0, 255.0],
        "full_range": [float(display.min()), float(display.max())] if grey else [0.0, 255.0],
        "region_threshold": model.postprocessing.region_threshold,
        "map_range": _map_range(maps, model.postprocessing.region_threshold),
    }
    arrays = {"display": display, "header": np.array(json.dumps(header))}
    if maps is not None:
        arrays["maps"] = maps
    arrays.update({f"extra_{name}": image for name, image in _extra_images(result).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def _map_range(maps: np.ndarray | None, region_threshold: float | None) -> list[float]:
    """Colour scale of the heat map, anchored on the model's finding threshold (the same for every study).

    Map values at the finding threshold (the 95th percentile of normal studies' map maxima) show near the top of
    the colour map, values below 40 % of it stay transparent, so normal studies look calm.
    """
    if maps is None:
        return [0.0, 1.0]
    if region_threshold is not None and region_threshold > 0:
        return [0.4 * region_threshold, 1.2 * region_threshold]
    return [float(np.percentile(maps, 50)), max(float(maps.max()), float(np.percentile(maps, 50)) + 1e-6)]


_CACHE: OrderedDict[tuple[str, float], StudyArrays] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def load_arrays(path: Path, cache_size: int = 6) -> StudyArrays:
    """Load a result's arrays (a small LRU cache keeps the studies being viewed in memory)."""
    key = (str(path), path.stat().st_mtime)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    with np.load(path, allow_pickle=False) as data:
        extras = {name[6:]: data[name] for name in data.files if name.startswith("extra_")}
        loaded = StudyArrays(
            data["display"], data["maps"] if "maps" in data.files else None, extras, json.loads(str(data["header"]))
        )
    with _CACHE_LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > cache_size:
            _CACHE.popitem(last=False)
    return loaded


def window_slice(arrays: StudyArrays, index: int, window: str = "auto") -> np.ndarray:
    """(H, W) float in [0, 1] (or (H, W, 3) colour) of slice ``index`` under a window preset.

    Raises:
        IndexError: ``index`` outside the study.
        ValueError: An unknown window for this study.
    """
    if not 0 <= index < arrays.n_slices:
        msg = f"slice {index} outside 0..{arrays.n_slices - 1}"
        raise IndexError(msg)
    image = arrays.display[index]
    if image.ndim == 3:
        return image.astype(np.float32) / 255.0
    header = arrays.header
    if window in WINDOW_PRESETS and header.get("is_hu"):
        return apply_window(image, *WINDOW_PRESETS[window])
    if window == "dicom" and header.get("file_window"):
        return apply_window(image, *header["file_window"])
    ranges = {"auto": "auto_range", "full": "full_range", "contrast": "contrast_range"}
    if window not in ranges:
        msg = f"unknown window {window!r} for this study; choose one of {', '.join(arrays.window_choices())}"
        raise ValueError(msg)
    low, high = header[ranges[window]]
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)


def map_rgba(arrays: StudyArrays, index: int, cmap: str = "jet") -> np.ndarray:
    """(H, W, 4) uint8 heat map of slice ``index`` at display size; transparent where the map is unremarkable."""
    import matplotlib as mpl

    if cmap not in COLORMAPS:
        msg = f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}"
        raise ValueError(msg)
    height, width = arrays.display.shape[1:3]
    if arrays.maps is None:
        return np.zeros((height, width, 4), np.uint8)
    values = resize_map(arrays.maps[index], (height, width))
    low, high = arrays.header["map_range"]
    scaled = np.clip((values - low) / max(high - low, 1e-9), 0.0, 1.0)
    rgba = mpl.colormaps[cmap](scaled)
    rgba[..., 3] = np.sqrt(scaled)
    return np.round(rgba * 255).astype(np.uint8)


def overlay_rgb(arrays: StudyArrays, index: int, window: str = "auto", cmap: str = "jet", alpha: float = 0.45):
    """(H, W, 3) uint8 slice with the heat map blended in (what the report prints)."""
    image = window_slice(arrays, index, window)
    if arrays.maps is None:
        return np.round(np.repeat(image[..., None], 3, 2) * 255).astype(np.uint8) if image.ndim == 2 else image
    values = resize_map(arrays.maps[index], image.shape[:2])
    low, high = arrays.header["map_range"]
    return overlay(image, values, vmin=low, vmax=high, alpha=alpha, cmap=cmap, mask_below=low)


def extra_image(arrays: StudyArrays, name: str, index: int) -> np.ndarray:
    """(H, W[, 3]) uint8 extra output (reconstruction, translation) of slice ``index`` at display size."""
    if name not in arrays.extras:
        msg = f"this result has no {name!r} image"
        raise KeyError(msg)
    image = arrays.extras[name][index]
    height, width = arrays.display.shape[1:3]
    shape = (height, width) + image.shape[2:]
    return np.round(resize(image, shape, order=1, preserve_range=True, anti_aliasing=False)).astype(np.uint8)


def finding_box(finding: dict[str, Any], geometry: dict[str, Any]) -> list[float]:
    """A finding's model-grid bbox (row0, col0, row1, col1) as fractions [x0, y0, x1, y1] of the image."""
    top, left = geometry["offset"]
    height, width = geometry["resized_shape"]
    row0, col0, row1, col1 = finding["bbox"]
    box = [(col0 - left) / width, (row0 - top) / height, (col1 - left) / width, (row1 - top) / height]
    return [float(min(1.0, max(0.0, v))) for v in box]

"""What the viewer and the report draw: display slices, anomaly maps and extras saved per result, rendered as PNG.

At scoring time :func:`save_arrays` keeps, in one compressed ``.npz`` (no pickles), the study's slices in their own
units (HU for CT) at native resolution (only sides above ``DISPLAY_MAX`` pixels are downsampled), the filtered
anomaly maps and any ``reconstruction``/``translation`` extras cropped to the image (model grid without padding), and
a JSON header with the display windows and the map's colour scale. Window/level happens at render time (in the
browser, from :func:`slice_values`), so presets and free windows are exact and the pixel readout shows stored values.
The heat map is coloured by one function, :func:`heat_rgba`, for the viewer and for the report.
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

from medanomaly.mapping import resize_map
from medanomaly.model import Model
from medanomaly.pipeline import StudyResult
from medanomaly.transforms.intensity import WINDOW_PRESETS, apply_window
from medanomaly.types import Study

DISPLAY_MAX = 4096  # native resolution for every radiograph and CT/MR slice; larger sides are downsampled
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
    if pixels.ndim == 4 or pixels.dtype in _EXACT_GREY:
        return pixels  # colour, or whole-number grey (CT in HU, 8/16-bit): stored as it is, no float32 copy
    return pixels.astype(np.float32)


#: Grey dtypes the display arrays keep as they are (a 1000-slice CT stays int16: 0.5 GB, not 1 GB of float32).
_EXACT_GREY = (np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16))
#: Slices the display percentiles are taken from (evenly spaced): bounded memory for long series.
_PERCENTILE_SLICES = 128


def _percentiles(display: np.ndarray, levels: list[float]) -> list[float]:
    """Percentiles of a grey volume from at most :data:`_PERCENTILE_SLICES` evenly spaced slices."""
    step = max(1, len(display) // _PERCENTILE_SLICES)
    return [float(v) for v in np.percentile(display[::step], levels)]


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
        "auto_range": _percentiles(display, [0.5, 99.5]) if grey else [0.0, 255.0],
        "contrast_range": _percentiles(display, [5.0, 95.0]) if grey else [0.0, 255.0],
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


def window_levels(arrays: StudyArrays) -> dict[str, dict[str, Any]]:
    """The study's window presets as ``key -> {"label", "center", "width"}`` in stored units (HU for CT)."""
    header, levels = arrays.header, {}
    for key, label in arrays.window_choices().items():
        if key in WINDOW_PRESETS:
            center, width = WINDOW_PRESETS[key]
        elif key == "dicom":
            center, width = header["file_window"]
        else:
            low, high = header[{"auto": "auto_range", "full": "full_range", "contrast": "contrast_range"}[key]]
            center, width = (low + high) / 2.0, max(high - low, 1e-6)
        levels[key] = {"label": label, "center": float(center), "width": float(width)}
    return levels


def _check_index(arrays: StudyArrays, index: int) -> None:
    if not 0 <= index < arrays.n_slices:
        msg = f"slice {index} outside 0..{arrays.n_slices - 1}"
        raise IndexError(msg)


def window_slice(arrays: StudyArrays, index: int, window: str = "auto") -> np.ndarray:
    """(H, W) float in [0, 1] (or (H, W, 3) colour) of slice ``index`` under a window preset.

    Raises:
        IndexError: ``index`` outside the study.
        ValueError: An unknown window for this study.
    """
    _check_index(arrays, index)
    image = arrays.display[index]
    if image.ndim == 3:
        return image.astype(np.float32) / 255.0
    levels = window_levels(arrays)
    if window not in levels:
        msg = f"unknown window {window!r} for this study; choose one of {', '.join(levels)}"
        raise ValueError(msg)
    return apply_window(image, levels[window]["center"], levels[window]["width"])


def slice_values(arrays: StudyArrays, index: int) -> np.ndarray:
    """Slice ``index`` in stored units (what the viewer windows and reads pixel values from), in an exact dtype.

    int16/uint16 when every value is a whole number in range (CT in HU, 8-16 bit radiographs), else float32; colour
    stays (H, W, 3) uint8.

    Raises:
        IndexError: ``index`` outside the study.
    """
    _check_index(arrays, index)
    image = arrays.display[index]
    if image.ndim == 3 or not np.all(np.isfinite(image)) or not np.array_equal(image, np.round(image)):
        return image if image.ndim == 3 else image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    for dtype in (np.int16, np.uint16):
        if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
            return image.astype(dtype)
    return image.astype(np.float32)


def _check_cmap(cmap: str) -> None:
    if cmap not in COLORMAPS:
        msg = f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}"
        raise ValueError(msg)


def heat_rgba(values: np.ndarray, value_range: list[float], cmap: str = "jet") -> np.ndarray:
    """(H, W, 4) float heat map in [0, 1], the one colouring of the viewer and the report.

    Colour from ``cmap`` over ``value_range``, opacity the square root of the scaled value (transparent at the low
    end, so unremarkable tissue stays untinted).

    Raises:
        ValueError: An unknown colour map.
    """
    import matplotlib as mpl

    _check_cmap(cmap)
    low, high = value_range
    scaled = np.clip((np.nan_to_num(values, nan=low) - low) / max(high - low, 1e-9), 0.0, 1.0)
    rgba = mpl.colormaps[cmap](scaled)
    rgba[..., 3] = np.sqrt(scaled)
    return rgba


def _slice_heat(arrays: StudyArrays, index: int, cmap: str) -> np.ndarray | None:
    if arrays.maps is None:
        return None
    values = resize_map(arrays.maps[index], arrays.display.shape[1:3])
    return heat_rgba(values, arrays.header["map_range"], cmap)


def map_rgba(arrays: StudyArrays, index: int, cmap: str = "jet") -> np.ndarray:
    """(H, W, 4) uint8 heat map of slice ``index`` at display size; transparent where the map is unremarkable."""
    _check_cmap(cmap)
    rgba = _slice_heat(arrays, index, cmap)
    if rgba is None:
        return np.zeros((*arrays.display.shape[1:3], 4), np.uint8)
    return np.round(rgba * 255).astype(np.uint8)


def overlay_rgb(arrays: StudyArrays, index: int, window: str = "auto", cmap: str = "jet", opacity: float = 0.45):
    """(H, W, 3) uint8 slice with the heat map drawn over it as the viewer draws it (its RGBA at ``opacity``)."""
    image = window_slice(arrays, index, window)
    rgb = np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image
    rgba = _slice_heat(arrays, index, cmap)
    if rgba is not None:
        weight = rgba[..., 3:] * float(np.clip(opacity, 0.0, 1.0))
        rgb = (1.0 - weight) * rgb + weight * rgba[..., :3]
    return np.round(rgb * 255).astype(np.uint8)


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

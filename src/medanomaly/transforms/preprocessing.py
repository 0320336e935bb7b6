"""The preprocessing recipe saved with every model, so a study is prepared the same way at training and scoring."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from medanomaly.transforms.geometry import Geometry, resize_pad
from medanomaly.transforms.intensity import apply_window, equalize, parse_window, percentile_normalize
from medanomaly.types import Study

_NORMALIZATIONS = ("auto", "window", "percentile", "minmax", "none")
#: Slices converted to float32 at a time: a 1000-slice 512x512 CT is never copied whole.
CHUNK = 16


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become model input: intensity to [0, 1], optional equalisation, resize + pad.

    Attributes:
        resolution: Side of the square model input, in pixels.
        channels: 1 for grey, 3 to keep colour (histopathology, dermoscopy).
        normalize: ``auto`` (CT in HU -> window; everything else -> percentile), ``window``, ``percentile``,
            ``minmax`` (by the file's bit depth), or ``none`` (values already in [0, 1]).
        window: Window for CT: a preset (lung, mediastinum, abdomen, brain, bone), ``dicom`` (the file's own) or
            ``"CENTER,WIDTH"``. With ``auto``, a CT without this set uses the file's window, else ``lung``.
        percentiles: Lower/upper percentiles mapped to 0/1 by ``percentile``.
        equalize: ``none``, ``hist`` or ``clahe``, applied after normalisation.
    """

    resolution: int = 128
    channels: int = 1
    normalize: str = "auto"
    window: str | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    equalize: str = "none"

    def __post_init__(self) -> None:
        if self.normalize not in _NORMALIZATIONS:
            msg = f"normalize must be one of {_NORMALIZATIONS}, got {self.normalize!r}"
            raise ValueError(msg)
        if self.channels not in (1, 3):
            msg = f"channels must be 1 or 3, got {self.channels}"
            raise ValueError(msg)
        if self.resolution < 8:
            msg = f"resolution must be at least 8, got {self.resolution}"
            raise ValueError(msg)

    def apply(self, study: Study) -> tuple[np.ndarray, Geometry]:
        """Prepare every slice of a study, :data:`CHUNK` slices at a time (float32 copies of a chunk only).

        Returns:
            (S, C, R, R) float32 array in [0, 1] and the geometry shared by all slices.
        """
        out: np.ndarray | None = None
        geometry = None
        bits = self._bit_depth(study.pixels, study.meta)
        for start in range(0, len(study.pixels), CHUNK):
            chunk = self._match_channels(study.pixels[start : start + CHUNK])
            for index, image in enumerate(self._to_unit_range(chunk, study.meta, bits), start):
                resized, geometry = resize_pad(self._equalize(image), self.resolution)
                if out is None:
                    channels = resized.shape[2] if resized.ndim == 3 else 1
                    out = np.empty((len(study.pixels), channels, *resized.shape[:2]), np.float32)
                out[index] = resized.transpose(2, 0, 1) if resized.ndim == 3 else resized[None]
        if out is None or geometry is None:
            msg = "the study holds no slices"
            raise ValueError(msg)
        return out, geometry

    def _bit_depth(self, pixels: np.ndarray, meta: dict[str, Any]) -> int:
        """Bit depth used by ``minmax``: the file's, else 16 when any value of the whole study exceeds 255, else 8."""
        if self.normalize != "minmax" or meta.get("bit_depth"):
            return int(meta.get("bit_depth") or 0)
        peak = max(self._match_channels(pixels[i : i + CHUNK]).max(initial=0) for i in range(0, len(pixels), CHUNK))
        return 16 if peak > 255 else 8

    def _match_channels(self, pixels: np.ndarray) -> np.ndarray:
        is_colour = pixels.ndim == 4
        if self.channels == 1 and is_colour:
            weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[: pixels.shape[-1]]
            return (pixels[..., : len(weights)].astype(np.float32) * weights).sum(-1) / weights.sum()
        if self.channels == 3 and not is_colour:
            return np.repeat(pixels[..., None], 3, axis=-1)
        return pixels

    def _to_unit_range(self, pixels: np.ndarray, meta: dict[str, Any], bits: int) -> np.ndarray:
        mode = self.normalize
        if mode == "auto":
            is_hounsfield = meta.get("modality") == "CT" and meta.get("kind") in ("dicom", "dicom_series", "nifti")
            mode = "window" if (self.window or is_hounsfield) else "percentile"
        if mode == "window":
            spec = self.window or ("dicom" if meta.get("window") else "lung")
            center, width = parse_window(spec, meta.get("window"))
            return apply_window(pixels, center, width)
        if mode == "percentile":
            return np.stack([percentile_normalize(image, *self.percentiles) for image in pixels])
        if mode == "minmax":
            return np.clip(pixels.astype(np.float32) / float(2**bits - 1), 0.0, 1.0)
        return np.clip(pixels.astype(np.float32), 0.0, 1.0)

    def _equalize(self, image: np.ndarray) -> np.ndarray:
        return equalize(image, self.equalize) if self.equalize != "none" else image

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            msg = f"unknown preprocessing keys {sorted(unknown)}"
            raise ValueError(msg)
        values = dict(data)
        if "percentiles" in values:
            values["percentiles"] = tuple(values["percentiles"])
        return cls(**values)

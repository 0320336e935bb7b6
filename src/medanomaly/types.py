"""Core data types shared by readers, detectors and the pipeline.

Conventions: higher score = more anomalous; labels are 0 (normal) / 1 (abnormal); images are float32, channel
first, values in [0, 1] after preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor


@dataclass
class Study:
    """One image or one volume as read from disk, before preprocessing.

    Attributes:
        pixels: (S, H, W) grey or (S, H, W, C) colour array in the file's own units (HU for CT, raw values
            otherwise); S = 1 for a 2D image, S = number of slices for a volume ordered along the slice normal.
        meta: What was read besides pixels. Keys used across the project (all optional): ``path``, ``kind``
            ("png", "jpeg", "dicom", "dicom_series", "nifti"), ``modality``, ``spacing`` (row, col[, slice]) in mm,
            ``orientation``, ``affine`` (NIfTI), ``patient_id``, ``study_uid``, ``series_uid``, ``sop_uids``,
            ``window`` (center, width) from the file, ``slice_order`` ("position" or "instance_number"),
            ``bit_depth``, ``photometric``.
    """

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        """Number of slices (1 for a 2D image)."""
        return int(self.pixels.shape[0])

    @property
    def is_volume(self) -> bool:
        """True when the study holds more than one slice."""
        return self.n_slices > 1


@dataclass(frozen=True)
class Prediction:
    """What a detector returns for a batch.

    Attributes:
        scores: (N,) image scores, higher = more anomalous.
        anomaly_maps: (N, H, W) per-pixel anomaly, same H, W as the input, or None.
        extras: Optional named (N, ...) tensors a method also produces, e.g. ``reconstruction`` (N, C, H, W),
            ``mask`` (N, H, W) or ``probability`` (N,) for a classifier.
    """

    scores: Tensor
    anomaly_maps: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

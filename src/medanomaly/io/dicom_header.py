"""What medanomaly keeps from DICOM headers: ids, rescale, window, geometry and slice order.

Pure functions of pydicom datasets (header-only datasets are enough); no pixel decoding here. Attributes are looked
up at the top level first and then in the Shared / first Per-frame Functional Groups of enhanced multi-frame objects
(DICOM PS3.3 C.7.6.16). Slice order follows the slice normal, n = row direction x column direction of
ImageOrientationPatient, and the position of a slice is ImagePositionPatient . n (as in dcm2niix and ITK).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

# Functional-group macro holding each attribute in enhanced multi-frame objects.
_GROUP_OF = {
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "WindowCenter": "FrameVOILUTSequence",
    "WindowWidth": "FrameVOILUTSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "SpacingBetweenSlices": "PixelMeasuresSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "ImagePositionPatient": "PlanePositionSequence",
}


def text(value: Any) -> str | None:
    """Return a header value as a stripped string, or None when missing or empty."""
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _as_list(value: Any) -> list[Any]:
    """Return a single or multi-valued header value as a list."""
    if isinstance(value, str | bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def floats(value: Any, n: int) -> list[float] | None:
    """Return a multi-valued numeric header value as ``n`` floats, or None when missing or malformed."""
    if value is None:
        return None
    try:
        out = [float(v) for v in _as_list(value)]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _first_float(value: Any) -> float | None:
    """Return the first value of a possibly multi-valued number (e.g. WindowCenter), or None."""
    values = _as_list(value) if value is not None else []
    try:
        return float(values[0])
    except (IndexError, TypeError, ValueError):
        return None


def value(ds: Dataset, keyword: str, frame: int = 0) -> Any:
    """``keyword`` from the top level, else from the shared or per-frame functional groups (frame ``frame``)."""
    if keyword in ds:
        return ds[keyword].value
    group = _GROUP_OF.get(keyword)
    if group is None:
        return None
    for sequence, index in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", frame)):
        items = ds.get(sequence)
        if not items or len(items) <= index:
            continue
        macro = items[index].get(group)
        if macro and keyword in macro[0]:
            return macro[0][keyword].value
    return None


def sop_class_name(ds: Dataset) -> str:
    """Human name of the SOP class (e.g. ``CT Image Storage``), or "" when absent."""
    uid = ds.get("SOPClassUID")
    if uid is None:
        file_meta = getattr(ds, "file_meta", None)
        uid = file_meta.get("MediaStorageSOPClassUID") if file_meta is not None else None
    return str(getattr(uid, "name", "") or uid or "")


def transfer_syntax(ds: Dataset) -> Any:
    """Return the dataset's Transfer Syntax UID (a pydicom ``UID``; ``.name`` is readable), or a placeholder string."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return uid if uid is not None else "unknown"


def rescale(ds: Dataset) -> tuple[float, float]:
    """(slope, intercept) mapping stored values to modality units; (1, 0) when absent."""
    slope = _first_float(value(ds, "RescaleSlope"))
    intercept = _first_float(value(ds, "RescaleIntercept"))
    return (slope if slope else 1.0, intercept if intercept is not None else 0.0)


def to_modality(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``stored * slope + intercept`` (F, H, W), computed frame by frame, in the most compact exact type.

    int16 when every result is a whole number in int16's range (CT in HU, most MR and X-ray), else float32 (as
    ``stored.astype(float32) * slope + intercept``, so both give the same values).
    """
    whole = np.issubdtype(stored.dtype, np.integer) and float(slope).is_integer() and float(intercept).is_integer()
    if whole and stored.size:
        ends = sorted(int(v) * int(slope) + int(intercept) for v in (stored.min(), stored.max()))
        whole = -(2**15) <= ends[0] and ends[1] < 2**15
    out = np.empty(stored.shape, np.int16 if whole else np.float32)
    for index, frame in enumerate(stored):
        if whole:
            out[index] = frame.astype(np.int32) * int(slope) + int(intercept)
        else:
            out[index] = frame.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return out


def window(ds: Dataset) -> tuple[float, float] | None:
    """(center, width) of the first VOI window in the header, or None."""
    center, width = _first_float(value(ds, "WindowCenter")), _first_float(value(ds, "WindowWidth"))
    if center is None or not width:
        return None
    return (center, width)


def common_meta(ds: Dataset, photometric: str) -> dict[str, Any]:
    """Metadata shared by single files and series (see :class:`~medanomaly.types.Study`)."""
    bits = ds.get("BitsStored") or ds.get("BitsAllocated")
    return {
        "modality": text(ds.get("Modality")),
        "body_part": text(ds.get("BodyPartExamined")),
        "patient_id": text(ds.get("PatientID")),
        "study_uid": text(ds.get("StudyInstanceUID")),
        "series_uid": text(ds.get("SeriesInstanceUID")),
        "frame_of_reference_uid": text(ds.get("FrameOfReferenceUID")),
        "photometric": photometric,
        "bit_depth": int(bits) if bits else None,
        "window": window(ds),
        "rescale": rescale(ds),
        "orientation": floats(value(ds, "ImageOrientationPatient"), 6),
    }


def frame_positions(ds: Dataset, n_frames: int) -> list[list[float] | None]:
    """ImagePositionPatient of each frame (per-frame functional groups for enhanced objects), None if unknown."""
    if n_frames == 1:
        return [floats(value(ds, "ImagePositionPatient"), 3)]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != n_frames:
        return [None] * n_frames
    return [floats(value(ds, "ImagePositionPatient", frame=i), 3) for i in range(n_frames)]


def normal(orientation: list[float]) -> np.ndarray:
    """Return the unit slice normal (3,) = row direction x column direction."""
    n = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 0 else n


def project(positions: list[list[float] | None], orientation: list[float] | None) -> list[float] | None:
    """Slice positions in mm along the slice normal, or None when any position or the orientation is unknown."""
    if orientation is None or any(p is None for p in positions):
        return None
    n = normal(orientation)
    return [float(np.dot(p, n)) for p in positions]


def spacing(ds: Dataset, slice_positions: list[float] | None, n_slices: int) -> tuple[float, ...] | None:
    """(row, col) spacing in mm, plus the slice spacing when there are several slices; None if unknown.

    The slice spacing is the median distance between consecutive positions along the normal, else
    SpacingBetweenSlices, else SliceThickness, else 1.0 (with a warning).
    """
    pixel = floats(value(ds, "PixelSpacing"), 2) or floats(ds.get("ImagerPixelSpacing"), 2)
    if pixel is None:
        return None
    if n_slices <= 1:
        return (pixel[0], pixel[1])
    if slice_positions is not None and len(slice_positions) > 1:
        gaps = np.abs(np.diff(np.asarray(slice_positions, dtype=float)))
        step = float(np.median(gaps))
        if float(gaps.min()) < 1e-3:
            logger.warning("%d slices share a position: the series may hold several volumes", int((gaps < 1e-3).sum()))
        elif float(gaps.max() - gaps.min()) > 0.01 * step:
            logger.info("uneven slice spacing: %.3f..%.3f mm (median %.3f)", gaps.min(), gaps.max(), step)
    else:
        step = _first_float(value(ds, "SpacingBetweenSlices")) or _first_float(value(ds, "SliceThickness"))
        if not step:
            logger.warning("slice spacing unknown, using 1.0 mm")
            step = 1.0
    return (pixel[0], pixel[1], abs(step))


def _instance(ds: Dataset) -> int | None:
    """InstanceNumber as int, or None."""
    number = _first_float(ds.get("InstanceNumber"))
    return int(number) if number is not None else None


def order_slices(headers: list[tuple[Path, Dataset]]) -> tuple[list[int], list[float] | None, str]:
    """Order the files of one series.

    Args:
        headers: (path, header-only dataset) of each slice.

    Returns:
        Indices in slice order; positions along the normal in that order (or None); and the method used:
        ``"position"``, ``"instance_number"`` or, when both are missing, ``"file_name"``.
    """
    datasets = [ds for _, ds in headers]
    positions = [floats(ds.get("ImagePositionPatient"), 3) for ds in datasets]
    orientation = floats(datasets[0].get("ImageOrientationPatient"), 6)
    projected = project(positions, orientation)
    instances = [_instance(ds) for ds in datasets]
    names = [path.name for path, _ in headers]
    if projected is not None:
        order = sorted(range(len(headers)), key=lambda i: (projected[i], instances[i] or 0, names[i]))
        return order, [projected[i] for i in order], "position"
    if all(number is not None for number in instances):
        return sorted(range(len(headers)), key=lambda i: (instances[i], names[i])), None, "instance_number"
    logger.warning("no ImagePositionPatient/ImageOrientationPatient nor InstanceNumber: ordering slices by file name")
    return sorted(range(len(headers)), key=lambda i: names[i]), None, "file_name"


def count(ds: Dataset, keyword: str, default: int) -> int:
    """A whole-number header count (Rows, NumberOfFrames, ...); ``default`` when absent or empty.

    Raises:
        ValueError: The value is multi-valued or not a whole number.
    """
    raw = ds.get(keyword)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str | bytes | int | float) and hasattr(raw, "__len__"):
        msg = f"{keyword} is multi-valued ({raw})"
        raise ValueError(msg)
    number = float(raw)
    if not number.is_integer():
        msg = f"{keyword} is not a whole number ({raw})"
        raise ValueError(msg)
    return int(number)


def shape_key(ds: Dataset) -> tuple[int, int, int]:
    """(Rows, Columns, SamplesPerPixel): slices of one series must agree on it."""
    return (count(ds, "Rows", 0), count(ds, "Columns", 0), count(ds, "SamplesPerPixel", 1))


def describe_shape(ds: Dataset) -> str:
    """Describe a slice size as ``"COLSxROWS"`` (with ``x3`` for colour)."""
    rows, cols, samples = shape_key(ds)
    return f"{cols}x{rows}" + (f"x{samples}" if samples > 1 else "")

"""Size checks of a DICOM image made from its header, before any pixel is decoded.

Rows, Columns, SamplesPerPixel and NumberOfFrames must each be one positive whole number; a slice above
``MEDANOMALY_MAX_PIXELS`` or a file above ``MEDANOMALY_MAX_VOXELS`` is refused, as is compressed pixel data whose
size or whose own codestream header (:mod:`medanomaly.io.codestream`) announces more than the DICOM header.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medanomaly.errors import InputError
from medanomaly.io import codestream, validate
from medanomaly.io import dicom_header as dh

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_CORRUPT_HINT = "the file is truncated or corrupt; copy or export it again"
_LIMIT_HINT = "set the environment variable MEDANOMALY_MAX_PIXELS to a larger pixel count to allow it"


def dimensions(path: Path, ds: Dataset) -> tuple[int, int, int, int]:
    """(frames, rows, columns, samples) from the header, each one positive whole number.

    Raises:
        InputError: A count is missing, multi-valued, zero or not a number.
    """
    try:
        frames = dh.count(ds, "NumberOfFrames", 1)
        rows, cols, samples = dh.shape_key(ds)
    except (ValueError, TypeError) as err:
        raise InputError(path, f"malformed image header ({str(err).strip()[:160]})", _CORRUPT_HINT) from err
    if min(frames, rows, cols, samples) < 1 or samples not in (1, 3):
        problem = f"malformed image header (NumberOfFrames {frames}, Rows {rows}, Columns {cols}, " \
                  f"SamplesPerPixel {samples})"
        raise InputError(path, problem, _CORRUPT_HINT)
    return frames, rows, cols, samples


def kept_itemsize(ds: Dataset) -> int:
    """Bytes per value the reader will most likely keep (2: int16, 4: float32).

    2 for grey stored values of up to 16 bits with a whole-number rescale and no Modality LUT (see
    :func:`~medanomaly.io.dicom_header.to_modality`), else 4.
    """
    try:
        slope, intercept = dh.rescale(ds)
        small = dh.count(ds, "BitsAllocated", 16) <= 16 and dh.count(ds, "SamplesPerPixel", 1) == 1
    except (ValueError, TypeError):
        return 4
    whole = float(slope).is_integer() and float(intercept).is_integer()
    return 2 if small and whole and not ds.get("ModalityLUTSequence") else 4


def check_size(path: Path, ds: Dataset, max_pixels: int) -> bool:
    """Refuse, before decoding, a slice above ``max_pixels``, a file above the voxel limit, or an implausible size.

    Compressed pixel data announcing more than 4096 times its own size (plus 16 MB) is refused too: no codec
    compresses real images that far, so Rows, Columns or NumberOfFrames must be corrupt. Each JPEG, JPEG-LS or
    JPEG 2000 frame's own header must match the DICOM header (:func:`medanomaly.io.codestream.check_frame`).

    Returns:
        True when the pixel data may be decoded in this process; False when a frame's codestream is legal but
        cannot be vouched for, so it is decoded in a separate process (:mod:`medanomaly.io.isolated`).
    """
    frames, rows, cols, samples = dimensions(path, ds)
    if rows * cols > max_pixels:
        problem = f"image is {cols}x{rows} = {rows * cols:,} pixels per slice, above the limit of {max_pixels:,}"
        raise InputError(path, problem, _LIMIT_HINT)
    validate.check_voxels(path, (frames, rows, cols, samples), "DICOM pixel data", kept_itemsize(ds))
    if getattr(dh.transfer_syntax(ds), "is_compressed", False) is not True or "PixelData" not in ds:
        return True
    stored = len(ds.get("PixelData") or b"")
    bits = dh.count(ds, "BitsAllocated", 8)
    announced = frames * rows * cols * samples * max(1, (bits + 7) // 8)
    if announced > 4096 * stored + (16 << 20):
        problem = f"header announces {announced:,} bytes of pixels from {stored:,} compressed bytes"
        raise InputError(path, problem, _CORRUPT_HINT)
    return _check_codestreams(path, ds, frames, codestream.Frame(rows, cols, samples, bits))


def _check_codestreams(path: Path, ds: Dataset, frames: int, frame: codestream.Frame) -> bool:
    """Check every JPEG-family frame's codestream; True when all of them are vouched for."""
    keyword = str(getattr(dh.transfer_syntax(ds), "keyword", "") or "")
    if not keyword.startswith(("JPEG", "HTJ2K")):
        return True  # RLE: decoded by numpy code that checks its own segment offsets
    from pydicom import encaps

    vouched = True
    try:
        for data in encaps.generate_frames(ds.PixelData, number_of_frames=frames):
            verdict = codestream.check_frame(data, frame, keyword.startswith("JPEGLS"))
            if verdict.problem:
                raise InputError(path, verdict.problem, _CORRUPT_HINT)
            vouched = vouched and verdict.vouched
    except (ValueError, KeyError, IndexError, StopIteration) as err:
        raise InputError(path, f"encapsulated pixel data is malformed ({str(err).strip()[:120]})",
                         _CORRUPT_HINT) from err
    return vouched

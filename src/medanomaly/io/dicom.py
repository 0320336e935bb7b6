"""DICOM reader: one file (single- or multi-frame) or one series folder -> :class:`~medanomaly.types.Study`.

Pixels come back in modality units (RescaleSlope/RescaleIntercept or a Modality LUT applied, i.e. HU for CT), as
int16 when every value is a whole number in int16's range (a 1000-slice CT then takes 0.5 GB, not 1 GB) and float32
otherwise; a series is decoded slice by slice into one array allocated once. MONOCHROME1 images are inverted so
that high values are bright, as torchxrayvision does; photometric interpretations other than MONOCHROME1/2, RGB and
YBR_* are rejected. Series slices are ordered along the slice normal (cross product of the two
ImageOrientationPatient directions), the convention of dcm2niix and ITK, with InstanceNumber as the fallback.
Compressed transfer syntaxes are decoded by pydicom's plugins (pylibjpeg).
See DICOM PS3.3 C.7.6.2 (image plane) and C.11.1 (modality LUT): https://dicom.nema.org/medical/dicom/current/
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io import dicom_header as dh
from medanomaly.io import dicom_size, isolated, validate
from medanomaly.types import Study

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

_CORRUPT_HINT = "the file is truncated or corrupt; copy or export it again"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's convert("L")


def _pydicom() -> Any:
    """Import pydicom lazily, with an install hint when it is missing."""
    try:
        import pydicom
    except ImportError as err:
        msg = "reading DICOM needs pydicom: pip install pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
        raise ImportError(msg) from err
    return pydicom


def has_preamble(path: Path) -> bool:
    """Return True when ``path`` carries the 128-byte preamble followed by ``DICM`` (DICOM PS3.10 file format)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def looks_like_dicom(path: Path) -> bool:
    """Cheap check: a DICM preamble, or a raw dataset starting with group 0002/0008 (pydicom's force read)."""
    if has_preamble(path):
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return len(head) == 8 and int.from_bytes(head[:2], "little") in (0x0002, 0x0008)


def read_dataset(path: Path, *, header_only: bool = False) -> Dataset:
    """Parse one DICOM file; files without a DICM preamble are read with pydicom's ``force=True``.

    Args:
        path: The file.
        header_only: Stop before the pixel data (cheap; used to sort and validate a series).

    Raises:
        InputError: The file cannot be parsed (truncated, corrupt, not DICOM).
    """
    pydicom = _pydicom()
    errors = (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
              AttributeError, struct.error)
    try:
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise InputError(path, "the file is empty", _CORRUPT_HINT)
            # a memory map: a corrupt element length reads to the end of the file instead of allocating 4 GB
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
                ds = pydicom.dcmread(view, stop_before_pixels=header_only, force=not has_preamble(path))
    except errors as err:
        raise InputError(path, f"not a readable DICOM file ({_first_line(err)})", _CORRUPT_HINT) from err
    ds.filename = str(path)
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a raw dataset (no file meta, read with ``force=True``) the transfer syntax it was encoded in."""
    if ds.file_meta.get("TransferSyntaxUID") is not None or ds.original_encoding[0] is None:
        return
    implicit, little = ds.original_encoding
    uid = _pydicom().uid
    if implicit:
        ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian


_first_line = validate.first_line


def has_image(ds: Dataset) -> bool:
    """Return True when a (possibly header-only) dataset describes an image: it has Rows and Columns."""
    return "Rows" in ds and "Columns" in ds


def expects_image(ds: Dataset) -> bool:
    """Return True when the SOP class is an image storage class, so missing pixels mean a truncated file."""
    return dh.sop_class_name(ds).endswith("Image Storage") or has_image(ds)


def _require_pixels(path: Path, ds: Dataset) -> str:
    """Check that ``ds`` holds a readable image; return its photometric interpretation.

    Raises:
        InputError: No pixel data (a report, a DICOMDIR, or a truncated file) or an unsupported photometric.
    """
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        sop = dh.sop_class_name(ds)
        if not sop and "Modality" not in ds:
            raise InputError(path, "not a readable DICOM file (no SOP class, modality or pixel data)", _CORRUPT_HINT)
        if expects_image(ds):
            raise InputError(path, f"DICOM file ({sop or 'image'}) has no pixel data", _CORRUPT_HINT)
        problem = f"DICOM file has no image ({sop or 'unknown SOP class'}, modality {ds.get('Modality') or 'unknown'})"
        raise InputError(path, problem, "pass an image such as CT, MR, CR or DX; reports and DICOMDIRs hold no pixels")
    if "PhotometricInterpretation" not in ds and dh.count(ds, "SamplesPerPixel", 1) == 1:
        logger.warning("%s: no PhotometricInterpretation, assuming MONOCHROME2", path)
        ds.PhotometricInterpretation = "MONOCHROME2"
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2", "RGB") or photometric.startswith("YBR"):
        return photometric
    raise InputError(path, f"unsupported photometric interpretation {photometric or '(missing)'}",
                     "only MONOCHROME1, MONOCHROME2, RGB and YBR_* images are read; convert the file to RGB or grey")


def _pixel_array(path: Path, ds: Dataset, in_process: bool) -> np.ndarray:
    """Decode the stored values of ``ds`` with pydicom's plugins: (H, W[, 3]) or (F, H, W[, 3]).

    ``in_process`` False decodes in a separate process (a codestream :func:`dicom_size.check_size` cannot vouch for).

    Raises:
        InputError: A decoder is missing (names the package to install), crashed, or the pixel data is corrupt.
    """
    try:
        return ds.pixel_array if in_process else isolated.decode(path, ds)
    except (RuntimeError, NotImplementedError) as err:
        if "missing dependencies" in str(err) or isinstance(err, NotImplementedError):
            syntax = dh.transfer_syntax(ds)
            problem = f"no decoder for the transfer syntax {getattr(syntax, 'name', syntax)}"
            raise InputError(path, problem, _decoder_hint(syntax)) from err
        raise InputError(path, f"compressed pixel data cannot be decoded ({_first_line(err)})", _CORRUPT_HINT) from err
    except (ValueError, AttributeError, KeyError, TypeError, EOFError, struct.error) as err:
        sizes = re.search(r"\((\d+) vs (\d+) bytes\)", str(err))
        if sizes:
            problem = f"pixel data holds {sizes[1]} of the {sizes[2]} bytes the header announces"
        else:
            problem = f"pixel data unreadable ({_first_line(err)})"
        raise InputError(path, problem, _CORRUPT_HINT) from err


def _decode(path: Path, ds: Dataset, in_process: bool = True) -> np.ndarray:
    """Decode and rescale the pixels of ``ds`` (``in_process``: as :func:`_pixel_array`).

    Returns:
        (F, H, W) grey in modality units (int16 or float32: :func:`dicom_header.to_modality`) or (F, H, W, 3) RGB
        float32; F = number of frames.

    Raises:
        InputError: As :func:`_pixel_array`.
    """
    arr = _pixel_array(path, ds, in_process)
    grey = dh.count(ds, "SamplesPerPixel", 1) == 1
    if arr.ndim == (2 if grey else 3):
        arr = arr[None]
    if not grey:
        return arr.astype(np.float32)
    if ds.get("ModalityLUTSequence"):
        try:
            return _pydicom().pixels.apply_modality_lut(arr, ds).astype(np.float32)
        except Exception as err:
            raise InputError(path, f"Modality LUT unreadable ({type(err).__name__}: {_first_line(err)})",
                             _CORRUPT_HINT) from err
    slope, intercept = dh.rescale(ds)
    if not (np.isfinite(slope) and np.isfinite(intercept)) or abs(slope) > 1e30 or abs(intercept) > 1e30:
        raise InputError(path, f"RescaleSlope {slope} / RescaleIntercept {intercept} are not usable numbers",
                         _CORRUPT_HINT)
    return dh.to_modality(arr, slope, intercept)


def _decoder_hint(syntax: Any) -> str:
    """Which package decodes a transfer syntax, as an install hint."""
    keyword = str(getattr(syntax, "keyword", "") or "")
    if keyword.startswith(("JPEG2000", "HTJ2K")):
        return "pip install pylibjpeg pylibjpeg-openjpeg"
    if keyword.startswith("JPEGLS"):
        return "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls)"
    if keyword.startswith("JPEG"):
        return "pip install pylibjpeg pylibjpeg-libjpeg"
    if keyword.startswith("RLE"):
        return "pip install numpy pylibjpeg-rle"
    return "convert the file to an uncompressed transfer syntax, e.g. gdcmconv --raw in.dcm out.dcm"


def _finish(pixels: np.ndarray, meta: dict[str, Any], color: bool) -> Study:
    """Apply the colour choice and MONOCHROME1 inversion, and wrap up a Study.

    Args:
        pixels: (S, H, W) int16 or float32, or (S, H, W, 3) float32.
        meta: Metadata; ``window`` is mirrored with the values when the image is inverted.
        color: Keep RGB channels; otherwise colour becomes grey by luminance.
    """
    if pixels.ndim == 4 and not color:
        pixels = pixels @ _LUMA
    if meta.get("photometric") == "MONOCHROME1":
        low, high = float(pixels.min()), float(pixels.max())
        if pixels.dtype == np.int16:  # in place, slice by slice: (high + low) - value stays within [low, high]
            for image in pixels:
                image[...] = int(high + low) - image.astype(np.int32)
        else:
            pixels = np.float32(high + low) - pixels
        meta["inverted"] = True
        if meta.get("window"):
            center, width = meta["window"]
            meta["window"] = (high + low - center, width)
    return Study(pixels=np.ascontiguousarray(pixels), meta=meta)


def read_dicom_file(path: str | Path, *, color: bool = False, max_pixels: int = 100_000_000) -> Study:
    """Read one DICOM file; a multi-frame file gives one slice per frame, in stored order.

    Args:
        path: The file (any extension).
        color: Keep RGB/YBR images as (S, H, W, 3); otherwise convert them to grey by luminance.
        max_pixels: Largest accepted Rows x Columns.

    Returns:
        Study with pixels (S, H, W) int16 or float32 in modality units (HU for CT), S = NumberOfFrames.

    Raises:
        InputError: Unreadable, truncated, no image, unsupported photometric, missing decoder, or too large.
    """
    path = Path(path)
    ds = read_dataset(path)
    photometric = _require_pixels(path, ds)
    in_process = dicom_size.check_size(path, ds, max_pixels)
    frames = _decode(path, ds, in_process)
    positions = dh.frame_positions(ds, frames.shape[0])
    meta = dh.common_meta(ds, photometric)
    slice_positions = dh.project(positions, meta["orientation"])
    meta.update(path=str(path), kind="dicom", n_files=1, sop_uids=[dh.text(ds.get("SOPInstanceUID"))],
                image_positions=positions, slice_positions=slice_positions,
                slice_order="frame" if frames.shape[0] > 1 else None,
                spacing=dh.spacing(ds, slice_positions, frames.shape[0]))
    return _finish(frames, meta, color)


def read_dicom_series(folder: str | Path, *, color: bool = False, max_pixels: int = 100_000_000) -> Study:
    """Read a folder holding the slices of one DICOM series, ordered along the slice normal.

    Non-DICOM files (README, thumbnails) and DICOM files without an image (DICOMDIR, reports) are skipped with a
    warning. A folder holding a single DICOM image is read as that file.

    Args:
        folder: The series folder (not searched recursively).
        color: Keep RGB/YBR images as (S, H, W, 3); otherwise convert them to grey by luminance.
        max_pixels: Largest accepted Rows x Columns.

    Returns:
        Study with pixels (S, H, W) int16 or float32 in modality units; meta adds ``slice_order``, ``slice_positions``
        (mm along the normal), ``image_positions`` and ``sop_uids``, all in slice order.

    Raises:
        InputError: Empty folder, no images, mixed series, mixed slice sizes, or an unreadable slice.
    """
    folder = Path(folder)
    headers = _series_headers(folder)
    if len(headers) == 1:
        return read_dicom_file(headers[0][0], color=color, max_pixels=max_pixels)
    _validate_series(folder, headers, max_pixels)
    order, slice_positions, slice_order = dh.order_slices(headers)
    headers = [headers[i] for i in order]
    volume = _read_volume([path for path, _ in headers], max_pixels)
    first = headers[0][1]
    meta = dh.common_meta(first, str(first.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper())
    meta.update(path=str(folder), kind="dicom_series", n_files=len(headers), slice_order=slice_order,
                sop_uids=[dh.text(ds.get("SOPInstanceUID")) for _, ds in headers],
                image_positions=[dh.floats(ds.get("ImagePositionPatient"), 3) for _, ds in headers],
                slice_positions=slice_positions, spacing=dh.spacing(first, slice_positions, len(headers)))
    return _finish(volume, meta, color)


def _read_volume(paths: list[Path], max_pixels: int) -> np.ndarray:
    """Decode the slices one at a time into one (S, H, W[, 3]) array, allocated once in the first slice's type.

    An int16 volume becomes float32 (once) if a later slice's values are not whole numbers in int16's range.
    """
    first = _read_slice(paths[0], max_pixels)
    volume = np.empty((len(paths), *first.shape), first.dtype)
    volume[0] = first
    for index, path in enumerate(paths[1:], 1):
        image = _read_slice(path, max_pixels)
        if image.dtype != volume.dtype and volume.dtype == np.int16:
            volume = volume.astype(np.float32)
        volume[index] = image
    return volume


def _read_slice(path: Path, max_pixels: int) -> np.ndarray:
    """Read one slice of a series: (H, W) in modality units (int16 or float32) or (H, W, 3) float32."""
    ds = read_dataset(path)
    _require_pixels(path, ds)
    in_process = dicom_size.check_size(path, ds, max_pixels)
    return _decode(path, ds, in_process)[0]


def _series_headers(folder: Path) -> list[tuple[Path, Dataset]]:
    """Header-only datasets of the DICOM images in ``folder``, by file name; skips other files with a warning.

    Raises:
        InputError: The folder is empty or holds no DICOM image; a DICOM file in it is corrupt.
    """
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    files = sorted(p for p in entries if p.is_file())
    if not files:
        problem = f"folder holds no files, only {len(entries)} subfolder(s)" if entries else "folder is empty"
        raise InputError(folder, problem, "pass a folder holding the DICOM files of one series; find_studies() "
                         "lists the studies of a dataset folder")
    headers = []
    for path in files:
        if not looks_like_dicom(path):
            logger.warning("skipping %s: not a DICOM file", path)
            continue
        ds = read_dataset(path, header_only=True)
        if has_image(ds):
            headers.append((path, ds))
        elif expects_image(ds):
            raise InputError(path, f"DICOM file ({dh.sop_class_name(ds)}) has no image attributes", _CORRUPT_HINT)
        else:
            logger.warning("skipping %s: DICOM file without an image (%s)", path, dh.sop_class_name(ds) or "unknown")
    if not headers:
        raise InputError(folder, f"folder holds no readable DICOM images ({len(files)} file(s) of other types)",
                         "pass a folder of DICOM slices; list PNG/JPEG/NIfTI files with find_studies()")
    return headers


def _validate_series(folder: Path, headers: list[tuple[Path, Dataset]], max_pixels: int) -> None:
    """Check one series, one slice size, single-frame files and the pixel limit.

    Raises:
        InputError: Naming the folder (mixed series) or the first odd file.
    """
    missing = [path.name for path, ds in headers if dh.text(ds.get("SeriesInstanceUID")) is None]
    if missing and len(missing) < len(headers):
        shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise InputError(folder, f"{len(missing)} of {len(headers)} slices lack a SeriesInstanceUID ({shown})",
                         "the folder may mix series: fix or remove those files")
    uids = sorted({dh.text(ds.get("SeriesInstanceUID")) or "" for _, ds in headers})
    if len(uids) > 1:
        shown = ", ".join(uids[:4]) + (", ..." if len(uids) > 4 else "")
        raise InputError(folder, f"folder mixes {len(uids)} series ({shown})",
                         "pass a folder that holds one series: move each series into its own folder")
    ref_path, ref = headers[0]
    dicom_size.check_size(ref_path, ref, max_pixels)
    validate.check_voxels(folder, (len(headers), *dh.shape_key(ref)), "DICOM series", dicom_size.kept_itemsize(ref))
    for path, ds in headers:
        if dh.shape_key(ds) != dh.shape_key(ref):
            raise InputError(path, f"slice size {dh.describe_shape(ds)} differs from {dh.describe_shape(ref)} "
                             f"of {ref_path.name}", "a series folder holds slices of one size; remove the odd file")
        if dicom_size.dimensions(path, ds)[0] > 1:
            raise InputError(path, "multi-frame file inside a series folder", "pass multi-frame files one at a time")

"""Entry points of :mod:`medanomaly.io`: read any supported path, describe it, find the studies in a folder.

A path is dispatched by content first (the DICM preamble, image signatures) and by extension second, in the spirit
of MONAI's ``LoadImage`` reader selection: https://docs.monai.io/en/stable/transforms.html#loadimage
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError, MedanomalyError
from medanomaly.io import dicom, dicom_header, nifti, png, validate
from medanomaly.types import Study

logger = logging.getLogger(__name__)

SUPPORTED = "PNG, JPEG, BMP, TIFF, DICOM (a file, or a folder holding one series) and NIfTI (.nii, .nii.gz)"
MAX_PIXELS_ENV = "MEDANOMALY_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
_SUMMARY_KEYS = ("path", "kind", "modality", "spacing", "slice_order", "window", "photometric", "bit_depth",
                 "patient_id", "study_uid", "series_uid", "n_files", "repaired")


def max_pixels() -> int:
    """Largest accepted pixels per slice: ``MEDANOMALY_MAX_PIXELS`` if set, else 100 megapixels.

    Raises:
        ValueError: The environment variable is not a positive number.
    """
    return validate.positive_env(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def file_kind(path: Path) -> str | None:
    """Classify a file cheaply: ``"dicom"``, ``"nifti"``, ``"image"`` or None (unsupported)."""
    if dicom.has_preamble(path):
        return "dicom"
    if nifti.is_nifti_name(path):
        return "nifti"
    if path.suffix.lower() in png.IMAGE_SUFFIXES or png.has_image_magic(path):
        return "image"
    if path.suffix.lower() in _DICOM_SUFFIXES or dicom.looks_like_dicom(path):
        return "dicom"
    return None


def read_study(path: str | Path, *, color: bool = False) -> Study:
    """Read one image, DICOM file, DICOM series folder or NIfTI volume.

    Args:
        path: A PNG/JPEG/BMP/TIFF file, a DICOM file (any extension), a folder holding one DICOM series, or a
            ``.nii``/``.nii.gz`` file.
        color: Keep colour images as (S, H, W, 3); by default they become grey by luminance.

    Returns:
        Study with pixels (S, H, W) (or (S, H, W, 3)): native uint8/uint16 for ordinary images, int16 or float32 in
        modality units (HU for CT) for DICOM and float32 for NIfTI; meta as documented in
        :class:`~medanomaly.types.Study`.

    Raises:
        InputError: Anything that cannot be read; the message names the path, the problem and what to do.
        ValueError: ``MEDANOMALY_MAX_PIXELS`` or ``MEDANOMALY_MAX_VOXELS`` is set to something that is not a
            positive number.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder", "check the path")
    limit = max_pixels()
    validate.max_voxels()  # a malformed MEDANOMALY_MAX_VOXELS is the caller's ValueError, not the file's
    try:
        study = _read_any(path, color, limit)
    except (MedanomalyError, ImportError):
        raise
    except Exception as err:
        raise validate.translate(path, err) from err
    return validate.check_study(path, study)


def _read_any(path: Path, color: bool, limit: int) -> Study:
    """Dispatch ``path`` to its reader (see :func:`read_study`)."""
    if path.is_dir():
        return dicom.read_dicom_series(path, color=color, max_pixels=limit)
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise InputError(path, f"cannot be opened ({err.strerror})", "check the file permissions") from err
    kind = file_kind(path)
    if kind == "dicom":
        return dicom.read_dicom_file(path, color=color, max_pixels=limit)
    if kind == "nifti":
        return nifti.read_nifti(path, max_pixels=limit)
    if kind == "image":
        return png.read_image(path, color=color, max_pixels=limit)
    raise InputError(path, f"unsupported file type ({path.suffix or 'no extension'})", f"supported: {SUPPORTED}")


def is_readable(path: str | Path) -> bool:
    """Cheap check (extension and magic bytes only) that :func:`read_study` can try ``path``.

    A folder qualifies when it directly holds at least one DICOM-looking file. Never raises.
    """
    path = Path(path)
    try:
        if path.is_dir():
            return any(p.is_file() and not p.name.startswith(".") and dicom.looks_like_dicom(p)
                       for p in path.iterdir())
        return path.is_file() and file_kind(path) is not None
    except OSError:
        return False


def find_studies(folder: str | Path) -> list[Path]:
    """List the studies in a dataset folder, recursively, sorted (see :func:`scan_studies`).

    What cannot be a study is logged as a warning; use :func:`scan_studies` to get that list.

    Raises:
        InputError: ``folder`` does not exist or is not a folder.
    """
    studies, failures = scan_studies(folder)
    for failure in failures:
        logger.warning("skipping %s", failure)
    return studies


def scan_studies(folder: str | Path) -> tuple[list[Path], list[InputError]]:
    """List the studies in a dataset folder, recursively, and the files that cannot be one.

    Every image and NIfTI file is a study. A folder whose DICOM images are the single-frame slices of one series is
    one study (the folder path, ``folder`` itself included); a lone DICOM image, a multi-frame file, or the only
    file of its series in a mixed folder, is a study by itself. A folder where some slices lack a SeriesInstanceUID
    is returned whole, so that reading it reports why it is refused. Hidden files and folders are ignored.

    Returns:
        The studies, sorted; and one InputError per unreadable DICOM file or per series that shares its folder
        with other series or mixes slice sizes (never silently dropped).

    Raises:
        InputError: ``folder`` does not exist or is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        problem = "not a folder" if root.exists() else "no such folder"
        raise InputError(root, problem, "pass a dataset folder; read single files with read_study()")
    studies: list[Path] = []
    failures: list[InputError] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        files = [here / name for name in sorted(filenames) if not name.startswith(".")]
        kinds = {f: file_kind(f) for f in files}
        studies.extend(f for f in files if kinds[f] in ("image", "nifti"))
        found, failed = _dicom_studies(here, [f for f in files if kinds[f] == "dicom"])
        studies.extend(found)
        failures.extend(failed)
    return sorted(studies), failures


_Member = tuple[Path, tuple[int, int, int], int]


def _dicom_header(path: Path) -> tuple[_Member, str | None] | None:
    """((path, shape key, frames), SeriesInstanceUID) of a DICOM image file, None for DICOM without an image.

    Raises:
        InputError: The header cannot be parsed.
    """
    try:
        ds = dicom.read_dataset(path, header_only=True)
        if not dicom.has_image(ds):
            if not dicom_header.sop_class_name(ds) and "Modality" not in ds:
                raise InputError(path, "not a readable DICOM file (no SOP class, modality or image)",
                                 "the file is truncated or corrupt; copy or export it again")
            if dicom.expects_image(ds):
                raise InputError(path, f"DICOM file ({dicom_header.sop_class_name(ds)}) has no image attributes",
                                 "the file is truncated or corrupt; copy or export it again")
            logger.info("not a study: %s holds no image (%s)", path, dicom_header.sop_class_name(ds))
            return None
        member = (path, dicom_header.shape_key(ds), dicom_header.count(ds, "NumberOfFrames", 1))
        return member, dicom_header.text(ds.get("SeriesInstanceUID"))
    except MedanomalyError:
        raise
    except Exception as err:
        raise validate.translate(path, err) from err


def _dicom_studies(folder: Path, files: list[Path]) -> tuple[list[Path], list[InputError]]:
    """Return the studies among the DICOM files of one folder, and what cannot be one (see :func:`scan_studies`)."""
    groups: dict[str | None, list[_Member]] = {}
    failures: list[InputError] = []
    for path in files:
        try:
            found = _dicom_header(path)
        except InputError as err:
            failures.append(err)
            continue
        if found is not None:
            groups.setdefault(found[1], []).append(found[0])
    members = [m for group in groups.values() for m in group]
    if len(members) == 1:
        return [members[0][0]], failures
    single_frames = all(m[2] == 1 for m in members)
    if len(groups) == 1 and len({m[1] for m in members}) == 1 and single_frames and members:
        return [folder], failures
    if None in groups and any(len(group) > 1 for group in groups.values()) and single_frames:
        return [folder], failures  # reading it says which slices lack the uid
    studies = []
    for uid, group in groups.items():
        if uid is None or len(group) == 1 or all(m[2] > 1 for m in group):
            studies.extend(m[0] for m in group)
        else:
            problem = f"{len(group)} DICOM files of series {uid} not read: the folder mixes series, slice sizes " \
                      "or multi-frame files"
            failures.append(InputError(folder, problem, "move each series into its own folder"))
    return studies, failures


def inspect_study(path: str | Path) -> dict[str, Any]:
    """Read a study and summarise it as a JSON-able dict.

    Returns:
        Keys ``path``, ``kind``, ``shape`` (colour kept, so (S, H, W, 3) for colour), ``dtype``, ``n_slices``,
        ``value_range`` [min, max], ``spacing``, ``slice_order``, ``modality``, ``window``, ``photometric``,
        ``bit_depth``, ``patient_id``, ``study_uid``, ``series_uid``, ``n_files``, ``repaired`` (what the reader
        fixed, e.g. a NaN background); missing values are None.

    Raises:
        InputError: As :func:`read_study`.
    """
    study = read_study(path, color=True)
    pixels = study.pixels
    summary: dict[str, Any] = {key: study.meta.get(key) for key in _SUMMARY_KEYS}
    summary.update(shape=list(pixels.shape), dtype=str(pixels.dtype), n_slices=study.n_slices,
                   value_range=_value_range(pixels))
    return _jsonable(summary)


def _value_range(pixels: np.ndarray) -> list[float] | None:
    """[min, max] of the finite values, or None when there are none."""
    finite = pixels[np.isfinite(pixels)] if np.issubdtype(pixels.dtype, np.floating) else pixels
    if finite.size == 0:
        return None
    return [float(finite.min()), float(finite.max())]


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python numbers, NaN -> None, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

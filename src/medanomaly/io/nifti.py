"""NIfTI reader (``.nii``, ``.nii.gz``) through nibabel, keeping the affine.

A 3D volume of voxel shape (I, J, K) becomes pixels (K, I, J): slices along the last voxel axis, rows along I and
columns along J, so the affine maps (row, col, slice) indices straight to scanner mm. 2D images give S = 1; 4D images
are accepted only when the fourth dimension is 1. NIfTI-1 format: https://nifti.nimh.nih.gov/nifti-1/
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io import validate
from medanomaly.types import Study

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_CORRUPT_HINT = "the file is truncated or corrupt; copy or export it again"
_LIMIT_HINT = "set the environment variable MEDANOMALY_MAX_PIXELS to a larger pixel count to allow it"


def _nibabel() -> Any:
    """Import nibabel lazily, with an install hint when it is missing."""
    try:
        import nibabel
    except ImportError as err:
        msg = "reading NIfTI needs nibabel: pip install nibabel"
        raise ImportError(msg) from err
    return nibabel


def is_nifti_name(path: Path) -> bool:
    """Return True for a ``.nii`` or ``.nii.gz`` file name (any case)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


_first_line = validate.first_line


def _volume_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return the 2D or 3D shape to read, dropping trailing singleton dimensions beyond the third.

    Raises:
        InputError: 1D data, or a 4D+ image whose extra dimensions are not 1 (a time series, several volumes).
    """
    if len(shape) < 2:
        raise InputError(path, f"NIfTI data of shape {shape} is not an image", "pass a 2D image or 3D volume")
    if len(shape) > 3 and any(d != 1 for d in shape[3:]):
        raise InputError(path, f"{len(shape)}D NIfTI of shape {shape}: only 2D images and 3D volumes are read",
                         "extract one volume first, e.g. nibabel's img.slicer[..., 0] or fslroi")
    return tuple(shape[:3])


def read_nifti(path: str | Path, *, max_pixels: int = 100_000_000) -> Study:
    """Read a NIfTI-1/2 image.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        max_pixels: Largest accepted I x J slice, checked from the header before the data is read.

    Returns:
        Study with pixels (S, H, W) float32 (scl_slope/scl_inter applied) and meta ``affine`` (4x4 nested list),
        ``spacing`` (row, col[, slice]) from the header zooms, ``axcodes`` (e.g. ("R", "A", "S")), ``kind``,
        ``path``, ``n_files``, ``disk_dtype``.

    Raises:
        InputError: Unreadable or truncated file, a 4D series, or a slice above ``max_pixels``.
    """
    path = Path(path)
    nib = _nibabel()
    errors = (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, OSError, EOFError, ValueError,
              TypeError, OverflowError, zlib.error)
    try:
        img = nib.load(str(path))
        shape = _volume_shape(path, tuple(int(d) for d in img.shape))
        n_pixels = shape[0] * shape[1]
        if n_pixels > max_pixels:
            problem = f"slice is {shape[0]}x{shape[1]} = {n_pixels:,} pixels, above the limit of {max_pixels:,}"
            raise InputError(path, problem, _LIMIT_HINT)
        validate.check_voxels(path, shape, "NIfTI volume")
        affine = _checked_affine(path, img)
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except errors as err:
        raise InputError(path, f"not a readable NIfTI file ({_first_line(err)})", _CORRUPT_HINT) from err
    volume = data[..., None] if data.ndim == 2 else data
    pixels = np.ascontiguousarray(np.moveaxis(volume, -1, 0), dtype=np.float32)
    return Study(pixels=pixels, meta=_meta(path, img, nib, affine, len(shape)))


def _checked_affine(path: Path, img: Any) -> np.ndarray:
    """The image's 4x4 voxel-to-mm affine and zooms, refused when not finite or singular.

    Raises:
        InputError: NaN/Inf or zero-volume geometry (a corrupt qform/sform or pixdim).
    """
    affine = np.asarray(img.affine, dtype=float)
    zooms = np.asarray(img.header.get_zooms(), dtype=float)
    if not (np.isfinite(affine).all() and np.isfinite(zooms).all()):
        raise InputError(path, "the header geometry (affine or voxel sizes) holds NaN or Inf",
                         "repair the qform/sform and pixdim, e.g. with nibabel or fslorient")
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise InputError(path, "the header affine is singular (a voxel of zero volume)",
                         "repair the qform/sform and pixdim, e.g. with nibabel or fslorient")
    return affine


def _meta(path: Path, img: Any, nib: Any, affine: np.ndarray, ndim: int) -> dict[str, Any]:
    """Metadata of a loaded NIfTI image with ``ndim`` (2 or 3) spatial dimensions."""
    return {
        "path": str(path),
        "kind": "nifti",
        "n_files": 1,
        "modality": None,
        "spacing": tuple(float(z) for z in img.header.get_zooms()[:ndim]),
        "affine": affine.tolist(),
        "axcodes": tuple(nib.aff2axcodes(affine)),
        "disk_dtype": str(img.header.get_data_dtype()),
    }

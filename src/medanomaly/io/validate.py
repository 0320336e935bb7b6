"""The reader contract: a read returns a usable study or raises :class:`~medanomaly.errors.InputError`.

Size limits are checked from headers before any pixel is decoded; after decoding, empty images and NaN/Inf values are
refused. NaN voxels of a volume that all connect to its border (a masked background, e.g. a skull-stripped NIfTI) are
the one repair: they become the lowest finite value, with a warning and ``meta["repaired"]``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import numpy as np
from scipy import ndimage

from medanomaly.errors import InputError
from medanomaly.types import Study

logger = logging.getLogger(__name__)

MAX_VOXELS_ENV = "MEDANOMALY_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 250_000_000  # 1 GB as float32 (500 M values as int16: a 1,900-slice 512x512 CT series)
VOXEL_HINT = f"set the environment variable {MAX_VOXELS_ENV} to a larger voxel count to allow it"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
MALFORMED_HINT = "the file is malformed or corrupt; export or convert it again (e.g. gdcmconv, dcm2niix)"


def positive_env(name: str, default: int) -> int:
    """Value of the environment variable ``name`` as a positive count, ``default`` when unset.

    Raises:
        ValueError: The variable is set to something that is not a positive number.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not math.isfinite(value) or value < 1:
        msg = f"{name} must be a positive count such as {default}, got {raw!r}"
        raise ValueError(msg)
    return int(value)


def max_voxels() -> int:
    """Largest accepted number of float32 values in a study (slices x rows x columns x samples)."""
    return positive_env(MAX_VOXELS_ENV, DEFAULT_MAX_VOXELS)


def check_voxels(path: Path, shape: tuple[int, ...], what: str = "image", itemsize: int = 4) -> None:
    """Raise InputError when a header announces more than :func:`max_voxels` values (before allocating them).

    The limit counts float32 values; a study kept in a 2-byte type (``itemsize`` 2: a CT series in int16) may hold
    twice as many, so the limit bounds memory, not slices.
    """
    total = math.prod(shape)
    limit = max_voxels() * 4 // max(1, min(itemsize, 4))
    if total > limit:
        dims = "x".join(str(d) for d in shape)
        raise InputError(path, f"{what} of {dims} = {total:,} values is above the limit of {limit:,}", VOXEL_HINT)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, at most 160 characters, without object addresses.

    Pillow and others print objects as ``<PIL.PngImagePlugin.PngImageFile ... at 0x7f...>``: the address changes
    from run to run, so it is removed (``at 0x...`` becomes nothing) to keep the same failure the same message.
    """
    lines = _ADDRESS.sub("", str(err)).strip().splitlines() or [type(err).__name__]
    return lines[0][:160]


def translate(path: Path, err: BaseException) -> InputError:
    """Turn any decoder or header-parser exception into an InputError naming the file."""
    if isinstance(err, MemoryError):
        return InputError(path, "not enough memory to decode it (the header may announce a corrupt size)",
                          VOXEL_HINT)
    detail = first_line(err)
    detail = f"{type(err).__name__}: {detail}" if detail != type(err).__name__ else detail
    return InputError(path, f"cannot be decoded ({detail})", MALFORMED_HINT)


def check_study(path: Path, study: Study) -> Study:
    """Refuse an empty study or NaN/Inf values (repairing a NaN background of a volume); return the study.

    Raises:
        InputError: The pixels are empty, or hold Inf, or NaN that is not a border-connected background.
    """
    pixels = study.pixels
    if pixels.size == 0 or pixels.ndim not in (3, 4):
        raise InputError(path, f"holds no image (pixel array of shape {tuple(pixels.shape)})", MALFORMED_HINT)
    if not np.issubdtype(pixels.dtype, np.floating):
        return study
    bad = ~np.isfinite(pixels)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return study
    if pixels.ndim == 3 and n_bad < pixels.size and not np.isinf(pixels).any() and _is_background(bad):
        low = float(np.nanmin(pixels))
        pixels[bad] = low
        note = f"{n_bad:,} NaN voxels outside the body set to {low:g}"
        logger.warning("%s: %s", path, note)
        study.meta["repaired"] = note
        return study
    kinds = "NaN" if not np.isinf(pixels).any() else "NaN/Inf" if np.isnan(pixels).any() else "Inf"
    where = tuple(int(i) for i in np.argwhere(bad)[0][:3])
    problem = f"{n_bad:,} of {pixels.size:,} values are {kinds} (first at slice, row, col {where})"
    raise InputError(path, problem, "fix or mask them in the source file; undefined values cannot be scored")


def _is_background(bad: np.ndarray) -> bool:
    """True when every True voxel of (S, H, W) ``bad`` connects to the in-plane border of its slice."""
    border = np.zeros_like(bad)
    border[:, [0, -1], :] = True
    border[:, :, [0, -1]] = True
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    reached = ndimage.binary_propagation(border & bad, structure=structure, mask=bad)
    return bool(np.array_equal(reached, bad))

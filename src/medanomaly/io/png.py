"""Reader for ordinary 2D image files (PNG, JPEG, BMP, TIFF) through Pillow.

Grey images keep their native integer type: 8-bit -> uint8, 16-bit (Pillow mode ``I;16``) -> uint16. Colour images
become grey by luminance (ITU-R BT.601, Pillow's ``convert("L")``) unless ``color=True``; transparency is composited
over black and palettes are expanded first. Pillow docs: https://pillow.readthedocs.io/en/stable/handbook/concepts.html
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medanomaly.errors import InputError
from medanomaly.io import validate
from medanomaly.types import Study

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")
_KINDS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "TIFF": "tiff"}
_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N")
_CORRUPT_HINT = "the file is truncated or corrupt; copy or export it again"
_LIMIT_HINT = "set the environment variable MEDANOMALY_MAX_PIXELS to a larger pixel count to allow it"


def has_image_magic(path: Path) -> bool:
    """Return True when the file starts with a PNG, JPEG, BMP or TIFF signature (whatever its extension)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return head.startswith(_MAGIC)


def read_image(path: str | Path, *, color: bool = False, max_pixels: int = 100_000_000) -> Study:
    """Read one PNG, JPEG, BMP or TIFF image (the first page of a multi-page TIFF).

    Args:
        path: The image file.
        color: Keep colour images as (1, H, W, 3) uint8; grey images stay (1, H, W) either way.
        max_pixels: Largest accepted width x height, checked before decoding.

    Returns:
        Study with pixels (1, H, W) uint8/uint16 grey (int32 or float32 for 32-bit files) or (1, H, W, 3) uint8,
        and meta ``path``, ``kind``, ``bit_depth``, ``photometric``, ``mode``, ``n_files``.

    Raises:
        InputError: The file cannot be decoded or is larger than ``max_pixels``.
    """
    path = Path(path)
    errors = (OSError, SyntaxError, ValueError, EOFError, TypeError, struct.error, IndexError, KeyError)
    try:
        # from memory: a corrupt chunk length then reads to the end instead of allocating up to 4 GB
        with Image.open(io.BytesIO(path.read_bytes())) as img:
            _check_size(path, img.size, max_pixels)
            if getattr(img, "n_frames", 1) > 1:
                logger.warning("%s holds %d frames; reading the first", path, img.n_frames)
            img.load()
            pixels, bit_depth, photometric = _to_array(img, color)
            mode, kind = img.mode, _KINDS.get(str(img.format), str(img.format).lower())
    except Image.DecompressionBombError as err:
        problem = f"image too large for Pillow to decode safely ({validate.first_line(err)})"
        raise InputError(path, problem, "downscale the image") from err
    except errors as err:
        raise InputError(path, f"not a readable image ({validate.first_line(err)})", _CORRUPT_HINT) from err
    meta: dict[str, Any] = {"path": str(path), "kind": kind, "bit_depth": bit_depth, "photometric": photometric,
                            "mode": mode, "n_files": 1, "modality": None, "spacing": None}
    return Study(pixels=np.ascontiguousarray(pixels[None]), meta=meta)


def _check_size(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """Raise InputError when width x height exceeds ``max_pixels``."""
    width, height = size
    if width * height > max_pixels:
        problem = f"image is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}"
        raise InputError(path, problem, _LIMIT_HINT)


def _to_array(img: Image.Image, color: bool) -> tuple[np.ndarray, int, str]:
    """Convert a loaded Pillow image.

    Returns:
        (H, W) or (H, W, 3) array, its bit depth, and ``"MONOCHROME2"`` or ``"RGB"``.
    """
    if img.mode in _GREY16:
        return np.asarray(img).astype(np.uint16), 16, "MONOCHROME2"
    if img.mode == "I":
        arr = np.asarray(img)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16), 16, "MONOCHROME2"
        return arr.astype(np.int32), 32, "MONOCHROME2"
    if img.mode == "F":
        return np.asarray(img).astype(np.float32), 32, "MONOCHROME2"
    if img.mode in ("L", "1"):
        return np.asarray(img.convert("L")), 8, "MONOCHROME2"
    rgb = _flatten_to_rgb(img)
    if color:
        return np.asarray(rgb), 8, "RGB"
    return np.asarray(rgb.convert("L")), 8, "MONOCHROME2"


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of (H, W) float in [0, 1] or uint8, or (H, W, 3|4) uint8: the one image encoder of the outputs."""
    array = image if image.dtype == np.uint8 else np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _flatten_to_rgb(img: Image.Image) -> Image.Image:
    """Palette, CMYK, YCbCr, ... -> RGB; any transparency is composited over black."""
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if not has_alpha:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")

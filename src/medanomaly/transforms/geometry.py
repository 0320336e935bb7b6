"""Resize to the model resolution keeping the aspect ratio (pad the short side), and map results back."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage.transform import resize


@dataclass(frozen=True)
class Geometry:
    """How an (H, W) slice was placed into the square model grid.

    Attributes:
        original_shape: (H, W) of the slice as read.
        resized_shape: (h, w) after scaling, before padding.
        offset: (top, left) padding added before the resized slice.
        resolution: Side of the square model grid.
    """

    original_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    offset: tuple[int, int]
    resolution: int

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Remove the padding from an (..., R, R) array, giving (..., h, w)."""
        top, left = self.offset
        height, width = self.resized_shape
        return array[..., top : top + height, left : left + width]

    def to_original(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """Map an (..., R, R) model-space array back onto the (..., H, W) grid of the original slice."""
        cropped = self.crop(array)
        shape = cropped.shape[:-2] + tuple(self.original_shape)
        return resize(cropped, shape, order=order, preserve_range=True, anti_aliasing=False).astype(array.dtype)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


def resize_pad(image: np.ndarray, resolution: int) -> tuple[np.ndarray, Geometry]:
    """Scale an (H, W) or (H, W, C) image so its longer side is ``resolution`` and zero-pad to a square.

    Returns:
        The (R, R[, C]) float32 image and the :class:`Geometry` that undoes it.
    """
    height, width = image.shape[:2]
    scale = resolution / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        image = resize(image, (new_h, new_w) + image.shape[2:], order=1, preserve_range=True, anti_aliasing=scale < 1)
    top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
    padding = [(top, resolution - new_h - top), (left, resolution - new_w - left)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image.astype(np.float32), padding)
    return padded, Geometry((height, width), (new_h, new_w), (top, left), resolution)

"""AnatPaste's synthetic anomalies: a patch cut from a normal image, blended into the organ of another (or the same).

The patch has a random area, aspect ratio and shape (ellipse or rectangle with soft edges), a random intensity
change and a random opacity; where it lands is drawn from the organ mask, and its blending weight is multiplied
by the mask, so pixels outside the organ never change. After Sato et al., "AnatPaste: Anatomy-aware
self-supervised learning for anomaly detection in chest radiographs", iScience 2023,
https://arxiv.org/abs/2205.04282 (itself built on CutPaste, Li et al., CVPR 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PasteConfig:
    """How synthetic lesions are drawn.

    Attributes:
        area: Range of the patch area, as fractions of the image area.
        aspect: Smallest aspect ratio; the ratio is log-uniform in ``[aspect, 1 / aspect]``.
        alpha: Range of the opacity of the pasted patch (1 = replace the pixels).
        intensity: Largest relative gain change of the patch (gain in ``[1 - i, 1 + i]``, offset in ``[-i/2, i/2]``).
        softness: Width of the soft edge, as a fraction of the patch radius (0 = hard edge).
        other_image: Probability that the patch comes from another image of the batch rather than the same one.
    """

    area: tuple[float, float] = (0.02, 0.15)
    aspect: float = 0.3
    alpha: tuple[float, float] = (0.5, 1.0)
    intensity: float = 0.1
    softness: float = 0.3
    other_image: float = 0.5


def paste_patches(
    images: Tensor, masks: Tensor, generator: torch.Generator, config: PasteConfig | None = None
) -> tuple[Tensor, Tensor]:
    """Paste one synthetic lesion into each image, inside its organ mask.

    Args:
        images: (N, C, H, W) float in [0, 1].
        masks: (N, H, W) bool organ masks (where a lesion may appear; an empty mask means anywhere).
        generator: CPU generator every random choice is drawn from.
        config: Patch settings (defaults if None).

    Returns:
        The (N, C, H, W) pasted images in [0, 1] (new tensor) and the (N, H, W) blending weights in [0, 1]
        (0 outside the organ mask: those pixels are exactly unchanged).
    """
    config = config or PasteConfig()
    n, _, height, width = images.shape
    out, weights = images.clone(), torch.zeros(n, height, width, dtype=images.dtype, device=images.device)
    for index in range(n):
        source = _source_index(index, n, config.other_image, generator)
        patch, size = _cut(images[source], config, generator)
        centre = _centre(masks[index], generator)
        canvas, shape = _place(patch, size, centre, (height, width), config.softness, generator)
        alpha = _uniform(*config.alpha, generator)
        mask = masks[index].to(images.dtype) if bool(masks[index].any()) else torch.ones_like(shape)
        weight = (alpha * shape * mask.to(shape.device)).to(images.dtype)
        out[index] = images[index] * (1 - weight) + canvas.to(images.dtype) * weight
        weights[index] = weight
    return out, weights


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _source_index(index: int, n: int, other_image: float, generator: torch.Generator) -> int:
    if n < 2 or _uniform(0.0, 1.0, generator) >= other_image:
        return index
    return (index + 1 + int(torch.randint(n - 1, (), generator=generator))) % n


def _cut(image: Tensor, config: PasteConfig, generator: torch.Generator) -> tuple[Tensor, tuple[int, int]]:
    """A (C, h, w) patch of random area/aspect at a random place, with a random gain and offset, in [0, 1]."""
    _, height, width = image.shape
    area = _uniform(*config.area, generator) * height * width
    log_aspect = math.log(max(min(config.aspect, 1.0), 1e-3))
    aspect = math.exp(_uniform(log_aspect, -log_aspect, generator))
    h = min(max(int(round(math.sqrt(area / aspect))), 2), height)
    w = min(max(int(round(math.sqrt(area * aspect))), 2), width)
    top = int(torch.randint(height - h + 1, (), generator=generator))
    left = int(torch.randint(width - w + 1, (), generator=generator))
    gain = 1.0 + config.intensity * _uniform(-1.0, 1.0, generator)
    offset = 0.5 * config.intensity * _uniform(-1.0, 1.0, generator)
    return (image[:, top : top + h, left : left + w] * gain + offset).clamp(0.0, 1.0), (h, w)


def _centre(mask: Tensor, generator: torch.Generator) -> tuple[int, int]:
    """A random pixel of ``mask`` (of the whole image if the mask is empty)."""
    candidates = mask.nonzero() if bool(mask.any()) else torch.ones_like(mask, dtype=torch.bool).nonzero()
    row, col = candidates[int(torch.randint(len(candidates), (), generator=generator))].tolist()
    return row, col


def _place(
    patch: Tensor,
    size: tuple[int, int],
    centre: tuple[int, int],
    image_size: tuple[int, int],
    softness: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """The patch on an image-sized canvas centred at ``centre`` and its (H, W) soft shape weight in [0, 1]."""
    (h, w), (height, width) = size, image_size
    top, left = centre[0] - h // 2, centre[1] - w // 2
    canvas = torch.zeros(patch.shape[0], height, width, dtype=patch.dtype, device=patch.device)
    rows = slice(max(top, 0), min(top + h, height))
    cols = slice(max(left, 0), min(left + w, width))
    canvas[:, rows, cols] = patch[:, rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    y = (torch.arange(height, device=patch.device, dtype=torch.float32) - (top + (h - 1) / 2)) / (h / 2)
    x = (torch.arange(width, device=patch.device, dtype=torch.float32) - (left + (w - 1) / 2)) / (w / 2)
    y, x = y[:, None].abs(), x[None, :].abs()
    ellipse = _uniform(0.0, 1.0, generator) < 0.5
    radius = torch.sqrt(y**2 + x**2) if ellipse else torch.maximum(y, x)  # 1 on the shape's outline
    shape = ((1.0 - radius) / softness).clamp(0.0, 1.0) if softness > 0 else (radius <= 1.0).float()
    return canvas, shape

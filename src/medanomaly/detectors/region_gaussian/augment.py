"""Acquisition-like random changes of normal images: small pose, exposure and contrast differences.

Used when fitting feature Gaussians so that they describe normal anatomy under the variation between
acquisitions (patient position, field of view, exposure, processing), not only the training set's habits:
test normals from another period or device then stay inside the normal model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def acquisition_jitter(
    images: Tensor,
    generator: torch.Generator,
    *,
    rotation_degrees: float = 6.0,
    scale: float = 0.1,
    shift: float = 0.05,
    gamma: float = 1.33,
    contrast: float = 0.15,
    brightness: float = 0.05,
) -> Tensor:
    """Randomly rotated, scaled, shifted, gamma-, contrast- and brightness-changed copies of (N, C, H, W) in [0, 1].

    Args:
        images: Images in [0, 1].
        generator: Seeded source of the random draws (one set per image).
        rotation_degrees: Rotation drawn from +-this.
        scale: Zoom factor drawn from 1 +- this.
        shift: Translation drawn from +- this fraction of the image side, per axis.
        gamma: Gamma drawn log-uniformly from [1 / gamma, gamma].
        contrast: Contrast factor around 0.5 drawn from 1 +- this.
        brightness: Offset drawn from +- this.

    Returns:
        (N, C, H, W) float32 in [0, 1]; pixels moved in from outside the image are 0.
    """
    count = len(images)

    def uniform(half_width: float) -> Tensor:
        return (torch.rand(count, generator=generator) * 2 - 1) * half_width

    angle = uniform(math.radians(rotation_degrees))
    zoom = 1 + uniform(scale)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, uniform(2 * shift)], 1), torch.stack([sin, cos, uniform(2 * shift)], 1)], 1
    )
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    exponent = torch.exp(uniform(math.log(gamma))).to(images).view(-1, 1, 1, 1)
    factor = (1 + uniform(contrast)).to(images).view(-1, 1, 1, 1)
    offset = uniform(brightness).to(images).view(-1, 1, 1, 1)
    adjusted = (moved.clamp(0, 1) ** exponent - 0.5) * factor + 0.5 + offset
    return adjusted.clamp(0, 1)

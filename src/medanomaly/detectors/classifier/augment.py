"""Seeded, batched data augmentation on tensors: flips, small rotations and shifts, contrast and brightness.

Every random parameter is drawn once per image from the caller's :class:`torch.Generator` (on the CPU), so a run is
reproducible from ``random_state`` alone; the work itself runs on the images' device through one
``affine_grid``/``grid_sample`` call per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class RandomAugment:
    """Random geometric and intensity jitter for a batch of images in [0, 1].

    Attributes:
        flip: Probability of a left-right flip (0 disables it: do so when laterality matters, e.g. dextrocardia).
        rotation: Largest rotation, in degrees (uniform in ``[-rotation, rotation]``).
        shift: Largest translation, as a fraction of the image side.
        scale: Largest relative zoom (uniform in ``[1 - scale, 1 + scale]``).
        contrast: Largest relative contrast change around the image mean (uniform in ``[1 - c, 1 + c]``).
        brightness: Largest additive brightness change.
    """

    flip: float = 0.5
    rotation: float = 10.0
    shift: float = 0.08
    scale: float = 0.05
    contrast: float = 0.2
    brightness: float = 0.05

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a batch.

        Args:
            images: (N, C, H, W) float32 in [0, 1].
            generator: CPU generator all parameters are drawn from.

        Returns:
            (N, C, H, W) float32 in [0, 1], a new tensor.
        """
        images = _affine(images, self._matrices(len(images), generator).to(images.device))
        n = len(images)
        contrast = 1.0 + self.contrast * (2 * torch.rand(n, generator=generator) - 1)
        brightness = self.brightness * (2 * torch.rand(n, generator=generator) - 1)
        contrast = contrast.to(images.device).view(n, 1, 1, 1)
        brightness = brightness.to(images.device).view(n, 1, 1, 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return ((images - mean) * contrast + mean + brightness).clamp(0.0, 1.0)

    def _matrices(self, n: int, generator: torch.Generator) -> Tensor:
        """(N, 2, 3) affine matrices in ``affine_grid``'s normalised coordinates."""
        angle = math.radians(self.rotation) * (2 * torch.rand(n, generator=generator) - 1)
        zoom = 1.0 + self.scale * (2 * torch.rand(n, generator=generator) - 1)
        shift = 2 * self.shift * (2 * torch.rand(n, 2, generator=generator) - 1)  # [-1, 1] spans the side: x2
        flip = torch.where(torch.rand(n, generator=generator) < self.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        row_x = torch.stack([cos * flip, -sin, shift[:, 0]], dim=1)
        row_y = torch.stack([sin * flip, cos, shift[:, 1]], dim=1)
        return torch.stack([row_x, row_y], dim=1)


def _affine(images: Tensor, matrices: Tensor) -> Tensor:
    """Resample (N, C, H, W) images by (N, 2, 3) matrices; outside pixels repeat the border."""
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

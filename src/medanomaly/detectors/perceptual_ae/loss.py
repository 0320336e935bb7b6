"""Perceptual distance between an image and its reconstruction, in a pretrained CNN's feature space.

The relative perceptual L1 of Shvetsova et al. (https://arxiv.org/abs/2006.13265): per feature position, the mean
absolute difference of the two feature vectors, divided by the mean absolute feature of the target image (a
per-image scale, not differentiated), so bright and dark images weigh alike. Optionally a pixel L1 term is added.
The image loss (used for training and as the anomaly score) is the mean over positions; its spatial form, upsampled
to the image size, is the anomaly map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medanomaly.features import FeatureExtractor


class PerceptualDistance(nn.Module):
    """Relative perceptual L1 (+ ``pixel_weight`` * pixel L1) between images and reconstructions.

    Args:
        extractor: A :class:`~medanomaly.features.FeatureExtractor` returning one layer (frozen; gradients flow to the
            reconstruction through it).
        pixel_weight: Weight of the pixel L1 term (0 = perceptual only).
    """

    def __init__(self, extractor: FeatureExtractor, pixel_weight: float = 0.0):
        super().__init__()
        self.extractor = extractor
        self.pixel_weight = pixel_weight

    def forward(self, reconstruction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Distances of reconstructions to targets of the same shape.

        Args:
            reconstruction: (N, C, H, W) in [0, 1].
            target: (N, C, H, W) in [0, 1].

        Returns:
            (N,) per-image loss and (N, H, W) map, its spatial form (feature distance upsampled bilinearly, plus
            the weighted pixel error), both >= 0.
        """
        with torch.no_grad():
            target_features = self.extractor(target)[0]
        features = self.extractor(reconstruction)[0]
        scale = target_features.abs().flatten(1).mean(dim=1).clamp_min(1e-6).view(-1, 1, 1)
        distance = (features - target_features).abs().mean(dim=1) / scale  # (N, h, w)
        loss = distance.flatten(1).mean(dim=1)
        size = tuple(target.shape[-2:])
        maps = F.interpolate(distance.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
        if self.pixel_weight:
            pixel = (reconstruction - target).abs().mean(dim=1)
            loss = loss + self.pixel_weight * pixel.flatten(1).mean(dim=1)
            maps = maps + self.pixel_weight * pixel
        return loss, maps

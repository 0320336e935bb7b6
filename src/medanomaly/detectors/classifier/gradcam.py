"""Grad-CAM: where a CNN looked for a class (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391).

The class logit is differentiated with respect to the last convolutional feature map; the channel weights are the
spatially averaged gradients; the map is ReLU of the weighted channel sum, upsampled bilinearly to the input size.
Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (the features are cloned into a normal tensor and
only the head is differentiated); no hooks are left behind and no parameter gradient is written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grad_cam(features: Tensor, head: nn.Module, target: int, size: tuple[int, int]) -> Tensor:
    """Grad-CAM of class ``target``.

    Args:
        features: (N, F, h, w) last convolutional activations.
        head: Module mapping the features to (N, K) logits (pooling + linear), in eval mode.
        target: Class index to explain.
        size: (H, W) of the output maps (the input image size).

    Returns:
        (N, H, W) non-negative maps, unnormalised (units of logit per feature).
    """
    with torch.inference_mode(False), torch.enable_grad():
        activations = features.detach().clone().requires_grad_(True)
        logits = head(activations)
        (gradients,) = torch.autograd.grad(logits[:, target].sum(), activations)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations.detach()).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


def normalized_cam(cam: Tensor, scale: Tensor | None = None) -> Tensor:
    """Divide each map by its maximum (all-zero maps stay zero), then optionally multiply by a per-image scale.

    Args:
        cam: (N, H, W) non-negative maps.
        scale: (N,) factors, e.g. the probability of the explained class, so a confident abnormal case shows a
            hotter map than a doubtful one.

    Returns:
        (N, H, W) maps in [0, 1].
    """
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    maps = cam / peak
    return maps if scale is None else maps * scale.view(-1, 1, 1)

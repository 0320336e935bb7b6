"""Feature-map helpers shared by the pretrained-feature detectors: patch embeddings and map smoothing."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def concat_layers(features: Sequence[Tensor], mode: str = "bilinear", pool: int = 1) -> Tensor:
    """Concatenate feature maps of several layers at the resolution of the first (shallowest) one.

    Args:
        features: (N, C_i, H_i, W_i) maps, shallowest first.
        mode: Upsampling of the deeper maps: ``bilinear`` (PatchCore) or ``nearest`` (PaDiM).
        pool: Size of the average-pooling neighbourhood applied to each map first (PatchCore's locally aware
            patch features use 3; 1 = none). Border windows average over the valid pixels only.

    Returns:
        (N, sum C_i, H_0, W_0) float32.
    """
    size = features[0].shape[-2:]
    parts = []
    for feature in features:
        if pool > 1:
            feature = F.avg_pool2d(feature, pool, stride=1, padding=pool // 2, count_include_pad=False)
        if feature.shape[-2:] != size:
            align = False if mode == "bilinear" else None
            feature = F.interpolate(feature, size=size, mode=mode, align_corners=align)
        parts.append(feature)
    return torch.cat(parts, dim=1)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    """(2r + 1,) normalised 1D Gaussian with r = round(truncate * sigma), as ``scipy.ndimage.gaussian_filter``."""
    radius = max(int(truncate * sigma + 0.5), 1)
    positions = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
    return kernel / kernel.sum()


def smooth_maps(maps: Tensor, size: tuple[int, int], sigma: float = 4.0) -> Tensor:
    """Upsample patch-level maps to the image size and smooth them with a Gaussian (reflected borders).

    Both steps are linear and separable, so they run as two small matrix products per map,
    ``A_h @ map @ A_w.T`` (:func:`upsample_smooth_matrix`): far cheaper than a convolution at the image size.

    Args:
        maps: (N, h, w) patch scores.
        size: Output (H, W), the input image size.
        sigma: Gaussian standard deviation in output pixels; 0 disables smoothing.

    Returns:
        (N, H, W) float32 maps.
    """
    rows = upsample_smooth_matrix(maps.shape[-2], size[0], sigma).to(maps.device)
    cols = upsample_smooth_matrix(maps.shape[-1], size[1], sigma).to(maps.device)
    return rows @ maps.float() @ cols.T


@functools.lru_cache(maxsize=32)
def upsample_smooth_matrix(n_in: int, n_out: int, sigma: float) -> Tensor:
    """(n_out, n_in) matrix of 1D linear upsampling (``align_corners=False``) then Gaussian smoothing.

    The Gaussian is :func:`gaussian_kernel` (truncated at 4 sigma, and at the signal's length), applied with
    reflected borders. Built by running both operations on the identity; cached per (n_in, n_out, sigma).
    """
    basis = torch.eye(n_in)[:, None, :]  # n_in unit signals of length n_in
    out = F.interpolate(basis, size=n_out, mode="linear", align_corners=False) if n_out != n_in else basis
    if sigma > 0:
        kernel = gaussian_kernel(sigma)
        radius = min(len(kernel) // 2, n_out - 1)
        kernel = kernel[len(kernel) // 2 - radius : len(kernel) // 2 + radius + 1]
        kernel = kernel / kernel.sum()
        out = F.conv1d(F.pad(out, (radius, radius), mode="reflect"), kernel.view(1, 1, -1)) if radius else out
    return out[:, 0, :].T.contiguous()


def topk_mean(maps: Tensor, k: int) -> Tensor:
    """(N,) mean of the ``k`` largest values of each (N, H, W) map (k = 1: the maximum)."""
    flat = maps.flatten(1)
    return flat.topk(min(max(int(k), 1), flat.shape[1]), dim=1).values.mean(dim=1)


def output_size(size: int, stride: int) -> int:
    """Feature-map size of a layer with ``stride`` for an input of ``size`` pixels (ceil, "SAME" padding)."""
    return math.ceil(size / stride)

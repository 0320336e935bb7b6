"""Image scores and maps of reconstruction residuals, restricted to the anatomy.

A reconstruction method's residual map is largest where any reconstruction struggles: the edge of the head or body,
padding, burnt-in text. Scoring only the label-free foreground (:mod:`medanomaly.transforms.foreground`) keeps
those from dominating, and a mean over the foreground (not over the whole image) does not depend on how much of the
image the anatomy fills. Shared by ``conv_ae`` and ``perceptual_ae``.

Scores:
    ``mean``: mean residual over the foreground (MedIAnomaly's AE score, Cai et al. 2024, restricted to it).
    ``topk``: mean of the largest ``topk_fraction`` of the median-filtered residual inside the foreground: reacts to
        small lesions that barely move the mean.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from medanomaly.mapping import filter_map
from medanomaly.transforms.foreground import get_mask, has_dark_frame, masks

SCORES = ("mean", "topk")
#: Median filter applied to a residual map before its top-k mean (pixels, at the model's resolution).
MEDIAN_SIZE = 3
#: Training images looked at to resolve ``foreground="auto"`` for a data set.
AUTO_SAMPLE = 64


def check_scoring(foreground: str, score_rule: str, topk_fraction: float) -> None:
    """ValueError naming the choices when a scoring hyper-parameter is unknown or out of range."""
    get_mask(foreground)
    if score_rule not in SCORES:
        msg = f"score_rule must be one of {SCORES}, got {score_rule!r}"
        raise ValueError(msg)
    if not 0.0 < topk_fraction <= 1.0:
        msg = f"topk_fraction must lie in (0, 1], got {topk_fraction}"
        raise ValueError(msg)


def resolve_foreground(foreground: str, normal: Tensor) -> str:
    """The mask a model fitted on ``normal`` uses: one choice for the whole data set, so every image is scored alike.

    ``auto`` becomes ``outline`` when most training images (an evenly spaced sample of up to ``AUTO_SAMPLE``) have a
    dark outer frame (CT/MR slices, padded images), else ``none`` (radiographs filling their field). Other names
    stay as they are.
    """
    if foreground != "auto" or len(normal) == 0:
        return foreground
    rows = np.unique(np.linspace(0, len(normal) - 1, min(AUTO_SAMPLE, len(normal))).round().astype(int))
    grey = normal[torch.from_numpy(rows)].float().mean(dim=1).cpu().numpy()
    dark = np.mean([has_dark_frame(image) for image in grey])
    return "outline" if dark >= 0.5 else "none"


def foreground_masks(images: Tensor, foreground: str) -> Tensor:
    """(N, C, H, W) images in [0, 1] -> (N, H, W) bool masks of the named kind (on the images' device)."""
    if foreground == "none":
        return torch.ones((len(images), *images.shape[-2:]), dtype=torch.bool, device=images.device)
    found = masks(images.detach().float().cpu().numpy(), foreground)
    return torch.from_numpy(found).to(images.device)


def masked_scores(residual: Tensor, images: Tensor, foreground: str, score: str, topk_fraction: float) -> tuple:
    """Scores and maps of a residual restricted to the foreground of ``images``.

    Args:
        residual: (N, H, W) per-pixel residual, >= 0.
        images: (N, C, H, W) the scored images (the masks are computed from them).
        foreground: A registered mask name (``auto``, ``outline``, ``lung``, ``none``, ...).
        score: ``mean`` or ``topk`` (see the module docstring).
        topk_fraction: Share of the foreground averaged by ``topk``.

    Returns:
        (N,) scores, (N, H, W) residual set to 0 outside the foreground, (N, H, W) float masks.
    """
    mask = foreground_masks(images, foreground)
    maps = residual * mask
    if score == "mean":
        scores = maps.flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    else:
        filtered = np.stack([filter_map(m, MEDIAN_SIZE) for m in residual.detach().cpu().numpy()])
        scores = torch.tensor(
            [_topk_inside(f, m, topk_fraction) for f, m in zip(filtered, mask.cpu().numpy(), strict=True)],
            dtype=residual.dtype,
            device=residual.device,
        )
    return scores, maps, mask.to(residual.dtype)


def _topk_inside(values: np.ndarray, mask: np.ndarray, fraction: float) -> float:
    inside = values[mask]
    k = max(1, math.ceil(fraction * inside.size - 1e-9))
    return float(np.partition(inside, inside.size - k)[inside.size - k :].mean())

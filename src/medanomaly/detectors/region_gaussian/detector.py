"""Region Gaussians: a Gaussian per image region and layer over pooled pretrained features of normal images.

Rippel et al., "Modeling the Distribution of Normal Data in Pre-Trained Deep Features for Anomaly Detection",
ICPR 2020 (https://arxiv.org/abs/2005.14140), fit one multivariate Gaussian (Ledoit-Wolf shrinkage) to the globally
pooled features of each layer of an ImageNet network and sum the Mahalanobis distances. Here each layer's map is
average-pooled to a coarse grid of regions instead (``regions``: layer -> grid side), one Gaussian per region, so
that a lesion covering one lung region is not averaged away by the whole image, while regions stay large enough
that patient position does not matter; PaDiM (per feature position) is the fine-grained end of the same idea.
Training normals are also seen under random acquisition-like changes (:func:`acquisition_jitter`, ``augment_copies``
copies each), which makes the Gaussians describe normal anatomy rather than one site's positioning and exposure.

Score: each region's distance is standardised by the mean and spread of that region's distances on training normals
held out from its Gaussian (``holdout``), then the standardised distances are averaged over all regions and
layers. Map: each layer's standardised region grid, upsampled to the image (bilinear) and smoothed, averaged over
layers: coarse by design (a region is 1/4-1/16 of the image side), it says which part of the image is unusual.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from torch import Tensor, nn
from tqdm.auto import tqdm

from medanomaly.detectors.base import BaseDetector
from medanomaly.detectors.padim.gaussian import GaussianModel
from medanomaly.detectors.patchcore.detector import _check_weights
from medanomaly.detectors.region_gaussian.augment import acquisition_jitter
from medanomaly.features import FeatureExtractor
from medanomaly.features.maps import smooth_maps
from medanomaly.registry import register
from medanomaly.training.context import RunConfig
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
#: Default layers and grid sides per backbone: a mid-level layer on a 4 x 4 grid, a deep one on 2 x 2.
DEFAULT_REGIONS = {
    "efficientnet_lite0": {"blocks.10": 4, "blocks.15": 2},
    "efficientnet_lite2": {"blocks.14": 4, "blocks.20": 2},
    "resnet18": {"layer3": 4, "layer4": 2},
    "wide_resnet50_2": {"layer3": 4, "layer4": 2},
    "tiny": {"stage2": 2, "stage3": 1},
}


class _Standardiser(nn.Module):
    """Per-region mean and spread of held-out normal distances (buffers)."""

    mean: Tensor
    scale: Tensor

    def __init__(self, n_regions: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_regions))
        self.register_buffer("scale", torch.ones(n_regions))


@register("region_gaussian")
class RegionGaussian(BaseDetector):
    """Gaussians of region-pooled pretrained features; standardised Mahalanobis distances averaged.

    Args:
        backbone: Feature backbone (:func:`medanomaly.features.available_backbones`).
        regions: Layer name -> grid side (the layer's map is pooled to side x side regions); None =
            :data:`DEFAULT_REGIONS` for the backbone.
        weights: Backbone state-dict path; None = the bundled weights.
        augment_copies: Randomly changed copies of each training normal added to the Gaussians (0 = none).
        holdout: Fraction of the training normals held out to standardise each region's distances (at least 2
            images; the Gaussians are then refitted on all of them).
        sigma: Smoothing of the map, in input pixels.
        runtime: Feature extractor runtime (``auto``, ``torch``, ``onnx``); ``auto``'s choice is saved at fit time.
        random_state: Seed of the hold-out draw and of the augmentation.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"backbone": "tiny", "augment_copies": 1, "runtime": "torch"}
    tiny_train: ClassVar[dict[str, Any]] = {"batch_size": 64}
    default_resolution: ClassVar[int | None] = 224

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        regions: dict[str, int] | None = None,
        weights: str | None = None,
        augment_copies: int = 2,
        holdout: float = 0.2,
        sigma: float = 8.0,
        runtime: str = "auto",
        random_state: int | None = 0,
    ) -> None:
        self.backbone = backbone
        self.regions = regions
        self.weights = weights
        self.augment_copies = augment_copies
        self.holdout = holdout
        self.sigma = sigma
        self.runtime = runtime
        self.random_state = random_state

    # --- fitting ----------------------------------------------------------------------------------------------
    def _fit(self, normal: Tensor, *, mixed: Tensor | None, abnormal: Tensor | None, run: RunConfig) -> Self:
        """Fit the region Gaussians on ``normal`` (N, C, H, W) in [0, 1] (N >= 4).

        Args:
            normal: Healthy images.
            mixed: Unused.
            abnormal: Unused.
            run: Batch size, device and progress bars.
        """
        self._validate(normal)
        started = time.perf_counter()
        self.extractor_ = self._make_extractor().to(run.torch_device)
        generator = torch.Generator().manual_seed(int(self.random_state or 0))
        originals = self._pooled(normal, run, None, "region features")
        copies = [self._pooled(normal, run, generator, f"augmented copy {i + 1}") for i in range(self.augment_copies)]
        extracted = time.perf_counter()
        held_out = self._holdout_mask(len(normal), generator)
        gaussians: list[GaussianModel] = []
        scale_parts, mean_parts = [], []
        for layer in range(len(self._regions())):
            views = [originals[layer], *[copy[layer] for copy in copies]]
            provisional = _fit_gaussians(np.concatenate([view[~held_out] for view in views]))
            distances = provisional(torch.from_numpy(originals[layer][held_out]).float()).numpy()
            mean_parts.append(distances.mean(axis=0))
            scale_parts.append(np.maximum(distances.std(axis=0, ddof=1), 1e-6))
            gaussians.append(_fit_gaussians(np.concatenate(views)))
        self.gaussians_ = gaussians
        self.standardiser_ = _Standardiser(sum(len(part) for part in mean_parts))
        self.standardiser_.mean.copy_(torch.from_numpy(np.concatenate(mean_parts)))
        self.standardiser_.scale.copy_(torch.from_numpy(np.concatenate(scale_parts)))
        self.to(run.torch_device)
        self.input_shape_ = tuple(int(size) for size in normal.shape[1:])
        self.fit_timings_ = {"features": extracted - started, "gaussians": time.perf_counter() - extracted}
        logger.info("region_gaussian: %s, %d normals x %d views", self._regions(), len(normal), 1 + self.augment_copies)
        return self

    def _validate(self, normal: Tensor) -> None:
        if normal is None or normal.ndim != 4 or len(normal) < 4:
            msg = "region_gaussian needs at least 4 normal training images of shape (N, C, H, W)"
            raise ValueError(msg)
        if self.augment_copies < 0 or not 0 < self.holdout < 1 or self.sigma < 0:
            msg = "region_gaussian needs augment_copies >= 0, 0 < holdout < 1 and sigma >= 0"
            raise ValueError(msg)
        if any(int(side) < 1 for side in self._regions().values()):
            msg = f"region_gaussian: every grid side in regions must be >= 1, got {self._regions()}"
            raise ValueError(msg)

    def _holdout_mask(self, count: int, generator: torch.Generator) -> np.ndarray:
        size = min(max(2, round(self.holdout * count)), count - 2)
        mask = np.zeros(count, dtype=bool)
        mask[torch.randperm(count, generator=generator)[:size].numpy()] = True
        return mask

    def _regions(self) -> dict[str, int]:
        regions = self.regions or DEFAULT_REGIONS.get(self.backbone)
        if not regions:
            msg = f"region_gaussian has no default regions for backbone {self.backbone!r}: pass regions"
            raise ValueError(msg)
        return {str(layer): int(side) for layer, side in regions.items()}

    def _make_extractor(self, fitted_runtime: str | None = None) -> FeatureExtractor:
        runtime = fitted_runtime if self.runtime == "auto" and fitted_runtime else self.runtime
        return FeatureExtractor(self.backbone, list(self._regions()), self.weights, runtime=runtime)

    def _pooled(
        self, images: Tensor, run: RunConfig, generator: torch.Generator | None, description: str
    ) -> list[np.ndarray]:
        """Per layer, (N, regions, channels) float64 region features (of jittered images when a generator is given)."""
        parts: list[list[Tensor]] = [[] for _ in self._regions()]
        for start in tqdm(range(0, len(images), run.batch_size), desc=description, disable=not run.progress):
            batch = images[start : start + run.batch_size]
            if generator is not None:
                batch = acquisition_jitter(batch, generator)
            for index, pooled in enumerate(self._region_features(batch)):
                parts[index].append(pooled.cpu())
        return [torch.cat(part).double().numpy() for part in parts]

    @torch.no_grad()
    def _region_features(self, images: Tensor) -> list[Tensor]:
        """Per layer, (B, side * side, C) region-pooled features of (B, C, H, W) images."""
        features = self.extractor_(images.to(self.extractor_.mean.device))
        return [
            F.adaptive_avg_pool2d(feature, side).flatten(2).transpose(1, 2)
            for feature, side in zip(features, self._regions().values(), strict=True)
        ]

    # --- scoring ----------------------------------------------------------------------------------------------
    def _score_batch(self, images: Tensor) -> Prediction:
        pooled = self._region_features(images)
        distances = torch.cat([gaussian(part) for gaussian, part in zip(self.gaussians_, pooled, strict=True)], 1)
        standard = (distances - self.standardiser_.mean) / self.standardiser_.scale
        sides = list(self._regions().values())
        common = 4 * max(sides)  # every layer's region grid on one grid, then averaged
        grids = torch.split(standard, [side * side for side in sides], dim=1)
        stacked = torch.stack(
            [
                F.interpolate(grid.reshape(-1, 1, side, side), size=(common, common), mode="bilinear")
                for grid, side in zip(grids, sides, strict=True)
            ]
        ).mean(0)
        height, width = (int(size) for size in images.shape[-2:])
        anomaly_maps = smooth_maps(stacked[:, 0], (height, width), self.sigma)
        return Prediction(scores=standard.mean(dim=1).cpu(), anomaly_maps=anomaly_maps.cpu())

    # --- saving -----------------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """Gaussians, standardiser and the extractor (whose backbone weights are not saved)."""
        if not hasattr(self, "gaussians_"):
            return {}
        return {
            "gaussians": nn.ModuleList(self.gaussians_),
            "standardiser": self.standardiser_,
            "extractor": self.extractor_,
        }

    def fitted_config(self) -> dict[str, Any]:
        """Input shape, Gaussian sizes and the backbone weights' fingerprint."""
        return {
            **super().fitted_config(),
            "gaussian_shapes": [[int(size) for size in gaussian.mean.shape] for gaussian in self.gaussians_],
            "backbone_weights": self.extractor_.weights_id,
            "runtime": self.extractor_.cpu_runtime,
        }

    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        self.extractor_ = self._make_extractor(fitted.get("runtime"))
        _check_weights(self.extractor_, fitted)
        shapes = [tuple(shape) for shape in fitted["gaussian_shapes"]]
        self.gaussians_ = [GaussianModel(*shape) for shape in shapes]
        self.standardiser_ = _Standardiser(sum(shape[0] for shape in shapes))


def _fit_gaussians(features: np.ndarray) -> GaussianModel:
    """One Ledoit-Wolf Gaussian per region of (N, regions, C) features."""
    n_regions, channels = features.shape[1], features.shape[2]
    means, covariances = np.empty((n_regions, channels)), np.empty((n_regions, channels, channels))
    for region in range(n_regions):
        estimate = LedoitWolf(assume_centered=False).fit(features[:, region])
        means[region], covariances[region] = estimate.location_, estimate.covariance_
    model = GaussianModel(n_regions, channels)
    model.set(torch.from_numpy(means), torch.from_numpy(covariances))
    return model

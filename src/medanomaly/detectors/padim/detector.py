"""PaDiM: a Gaussian per patch position over pretrained embeddings of normal images; Mahalanobis anomaly map.

Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and Localization", ICPR 2021,
https://arxiv.org/abs/2011.08785. Embeddings concatenate several backbone layers at the shallowest one's grid
(deeper maps nearest-upsampled, as the paper's code), keep ``n_features`` randomly chosen channels (seeded; the
indices are saved), and fit mean + covariance (+ epsilon * I) per position. The map is the Mahalanobis distance per
position, bilinearly upsampled to the input and Gaussian-smoothed (sigma 4); the image score is its maximum (or
the mean of its ``topk`` largest pixels).

Sizes at 224 px with EfficientNet-Lite0 layers ``blocks.2`` (stride 4), ``blocks.4``, ``blocks.10``: a 56 x 56 grid
(3,136 positions) of 176 channels reduced to d = 100 -> 3,136 x 100 x 100 float32 whitening matrices = 125 MB (fit
peaks near 0.5 GB more for the float64 sums), and about 63 MFLOP per image to score.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from medanomaly.detectors.base import BaseDetector
from medanomaly.detectors.padim.gaussian import GaussianAccumulator, GaussianModel
from medanomaly.detectors.patchcore.detector import _check_weights
from medanomaly.features import FeatureExtractor
from medanomaly.features.maps import concat_layers, smooth_maps, topk_mean
from medanomaly.registry import register
from medanomaly.training.context import RunConfig
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
#: PaDiM's default layers per backbone: three stages, the first at stride 4.
DEFAULT_LAYERS = {
    "efficientnet_lite0": ["blocks.2", "blocks.4", "blocks.10"],
    "resnet18": ["layer1", "layer2", "layer3"],
    "wide_resnet50_2": ["layer1", "layer2", "layer3"],
    "tiny": ["stage1", "stage2", "stage3"],
}


class _ChannelIndex(nn.Module):
    """The randomly chosen embedding channels, a saved buffer."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("index", torch.zeros(n_features, dtype=torch.long))


@register("padim")
class Padim(BaseDetector):
    """PaDiM with per-position Gaussians of pretrained patch embeddings.

    Args:
        backbone: Feature backbone (:func:`medanomaly.features.available_backbones`).
        layers: Layers to concatenate, shallowest first; None = :data:`DEFAULT_LAYERS` for the backbone.
        weights: Backbone state-dict path; None = bundled weights (EfficientNet-Lite0).
        n_features: Channels kept by the random reduction (paper: 100 for ResNet-18); clipped to the total.
        epsilon: Covariance regularisation (paper: 0.01).
        sigma: Gaussian smoothing of the map, in input pixels (paper: 4).
        topk: Image score = mean of the ``topk`` largest map pixels (1 = the maximum, the paper's rule).
        runtime: Feature extractor runtime (``auto``, ``torch``, ``onnx``); what ``auto`` chose at fit time is saved
            with the model and used when it scores.
        random_state: Seed of the channel selection.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"backbone": "tiny", "n_features": 32, "runtime": "torch"}
    tiny_train: ClassVar[dict[str, Any]] = {"batch_size": 64}

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: list[str] | None = None,
        weights: str | None = None,
        n_features: int = 100,
        epsilon: float = 0.01,
        sigma: float = 4.0,
        topk: int = 1,
        runtime: str = "auto",
        random_state: int | None = 0,
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.n_features = n_features
        self.epsilon = epsilon
        self.sigma = sigma
        self.topk = topk
        self.runtime = runtime
        self.random_state = random_state

    def _fit(self, normal: Tensor, *, mixed: Tensor | None, abnormal: Tensor | None, run: RunConfig) -> Self:
        """Fit the per-position Gaussians on ``normal`` (N, C, H, W) in [0, 1] (N >= 2).

        Args:
            normal: Healthy images.
            mixed: Unused.
            abnormal: Unused.
            run: Batch size, device and progress bars.
        """
        self._validate(normal)
        batch_size, device, progress = run.batch_size, run.torch_device, run.progress
        self.extractor_ = self._make_extractor().to(device)
        total = sum(self.extractor_.out_channels)
        n_features = min(int(self.n_features), total)
        rng = np.random.default_rng(int(self.random_state or 0))
        self.channels_ = _ChannelIndex(n_features).to(device)
        self.channels_.index.copy_(torch.from_numpy(np.sort(rng.choice(total, n_features, replace=False))))
        accumulator, started = None, time.perf_counter()
        for start in tqdm(range(0, len(normal), batch_size), desc="padim features", disable=not progress):
            embeddings, self.feature_shape_ = self._embed(normal[start : start + batch_size])
            accumulator = accumulator or GaussianAccumulator(embeddings.shape[1], n_features)
            accumulator.update(embeddings)
        extracted = time.perf_counter()
        mean, covariance = accumulator.finalize(self.epsilon)
        self.gaussian_ = GaussianModel(*mean.shape)
        self.gaussian_.set(mean, covariance)
        self.fit_timings_ = {"features": extracted - started, "gaussians": time.perf_counter() - extracted}
        self.gaussian_.to(device)
        self.input_shape_ = tuple(int(size) for size in normal.shape[1:])
        logger.info("padim: %d positions x %d features", *mean.shape)
        return self

    def _validate(self, normal: Tensor) -> None:
        if normal is None or normal.ndim != 4 or len(normal) < 2:
            msg = "padim needs at least 2 normal training images of shape (N, C, H, W)"
            raise ValueError(msg)
        if self.n_features < 1 or self.epsilon <= 0 or self.sigma < 0 or self.topk < 1:
            msg = "padim needs n_features >= 1, epsilon > 0, sigma >= 0 and topk >= 1"
            raise ValueError(msg)

    def _make_extractor(self, fitted_runtime: str | None = None) -> FeatureExtractor:
        layers = self.layers or DEFAULT_LAYERS.get(self.backbone)
        runtime = fitted_runtime if self.runtime == "auto" and fitted_runtime else self.runtime
        return FeatureExtractor(self.backbone, layers, self.weights, runtime=runtime)

    @torch.no_grad()
    def _embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(B, P, d) reduced embeddings of (B, C, H, W) images, and their grid (h, w)."""
        features = self.extractor_(images.to(self.extractor_.mean.device))
        index = self.channels_.index
        selected, offset = [], 0
        for feature in features:  # select channels before upsampling: less memory and work
            mine = index[(index >= offset) & (index < offset + feature.shape[1])] - offset
            selected.append(feature[:, mine])
            offset += feature.shape[1]
        embedded = concat_layers([part for part in selected], mode="nearest")
        return embedded.flatten(2).transpose(1, 2), (int(embedded.shape[-2]), int(embedded.shape[-1]))

    def _score_batch(self, images: Tensor) -> Prediction:
        embeddings, grid = self._embed(images)
        distances = self.gaussian_(embeddings).view(len(images), *grid)
        maps = smooth_maps(distances, tuple(images.shape[-2:]), self.sigma)
        return Prediction(scores=topk_mean(maps, self.topk).cpu(), anomaly_maps=maps.cpu())

    def modules(self) -> dict[str, nn.Module]:
        """Gaussians, channel index and the extractor (whose backbone weights are not saved)."""
        if not hasattr(self, "gaussian_"):
            return {}
        return {"gaussian": self.gaussian_, "channels": self.channels_, "extractor": self.extractor_}

    def fitted_config(self) -> dict[str, Any]:
        """Input shape, Gaussian sizes, feature grid and the backbone weights' fingerprint."""
        return {
            **super().fitted_config(),
            "n_positions": int(self.gaussian_.mean.shape[0]),
            "n_features": int(self.gaussian_.mean.shape[1]),
            "feature_shape": list(self.feature_shape_),
            "backbone_weights": self.extractor_.weights_id,
            "runtime": self.extractor_.cpu_runtime,
        }

    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        self.extractor_ = self._make_extractor(fitted.get("runtime"))
        _check_weights(self.extractor_, fitted)
        self.gaussian_ = GaussianModel(fitted["n_positions"], fitted["n_features"])
        self.channels_ = _ChannelIndex(fitted["n_features"])
        self.feature_shape_ = tuple(fitted["feature_shape"])

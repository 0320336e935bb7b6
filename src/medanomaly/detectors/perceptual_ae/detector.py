"""Deep perceptual autoencoder with progressive growing (the X-ray source document's method).

Shvetsova et al., "Anomaly detection in medical imaging with deep perceptual autoencoders", IEEE Access 2021,
https://arxiv.org/abs/2006.13265. An autoencoder trained on normals with a reconstruction loss measured in the
feature space of a pretrained CNN (EfficientNet-Lite0 from the installed pip package by default; a ResNet or any
backbone of :mod:`medanomaly.features` from a local state_dict), optionally plus a pixel L1 term. The anomaly score is
the same loss per image, the map its spatial form. Training starts at a low resolution and grows to the target
(e.g. 8 -> 16 -> 32 -> 64 -> 128), fading each new stage in; the schedule is derived from the number of training
images seen, so the shared Trainer needs no hook. A few labelled anomalies can choose the hyper-parameters
(:func:`medanomaly.detectors.perceptual_ae.tuning.tune_perceptual_ae`, ``medanomaly train --tune-with DIR``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from medanomaly.detectors.perceptual_ae.loss import PerceptualDistance
from medanomaly.detectors.perceptual_ae.network import (
    ProgressiveAutoencoderNet,
    count_stages,
    progress_at,
)
from medanomaly.detectors.residual_score import check_scoring, masked_scores, resolve_foreground
from medanomaly.detectors.torch_base import TorchDetector
from medanomaly.features import FeatureExtractor
from medanomaly.features.backbones import build_backbone
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.training.engine import TrainConfig
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
#: Share of ``max_epochs`` over which the network grows.
GROW_FRACTION = 0.5


@register("perceptual_ae")
class PerceptualAutoencoder(TorchDetector):
    """Progressively grown autoencoder scored by a perceptual (deep-feature) reconstruction distance.

    Args:
        backbone: Feature backbone of the perceptual loss (:func:`medanomaly.features.available_backbones`);
            ``efficientnet_lite0`` uses the weights shipped by its pip package, never a download.
        backbone_weights: Path of a state_dict for the backbone (required for the ResNets; e.g. a VGG-like or other
            network the features module supports).
        perceptual_layer: Backbone layer compared (None = the backbone's first default layer, EfficientNet-Lite0
            ``blocks.4``, stride 8).
        pixel_weight: Weight of an added pixel L1 term (0 = perceptual only, as in the source's best setting).
        latent_dim: Bottleneck size (16 in the source's chest X-ray configuration).
        width: Autoencoder channels at the final resolution (doubled per lower stage, capped at 8x).
        start_resolution: Side of the first growth stage.
        stage_epochs: Passes over the training normals per growth stage (half fade-in, half stable; 7 reaches
            64 px after 24.5 epochs); None = grow over the first half of ``max_epochs``. Growth is counted in images
            seen, never in wall-clock time, so a run ends at the same weights on a busy machine as on an idle one.
        learning_rate: Adam learning rate (1e-3 as in the source).
        foreground: Mask the score and map are restricted to (:mod:`medanomaly.transforms.foreground`; ``auto``:
            decided once per training set, the head/body ``outline`` when most images have a dark frame, else
            ``none``, the source's rule). The resolved choice is ``foreground_``, saved with the model.
        score_rule: ``mean`` distance over the foreground, or ``topk``: mean of its largest ``topk_fraction``.
        topk_fraction: Share of the foreground averaged by ``score_rule="topk"``.
        random_state: Seed of initialisation, split and shuffling.
    """

    tiny_params: ClassVar[dict[str, Any]] = {
        "backbone": "tiny", "width": 8, "latent_dim": 32, "start_resolution": 8, "stage_epochs": None,
    }  # fmt: skip
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 16, "batch_size": 32}
    #: Growth takes 7 epochs per stage (24.5 epochs from 8 to 64 px), then the full-resolution network trains until
    #: the held-out perceptual loss stops falling by 0.1 % for 10 epochs (at most 150 epochs; about 6 s per epoch of
    #: 1,200 images at 64 px on 2 CPU cores).
    default_train: ClassVar[dict[str, Any]] = {"max_epochs": 150, "patience": 10, "min_delta": 0.001}
    #: The practical CPU resolution (the source also used 64 px for NIH chest X-rays): growth 8 -> 64.
    default_resolution: ClassVar[int | None] = 64

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        backbone_weights: str | None = None,
        perceptual_layer: str | None = None,
        pixel_weight: float = 0.0,
        latent_dim: int = 16,
        width: int = 16,
        start_resolution: int = 8,
        stage_epochs: float | None = 7.0,
        learning_rate: float = 1e-3,
        foreground: str = "auto",
        score_rule: str = "mean",
        topk_fraction: float = 0.1,
        random_state: int | None = 0,
    ) -> None:
        self.backbone = backbone
        self.backbone_weights = backbone_weights
        self.perceptual_layer = perceptual_layer
        self.pixel_weight = pixel_weight
        self.latent_dim = latent_dim
        self.width = width
        self.start_resolution = start_resolution
        self.stage_epochs = stage_epochs
        self.learning_rate = learning_rate
        self.foreground = foreground
        self.score_rule = score_rule
        self.topk_fraction = topk_fraction
        self.random_state = random_state

    # --- building ---------------------------------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        channels, height, width = input_shape
        if height != width:
            msg = f"perceptual_ae needs square inputs, got {height}x{width}"
            raise ValueError(msg)
        check_scoring(self.foreground, self.score_rule, self.topk_fraction)
        self.foreground_ = fitted.get("foreground", self.foreground)
        count_stages(height, self.start_resolution)
        self.network_ = ProgressiveAutoencoderNet(channels, height, self.start_resolution, self.width, self.latent_dim)
        layer = self.perceptual_layer or build_backbone(self.backbone).default_layers[0]
        extractor = FeatureExtractor(self.backbone, layers=[layer], weights=self.backbone_weights, runtime="torch")
        self.distance_ = PerceptualDistance(extractor, self.pixel_weight)
        self.stage_images_ = float(fitted.get("stage_images", 1.0))

    def modules(self) -> dict[str, nn.Module]:
        """The autoencoder (with its growth buffers); the frozen extractor is rebuilt from the hyper-parameters."""
        return {"network": self.network_} if hasattr(self, "network_") else {}

    def to(self, device: torch.device | str) -> PerceptualAutoencoder:
        """Move the autoencoder and the perceptual loss's extractor."""
        super().to(device)
        if hasattr(self, "distance_"):
            self.distance_.to(device)
        return self

    def fitted_config(self) -> dict[str, Any]:
        """Input shape, history, the growth schedule and the backbone weights' fingerprint."""
        config = super().fitted_config()
        config["stage_images"] = self.stage_images_
        config["foreground"] = self.foreground_
        config["backbone_weights_id"] = self.distance_.extractor.weights_id
        return config

    # --- training ---------------------------------------------------------------------------------------------
    def _start_fit(self, normal: Tensor, config: TrainConfig) -> None:
        """Keep ``max_epochs`` (growth spans ``GROW_FRACTION`` of it if ``stage_epochs`` is None); resolve the mask."""
        self._max_epochs = config.max_epochs
        self.foreground_ = resolve_foreground(self.foreground, normal)

    def _end_fit(self) -> None:
        """Warn when training ended before the final resolution (scores then use an upsampled earlier stage)."""
        reached = (int(self.network_.stage), float(self.network_.alpha))
        if reached != (self.network_.n_stages - 1, 1.0):
            logger.warning(
                "perceptual_ae: training ended at stage %d (alpha %.2f) of %d; scores use that stage "
                "upsampled: train longer",
                reached[0],
                reached[1],
                self.network_.n_stages,
            )

    def make_datasets(
        self, normal: Tensor, mixed: Tensor | None, abnormal: Tensor | None, val_fraction: float
    ) -> tuple[Dataset, Dataset | None]:
        """Normals with a seeded hold-out; also plans the growth schedule from the training-set size."""
        train_set, val_set = super().make_datasets(normal, mixed, abnormal, val_fraction)
        n_stages = self.network_.n_stages
        epochs = self.stage_epochs
        if epochs is None:
            epochs = max(GROW_FRACTION * self._max_epochs / max(n_stages - 0.5, 1.0), 0.25)
        self.stage_images_ = float(epochs * len(train_set))
        self.network_.set_progress(*progress_at(0, self.stage_images_, n_stages))
        logger.info("perceptual_ae: %d stages, %.1f epochs (%d images) per stage", n_stages, epochs, self.stage_images_)
        return train_set, val_set

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam on the autoencoder (the extractor is frozen)."""
        return {"adam": torch.optim.Adam(self.network_.parameters(), lr=self.learning_rate)}

    def training_step(self, batch: Any, context: StepContext) -> dict[str, Tensor | float]:
        """Perceptual loss at the current stage's resolution, then advance the growth schedule."""
        images = batch[0]
        network = self.network_
        network.set_progress(*progress_at(int(network.images_seen), self.stage_images_, network.n_stages))
        target = _resize(images, network.current_resolution)
        reconstruction = network(target)
        full = images.shape[-1]  # compared at full size: one feature scale for every stage
        loss, _ = self.distance_(_resize(reconstruction, full), _resize(target, full))
        network.images_seen += len(images)
        return {"loss": loss.mean(), "resolution": float(network.current_resolution), "alpha": float(network.alpha)}

    def validation_loss(self, batch: Any) -> Tensor:
        """(B,) perceptual distance of the current output (upsampled) to the full-resolution images."""
        return self.distance_(self._reconstruct(batch[0]), batch[0])[0]

    def _reconstruct(self, images: Tensor) -> Tensor:
        """(N, C, R, R) -> reconstruction at the current stage, resized back to (N, C, R, R)."""
        network = self.network_
        return _resize(network(_resize(images, network.current_resolution)), images.shape[-1])

    # --- scoring ----------------------------------------------------------------------------------------------
    def _score_batch(self, images: Tensor) -> Prediction:
        self.network_.eval()
        images = images.to(self.device)
        reconstruction = self._reconstruct(images)
        distance = self.distance_(reconstruction, images)[1]
        scores, maps, mask = masked_scores(distance, images, self.foreground_, self.score_rule, self.topk_fraction)
        return Prediction(scores=scores, anomaly_maps=maps, extras={"reconstruction": reconstruction, "mask": mask})

    def restore(self, fitted: dict[str, Any], state: dict[str, Tensor]) -> PerceptualAutoencoder:
        """Rebuild and load; warn when the backbone weights differ from those used in training."""
        if "foreground" not in fitted:  # saved before foreground masks: scored the whole image
            self.foreground = "none"
        super().restore(fitted, state)
        saved, current = fitted.get("backbone_weights_id"), self.distance_.extractor.weights_id
        if saved is not None and saved != current:
            logger.warning(
                "perceptual_ae: backbone weights %s differ from training (%s): scores will shift", current, saved
            )
        return self

    @classmethod
    def tune(
        cls,
        normal: Tensor,
        images: Tensor,
        labels: np.ndarray,
        *,
        params: dict[str, Any],
        train: TrainConfig,
    ) -> tuple[PerceptualAutoencoder, dict[str, Any]]:
        """Pick hyper-parameters by AUROC on a small labelled set (see :mod:`.tuning`)."""
        from medanomaly.detectors.perceptual_ae.tuning import tune_perceptual_ae

        result = tune_perceptual_ae(normal, images, labels, params=params, train=train)
        return result.detector, result.summary()


def _resize(images: Tensor, size: int) -> Tensor:
    """(N, C, r, r) -> (N, C, size, size): area averaging down, bilinear up, identity at the same size."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] > size:
        return F.adaptive_avg_pool2d(images, size)
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)

"""Convolutional autoencoder detector (the CT source document's method).

Trained on normals to reconstruct them; the anomaly map is |x - x̂| and the image score its mean (MAE, the source's
rule). Median filtering of the map (2D, or 3D across a volume) and the optional top-k-percent score of the filtered
map happen in post-processing (:class:`medanomaly.model.Postprocessing`), shared by every method.
See Baur et al., "Autoencoders for unsupervised anomaly segmentation in brain MR images", MedIA 2021,
https://arxiv.org/abs/2004.03271 for a survey of this family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medanomaly.detectors.conv_ae.network import ConvAutoencoderNet, reconstruction_error
from medanomaly.detectors.torch_base import TorchDetector
from medanomaly.registry import register
from medanomaly.types import Prediction


@register("conv_ae")
class ConvAutoencoder(TorchDetector):
    """ConvNet encoder / DeConvNet decoder autoencoder with a mean-absolute-error score.

    Args:
        depth: Stride-2 stages in encoder and decoder.
        width: Channels of the first stage.
        latent_dim: Bottleneck size.
        learning_rate: Adam learning rate.
        weight_decay: Adam weight decay.
        loss: Training loss, ``l1`` (matches the MAE score) or ``l2``.
        random_state: Seed of initialisation, shuffling and the validation split.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"depth": 3, "width": 16, "latent_dim": 64}
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 30, "batch_size": 32}

    def __init__(
        self,
        depth: int = 4,
        width: int = 32,
        latent_dim: int = 128,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        loss: str = "l1",
        random_state: int | None = 0,
    ) -> None:
        self.depth = depth
        self.width = width
        self.latent_dim = latent_dim
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.loss = loss
        self.random_state = random_state

    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        if self.loss not in ("l1", "l2"):
            msg = f"loss must be 'l1' or 'l2', got {self.loss!r}"
            raise ValueError(msg)
        channels, height, width = input_shape
        if height != width:
            msg = f"conv_ae needs square inputs, got {height}x{width}"
            raise ValueError(msg)
        self.network_ = ConvAutoencoderNet(channels, height, self.depth, self.width, self.latent_dim)

    def modules(self) -> dict[str, nn.Module]:
        """The autoencoder network."""
        return {"network": self.network_} if hasattr(self, "network_") else {}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam on the whole network."""
        params = self.network_.parameters()
        return {"adam": torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)}

    def _loss(self, images: Tensor) -> Tensor:
        reconstruction = self.network_(images)
        errors = torch.abs(images - reconstruction) if self.loss == "l1" else (images - reconstruction) ** 2
        return errors.flatten(1).mean(dim=1)

    def training_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Tensor]:
        """Reconstruction loss of a batch of normals."""
        return {"loss": self._loss(batch[0]).mean()}

    def validation_loss(self, batch: Any) -> Tensor:
        """Per-image reconstruction loss."""
        return self._loss(batch[0])

    def _score_batch(self, images: Tensor) -> Prediction:
        self.network_.eval()
        images = images.to(self.device)
        reconstruction = self.network_(images)
        maps = reconstruction_error(images, reconstruction)
        scores = maps.flatten(1).mean(dim=1)
        return Prediction(scores=scores, anomaly_maps=maps, extras={"reconstruction": reconstruction})

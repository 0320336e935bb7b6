"""Convolutional autoencoder detector (the CT source document's method).

Trained on normals to reconstruct them; the anomaly map is the residual (|x - x̂| or (x - x̂)², as the loss) inside
a label-free foreground mask (the head/body outline when the image has a dark background), and the image score its
mean over that foreground (the source's MAE rule, restricted to the anatomy) or the mean of its top-k percent
(:mod:`medanomaly.detectors.residual_score`). Median filtering of the displayed map (2D, or 3D across a volume)
happens in post-processing (:class:`medanomaly.model.Postprocessing`), shared by every method. The defaults follow
the plain AE of the MedIAnomaly benchmark (Cai et al. 2024, https://arxiv.org/abs/2404.04518): 64 px, four stride-2
stages from 16 channels, an MLP bottleneck of 16 numbers, MSE loss; see docs/methods/conv_ae.md.
See Baur et al., "Autoencoders for unsupervised anomaly segmentation in brain MR images", MedIA 2021,
https://arxiv.org/abs/2004.03271 for a survey of this family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medanomaly.detectors.conv_ae.network import ConvAutoencoderNet
from medanomaly.detectors.residual_score import check_scoring, masked_scores, resolve_foreground
from medanomaly.detectors.torch_base import TorchDetector
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.types import Prediction


@register("conv_ae")
class ConvAutoencoder(TorchDetector):
    """ConvNet encoder / DeConvNet decoder autoencoder scored by its residual inside the anatomy.

    Args:
        depth: Stride-2 stages in encoder and decoder.
        width: Channels of the first stage.
        latent_dim: Bottleneck size.
        hidden_dim: MLP width around the bottleneck (0 = one linear layer each way).
        learning_rate: Adam learning rate.
        weight_decay: Adam weight decay.
        loss: Training loss and residual map, ``l1`` (absolute error) or ``l2`` (squared error).
        foreground: Mask the map and score are restricted to (:mod:`medanomaly.transforms.foreground`): ``auto``
            (decided once per training set: the head/body ``outline`` when most images have a dark frame, else
            ``none``), ``outline``, ``lung``, ``body`` or ``none`` (the whole
            image, the source's rule). The resolved choice is ``foreground_``, saved with the model.
        score_rule: ``mean`` of the residual over the foreground, or ``topk``: mean of its largest ``topk_fraction``.
        topk_fraction: Share of the foreground averaged by ``score_rule="topk"``.
        random_state: Seed of initialisation, shuffling and the validation split.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"depth": 3, "width": 16, "latent_dim": 64, "hidden_dim": 0}
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 30, "batch_size": 32}
    default_resolution: ClassVar[int | None] = 64
    default_train: ClassVar[dict[str, Any]] = {"max_epochs": 100, "patience": 10, "batch_size": 32}

    def __init__(
        self,
        depth: int = 4,
        width: int = 16,
        latent_dim: int = 16,
        hidden_dim: int = 1024,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        loss: str = "l2",
        foreground: str = "auto",
        score_rule: str = "topk",
        topk_fraction: float = 0.1,
        random_state: int | None = 0,
    ) -> None:
        self.depth = depth
        self.width = width
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.loss = loss
        self.foreground = foreground
        self.score_rule = score_rule
        self.topk_fraction = topk_fraction
        self.random_state = random_state

    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        if self.loss not in ("l1", "l2"):
            msg = f"loss must be 'l1' or 'l2', got {self.loss!r}"
            raise ValueError(msg)
        check_scoring(self.foreground, self.score_rule, self.topk_fraction)
        self.foreground_ = fitted.get("foreground", self.foreground)
        channels, height, width = input_shape
        if height != width:
            msg = f"conv_ae needs square inputs, got {height}x{width}"
            raise ValueError(msg)
        self.network_ = ConvAutoencoderNet(channels, height, self.depth, self.width, self.latent_dim, self.hidden_dim)

    def fit(self, normal: Tensor, **kwargs: Any) -> ConvAutoencoder:
        """Train on normals (see :meth:`TorchDetector.fit`), then fix the foreground mask for this data set."""
        super().fit(normal, **kwargs)
        self.foreground_ = resolve_foreground(self.foreground, normal)
        return self

    def fitted_config(self) -> dict[str, Any]:
        """Input shape, history and the resolved foreground mask."""
        return {**super().fitted_config(), "foreground": self.foreground_}

    def restore(self, fitted: dict[str, Any], state: dict[str, Tensor]) -> ConvAutoencoder:
        """Rebuild and load; a model saved before masks and the MLP bottleneck scored the whole image."""
        if "foreground" not in fitted:
            self.hidden_dim, self.foreground, self.score_rule = 0, "none", "mean"
        return super().restore(fitted, state)

    def modules(self) -> dict[str, nn.Module]:
        """The autoencoder network."""
        return {"network": self.network_} if hasattr(self, "network_") else {}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam on the whole network."""
        params = self.network_.parameters()
        return {"adam": torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)}

    def _residual(self, images: Tensor, reconstruction: Tensor) -> Tensor:
        """(N, C, H, W) x 2 -> (N, C, H, W) absolute (l1) or squared (l2) error."""
        difference = images - reconstruction
        return difference.abs() if self.loss == "l1" else difference**2

    def _loss(self, images: Tensor) -> Tensor:
        return self._residual(images, self.network_(images)).flatten(1).mean(dim=1)

    def training_step(self, batch: Any, context: StepContext) -> dict[str, Tensor]:
        """Reconstruction loss of a batch of normals."""
        return {"loss": self._loss(batch[0]).mean()}

    def validation_loss(self, batch: Any) -> Tensor:
        """Per-image reconstruction loss."""
        return self._loss(batch[0])

    def _score_batch(self, images: Tensor) -> Prediction:
        self.network_.eval()
        images = images.to(self.device)
        reconstruction = self.network_(images)
        residual = self._residual(images, reconstruction).mean(dim=1)
        scores, maps, mask = masked_scores(residual, images, self.foreground_, self.score_rule, self.topk_fraction)
        return Prediction(scores=scores, anomaly_maps=maps, extras={"reconstruction": reconstruction, "mask": mask})

"""ALOCC: Adversarially Learned One-Class Classifier (a denoising reconstructor R against a discriminator D).

Sabokrou, Khalooei, Fathy and Adeli, "Adversarially learned one-class classifier for novelty detection", CVPR 2018,
https://arxiv.org/abs/1802.09088.

Each training step updates R on "make D call R(x + noise) real" + lambda * reconstruction error, then D on real
normals (label 1) versus R's outputs (label 0). The score is 1 - D(R(x)) in [0, 1] (D gives the probability of a real
normal image, so higher = more anomalous); the map is |x - R(x)|. Early stopping and the best epoch use R's
reconstruction error on clean held-out normals (label-free, and comparable across epochs unlike D's output).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medanomaly.detectors.adversarial import AveragedGan
from medanomaly.detectors.alocc.network import AloccNet, alocc_losses, alocc_score, discriminator_loss
from medanomaly.detectors.gan_blocks import NORMS, adam, feature_distance, residual_map
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
_LOSSES = ("l1", "l2")
#: Normals scored after training to see whether D still tells images apart.
_CHECK_IMAGES = 256


@register("alocc")
class Alocc(AveragedGan):
    """ALOCC; score = 1 - D(R(x)) in [0, 1], map = |x - R(x)|.

    Args:
        width: Channels of the first encoder / discriminator stage; doubled per stage.
        latent_dim: Size of R's bottleneck vector.
        noise_std: Standard deviation sigma of the Gaussian noise added to R's training inputs (images in [0, 1]).
        reconstruction_weight: Weight lambda of R's reconstruction term (per-pixel mean error).
        reconstruction_loss: ``l2`` (the paper's) or ``l1``.
        discriminator_norm: Normalisation in D, ``layer`` (default), ``batch`` (the paper's DCGAN choice) or ``none``.
            D's eval-mode output is the score, and batch norm's running statistics mix all-real and all-fake
            batches, so an eval-mode D with batch norm is not the D that was trained.
        ema_decay: Decay of the weights' moving average used for scoring (see :class:`WeightAverage`); 0 scores with
            the last weights, as the paper does.
        learning_rate: Adam learning rate of both networks (betas 0.5, 0.999).
        random_state: Seed of initialisation, noise, shuffling and the validation split.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"width": 16, "latent_dim": 32, "learning_rate": 1e-3}
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 16, "batch_size": 16}
    #: Up to 150 epochs, ended when R's held-out reconstruction error stops falling by 0.1 % for 10 epochs; about
    #: 4 s per epoch of 1,200 images at 64 px on 2 CPU cores.
    default_train: ClassVar[dict[str, Any]] = {"max_epochs": 150, "patience": 10, "min_delta": 0.001}

    def __init__(
        self,
        width: int = 32,
        latent_dim: int = 128,
        noise_std: float = 0.1,
        reconstruction_weight: float = 10.0,
        reconstruction_loss: str = "l2",
        discriminator_norm: str = "layer",
        ema_decay: float = 0.999,
        learning_rate: float = 2e-4,
        random_state: int | None = 0,
    ) -> None:
        self._store_params(locals())

    def fit(self, normal: Tensor, **kwargs: Any) -> Alocc:
        """Train (see :meth:`TorchDetector.fit`); ``warnings_`` then says if D ended at the GAN equilibrium."""
        super().fit(normal, **kwargs)
        with torch.no_grad():
            scores = torch.cat([self._score_batch(batch).scores.cpu() for batch in normal[:_CHECK_IMAGES].split(64)])
        self.warnings_ = [text] if (text := equilibrium_warning(scores)) else []
        for text in self.warnings_:
            logger.warning(text)
        return self

    def _check_hyperparameters(self) -> None:
        valid = self.reconstruction_loss in _LOSSES and self.discriminator_norm in NORMS
        if not valid or self.noise_std < 0:
            msg = (
                f"alocc: need reconstruction_loss in {_LOSSES}, discriminator_norm in {NORMS} and noise_std >= 0; "
                f"got {self.reconstruction_loss!r}, {self.discriminator_norm!r}, {self.noise_std}"
            )
            raise ValueError(msg)

    def _network(self, channels: int, side: int) -> nn.Module:
        """Reconstructor R and discriminator D."""
        return AloccNet(channels, side, self.width, self.latent_dim, self.discriminator_norm)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam for R and Adam for D."""
        betas = (0.5, 0.999)
        return {
            "reconstructor": adam(self.network_.reconstructor, self.learning_rate, betas),
            "discriminator": adam(self.network_.discriminator, self.learning_rate, betas),
        }

    def adversarial_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor]:
        """An R step on noisy normals, then a D step (real normals vs R's outputs).

        ``loss`` in the returned logs is R's reconstruction error (what validation measures), monitored by the
        trainer when there is no validation split; ``reconstructor_loss`` is R's full objective.
        """
        noisy = images + self.noise_std * torch.randn_like(images)
        refined, losses = alocc_losses(
            self.network_, images, noisy, self.reconstruction_weight, self.reconstruction_loss
        )
        context.update("reconstructor", losses["loss"])
        d_loss = discriminator_loss(self.network_, images, refined)
        context.update("discriminator", d_loss)
        return {
            "loss": losses["reconstruction"].detach(),
            "adversarial": losses["adversarial"].detach(),
            "reconstructor_loss": losses["loss"].detach(),
            "discriminator_loss": d_loss.detach(),
        }

    def validation_loss(self, batch: Any) -> Tensor:
        """Per-image reconstruction error of clean held-out normals (the training ``reconstruction_loss``)."""
        images = batch[0]
        return feature_distance(images, self.average_.network(images), self.reconstruction_loss)

    def _score_batch(self, images: Tensor) -> Prediction:
        network, images = self.averaged(images)
        scores, refined = alocc_score(network, images)
        return Prediction(scores=scores, anomaly_maps=residual_map(images, refined), extras={"refined": refined})


def equilibrium_warning(scores: Tensor) -> str | None:
    """A warning when the scores 1 - D(R(x)) of normals all sit near 1/2 (D at the GAN equilibrium), else None.

    D then outputs about 1/2 for every input, normal or not, and the score ranks images by noise.
    """
    low, median, high = torch.quantile(scores.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    if high - low >= 0.1 or not 0.35 < median < 0.65:
        return None
    return (
        f"alocc: the discriminator ended at the GAN equilibrium: on {len(scores)} training normals it outputs "
        f"{1 - high:.2f}-{1 - low:.2f} (5th-95th percentile), about 1/2 for every image, so the score 1 - D(R(x)) "
        "carries little information and detection will be near chance (docs/methods/alocc.md)"
    )

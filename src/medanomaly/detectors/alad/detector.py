"""ALAD: Adversarially Learned Anomaly Detection (a BiGAN with cycle-consistency discriminators).

Zenati, Romain, Foo, Lecouat and Chandrasekhar, "Adversarially learned anomaly detection", ICDM 2018,
https://arxiv.org/abs/1812.02288.

Each training step updates E and G against the three discriminators D_xz, D_xx, D_zz, then the discriminators. The
score is the L1 distance between D_xx's penultimate features of (x, x) and (x, G(E(x))) (the paper's feature-matching
score); the map is |x - G(E(x))|. As in the authors' code, scoring uses an exponential moving average (EMA) of the
weights, updated after every step: the adversarial game makes the raw weights, and a score computed from D_xx's
features, swing from one step to the next. Early stopping and the best epoch use the mean L1 reconstruction error
|x - G(E(x))| of held-out normals under the EMA weights, which the cycle-consistency discriminator drives down as
training converges (the feature-matching score itself is not comparable across epochs: D_xx's features change).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medanomaly.detectors.adversarial import AveragedGan
from medanomaly.detectors.alad.network import AladNet, adversarial_losses, feature_matching_score
from medanomaly.detectors.gan_blocks import feature_distance, residual_map
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.types import Prediction


@register("alad")
class Alad(AveragedGan):
    """ALAD; score = feature-matching L1 in D_xx, map = |x - G(E(x))|.

    Args:
        width: Channels of the first stage of every conv network; doubled per stage. Dense layers of D_xz and D_zz
            are ``8 * width`` wide.
        latent_dim: Size of z (100 in the paper's image experiments); the prior is N(0, I).
        spectral_norm: Spectral normalisation of the three discriminators (as in the paper).
        ema_decay: Decay of the weights' moving average used for scoring (0.999 as in the authors' code; warmed up
            as ``min(ema_decay, (1 + t) / (10 + t))`` after t steps); 0 scores with the last weights.
        learning_rate: Adam learning rate of both optimisers (2e-4, betas 0.5, 0.999 as in the authors' code).
        random_state: Seed of initialisation, latent draws, shuffling and the validation split.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"width": 8, "latent_dim": 32, "learning_rate": 1e-3}
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 12, "batch_size": 16}
    #: Up to 100 epochs (the authors' image schedule), ended when the held-out reconstruction error stops falling by
    #: 0.1 % for 10 epochs; about 12 s per epoch of 1,200 images at 64 px on 2 CPU cores.
    default_train: ClassVar[dict[str, Any]] = {"max_epochs": 100, "patience": 10, "min_delta": 0.001}

    def __init__(
        self,
        width: int = 32,
        latent_dim: int = 100,
        spectral_norm: bool = True,
        ema_decay: float = 0.999,
        learning_rate: float = 2e-4,
        random_state: int | None = 0,
    ) -> None:
        self._store_params(locals())

    def _network(self, channels: int, side: int) -> nn.Module:
        """E, G and the three discriminators."""
        return AladNet(channels, side, self.width, self.latent_dim, spectral=bool(self.spectral_norm))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam for E + G and Adam for the three discriminators."""
        net, betas = self.network_, (0.5, 0.999)
        return {
            "generator": torch.optim.Adam(net.generator_parameters(), lr=self.learning_rate, betas=betas),
            "discriminator": torch.optim.Adam(net.discriminator_parameters(), lr=self.learning_rate, betas=betas),
        }

    def adversarial_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor]:
        """An E + G step, then a discriminator step, on one batch of normals.

        ``loss`` in the returned logs is the batch's L1 reconstruction error, which the trainer monitors when there
        is no validation split.
        """
        latent = torch.randn(len(images), self.latent_dim, device=images.device)
        d_loss, g_loss, reconstruction = adversarial_losses(self.network_, images, latent)
        context.update("generator", g_loss)
        context.update("discriminator", d_loss)
        return {
            "loss": feature_distance(images, reconstruction, "l1").mean(),  # the validation metric's training twin
            "generator_loss": g_loss.detach(),
            "discriminator_loss": d_loss.detach(),
        }

    def validation_loss(self, batch: Any) -> Tensor:
        """Per-image mean |x - G(E(x))| of held-out normals (moving-average weights)."""
        images = batch[0]
        return feature_distance(images, self.average_.network(images), "l1")

    def _score_batch(self, images: Tensor) -> Prediction:
        network, images = self.averaged(images)
        scores, reconstruction = feature_matching_score(network, images)
        return Prediction(
            scores=scores,
            anomaly_maps=residual_map(images, reconstruction),
            extras={"reconstruction": reconstruction},
        )

"""GANomaly: an encoder-decoder-encoder generator trained adversarially on normals; score = ||z - ẑ||.

Akçay, Atapour-Abarghouei and Breckon, "GANomaly: Semi-supervised anomaly detection via adversarial training",
ACCV 2018, https://arxiv.org/abs/1805.06725.

Each training step updates the generator (G_E, G_D, E) on w_adv * feature matching + w_con * L1(x, x̂) +
w_lat * L2(z, ẑ), then the discriminator on binary cross-entropy. Early stopping and the best epoch use the
generator's label-free part on held-out normals: w_con * L1(x, x̂) + w_lat * L2(z, ẑ) (the adversarial term is left
out: it moves with the discriminator, so it does not compare epochs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medanomaly.detectors.adversarial import AveragedGan
from medanomaly.detectors.gan_blocks import adam, feature_distance, residual_map
from medanomaly.detectors.ganomaly.network import GanomalyNet, discriminator_loss, generator_losses, latent_score
from medanomaly.registry import register
from medanomaly.training.context import StepContext
from medanomaly.types import Prediction


@register("ganomaly")
class Ganomaly(AveragedGan):
    """GANomaly; score = ||G_E(x) - E(G_D(G_E(x)))||_2 (raw, higher = more anomalous), map = |x - x̂|.

    Args:
        width: Channels of the first encoder stage; doubled per stage.
        latent_dim: Bottleneck size (100 in the paper).
        adversarial_weight: Weight w_adv of the feature-matching loss (1 in the paper).
        contextual_weight: Weight w_con of the L1 reconstruction loss (50 in the paper).
        latent_weight: Weight w_lat of the latent L2 loss (1 in the paper).
        ema_decay: Decay of the weights' moving average used for scoring (see :class:`WeightAverage`); 0 scores with
            the last weights, as the paper does.
        learning_rate: Adam learning rate of both networks (2e-4, betas 0.5, 0.999 as in the paper).
        random_state: Seed of initialisation, shuffling and the validation split.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"width": 16, "latent_dim": 32, "learning_rate": 1e-3}
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 16, "batch_size": 16}
    #: Up to 150 epochs, ended when the held-out reconstruction error stops falling by 0.1 % for 10 epochs; about
    #: 5 s per epoch of 1,200 images at 64 px on 2 CPU cores.
    default_train: ClassVar[dict[str, Any]] = {"max_epochs": 150, "patience": 10, "min_delta": 0.001}

    def __init__(
        self,
        width: int = 32,
        latent_dim: int = 100,
        adversarial_weight: float = 1.0,
        contextual_weight: float = 50.0,
        latent_weight: float = 1.0,
        ema_decay: float = 0.999,
        learning_rate: float = 2e-4,
        random_state: int | None = 0,
    ) -> None:
        self._store_params(locals())

    def _network(self, channels: int, side: int) -> nn.Module:
        """G_E, G_D, E and the discriminator."""
        return GanomalyNet(channels, side, self.width, self.latent_dim)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam for the generator (G_E, G_D, E) and for the discriminator."""
        betas = (0.5, 0.999)
        generator = torch.optim.Adam(self.network_.generator_parameters(), lr=self.learning_rate, betas=betas)
        return {"generator": generator, "discriminator": adam(self.network_.discriminator, self.learning_rate, betas)}

    def adversarial_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor]:
        """A generator step, then a discriminator step, on one batch of normals.

        ``loss`` in the returned logs is the label-free part w_con * L1 + w_lat * L2 (what validation measures),
        monitored by the trainer when there is no validation split; ``generator_loss`` is the full objective.
        """
        net = self.network_
        output = net(images)
        weights = (self.adversarial_weight, self.contextual_weight, self.latent_weight)
        losses = generator_losses(net, images, output, weights)
        context.update("generator", losses["loss"])
        d_loss = discriminator_loss(net.discriminator, images, output.reconstruction)
        context.update("discriminator", d_loss)
        logs = {key: value.detach() for key, value in losses.items() if key != "loss"}
        logs["loss"] = self.contextual_weight * logs["contextual"] + self.latent_weight * logs["latent"]
        return {**logs, "generator_loss": losses["loss"].detach(), "discriminator_loss": d_loss.detach()}

    def validation_loss(self, batch: Any) -> Tensor:
        """Per-image w_con * L1(x, x̂) + w_lat * L2(z, ẑ) of held-out normals."""
        images = batch[0]
        output = self.average_.network(images)
        contextual = feature_distance(images, output.reconstruction, "l1")
        return self.contextual_weight * contextual + self.latent_weight * feature_distance(
            output.latent, output.latent_hat, "l2"
        )

    def _score_batch(self, images: Tensor) -> Prediction:
        network, images = self.averaged(images)
        output = network(images)
        return Prediction(
            scores=latent_score(output),
            anomaly_maps=residual_map(images, output.reconstruction),
            extras={"reconstruction": output.reconstruction},
        )

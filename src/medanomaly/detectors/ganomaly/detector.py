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

from medanomaly.detectors.gan_blocks import (
    WeightAverage,
    adam,
    check_square,
    feature_distance,
    residual_map,
    stage_plan,
)
from medanomaly.detectors.ganomaly.network import GanomalyNet, discriminator_loss, generator_losses, latent_score
from medanomaly.detectors.torch_base import TorchDetector
from medanomaly.registry import register
from medanomaly.types import Prediction


@register("ganomaly")
class Ganomaly(TorchDetector):
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

    automatic_optimization: ClassVar[bool] = False
    monitor: ClassVar[str] = "val_reconstruction"
    tiny_params: ClassVar[dict[str, Any]] = {"width": 16, "latent_dim": 32, "learning_rate": 1e-3}
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 16, "batch_size": 16}

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
        self.width = width
        self.latent_dim = latent_dim
        self.adversarial_weight = adversarial_weight
        self.contextual_weight = contextual_weight
        self.latent_weight = latent_weight
        self.ema_decay = ema_decay
        self.learning_rate = learning_rate
        self.random_state = random_state

    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        channels, side = check_square(self.name, input_shape)
        stage_plan(side, self.width, owner=self.name)
        if not 0.0 <= self.ema_decay < 1.0:
            msg = f"ganomaly: ema_decay must be in [0, 1), got {self.ema_decay}"
            raise ValueError(msg)
        self.network_ = GanomalyNet(channels, side, self.width, self.latent_dim)
        self.average_ = WeightAverage(self.network_)

    def modules(self) -> dict[str, nn.Module]:
        """Generator and discriminator (one module) and their moving average (used for scoring)."""
        return {"network": self.network_, "average": self.average_} if hasattr(self, "network_") else {}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam for the generator (G_E, G_D, E) and for the discriminator."""
        betas = (0.5, 0.999)
        generator = torch.optim.Adam(self.network_.generator_parameters(), lr=self.learning_rate, betas=betas)
        return {"generator": generator, "discriminator": adam(self.network_.discriminator, self.learning_rate, betas)}

    def training_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Tensor]:
        """A generator step, then a discriminator step, on one batch of normals.

        ``loss`` in the returned logs is the label-free part w_con * L1 + w_lat * L2 (what validation measures),
        monitored by the trainer when there is no validation split; ``generator_loss`` is the full objective.
        """
        images, net = batch[0], self.network_
        output = net(images)
        weights = (self.adversarial_weight, self.contextual_weight, self.latent_weight)
        losses = generator_losses(net, images, output, weights)
        optimizers["generator"].zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizers["generator"].step()
        d_loss = discriminator_loss(net.discriminator, images, output.reconstruction)
        optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizers["discriminator"].step()
        self.average_.update(self.network_, self.ema_decay)
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
        self.average_.eval()
        images = images.to(self.device)
        output = self.average_.network(images)
        return Prediction(
            scores=latent_score(output),
            anomaly_maps=residual_map(images, output.reconstruction),
            extras={"reconstruction": output.reconstruction},
        )

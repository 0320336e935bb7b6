"""GANomaly networks and losses (Akçay et al., ACCV 2018, https://arxiv.org/abs/1805.06725).

The generator is an encoder-decoder-encoder G_E -> G_D -> E: z = G_E(x), x̂ = G_D(z), ẑ = E(x̂). The discriminator
is a DCGAN encoder with one logit whose last feature map serves the adversarial (feature-matching) loss. All parts are
built from :mod:`medanomaly.detectors.gan_blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medanomaly.detectors.gan_blocks import ConvDecoder, ConvEncoder, feature_distance


@dataclass(frozen=True)
class GanomalyOutput:
    """One pass of the generator.

    Attributes:
        latent: (N, L) z = G_E(x).
        reconstruction: (N, C, R, R) x̂ = G_D(z) in [0, 1].
        latent_hat: (N, L) ẑ = E(x̂).
    """

    latent: Tensor
    reconstruction: Tensor
    latent_hat: Tensor


class GanomalyNet(nn.Module):
    """Generator (G_E, G_D, E) and discriminator D of GANomaly.

    Args:
        in_channels: Image channels C.
        resolution: Side R of the square images (multiple of 16).
        width: Channels of the first encoder stage; doubled per stage.
        latent_dim: Size L of the bottleneck (100 in the paper).
    """

    def __init__(self, in_channels: int, resolution: int, width: int, latent_dim: int) -> None:
        super().__init__()
        self.encoder = ConvEncoder(in_channels, resolution, width, latent_dim)
        self.decoder = ConvDecoder(latent_dim, in_channels, resolution, width)
        self.encoder_hat = ConvEncoder(in_channels, resolution, width, latent_dim)
        self.discriminator = ConvEncoder(in_channels, resolution, width, 1)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters of G_E, G_D and E (what the generator optimiser updates)."""
        return [p for part in (self.encoder, self.decoder, self.encoder_hat) for p in part.parameters()]

    def forward(self, images: Tensor) -> GanomalyOutput:
        """(N, C, R, R) in [0, 1] -> z, x̂, ẑ."""
        latent = self.encoder(images)
        reconstruction = self.decoder(latent)
        return GanomalyOutput(latent, reconstruction, self.encoder_hat(reconstruction))


def latent_score(output: GanomalyOutput) -> Tensor:
    """Anomaly score ||z - ẑ||_2 per image: (N,) >= 0."""
    return torch.linalg.vector_norm(output.latent - output.latent_hat, dim=1)


def generator_losses(
    network: GanomalyNet, images: Tensor, output: GanomalyOutput, weights: tuple[float, float, float]
) -> dict[str, Tensor]:
    """The three generator losses and their weighted sum.

    Args:
        network: The GANomaly networks (the discriminator gives the features).
        images: (N, C, R, R) normal images in [0, 1].
        output: The generator's pass on ``images``.
        weights: (adversarial, contextual, latent) weights, (1, 50, 1) in the paper.

    Returns:
        Scalars ``adversarial`` (MSE of D's last feature maps of x and x̂), ``contextual`` (L1 of x - x̂),
        ``latent`` (MSE of z - ẑ) and ``loss`` (their weighted sum).
    """
    real_features = network.discriminator.features(images).detach()
    fake_features = network.discriminator.features(output.reconstruction)
    losses = {
        "adversarial": feature_distance(real_features, fake_features, "l2").mean(),
        "contextual": feature_distance(images, output.reconstruction, "l1").mean(),
        "latent": feature_distance(output.latent, output.latent_hat, "l2").mean(),
    }
    losses["loss"] = sum(w * losses[k] for w, k in zip(weights, ("adversarial", "contextual", "latent"), strict=True))
    return losses


def discriminator_loss(discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """Binary cross-entropy: real normals -> 1, reconstructions (detached) -> 0; a scalar."""
    real_logits = discriminator(real)
    fake_logits = discriminator(fake.detach())
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))

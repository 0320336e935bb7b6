"""ALOCC networks and losses (Sabokrou et al., CVPR 2018, https://arxiv.org/abs/1802.09088).

R (the refiner / reconstructor) is a denoising autoencoder; D (the discriminator) outputs the probability that its
input is a real normal image. Both are built from :mod:`medanomaly.detectors.gan_blocks`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medanomaly.detectors.gan_blocks import ConvDecoder, ConvEncoder, feature_distance


class AloccNet(nn.Module):
    """Reconstructor R (encoder + decoder) and discriminator D of ALOCC.

    Args:
        in_channels: Image channels C.
        resolution: Side R of the square images (multiple of 16).
        width: Channels of the first encoder / discriminator stage; doubled per stage.
        latent_dim: Size of R's bottleneck vector.
        discriminator_norm: Normalisation in D: ``layer``, ``batch`` or ``none`` (see the detector's docs).
    """

    def __init__(
        self, in_channels: int, resolution: int, width: int, latent_dim: int, discriminator_norm: str = "layer"
    ) -> None:
        super().__init__()
        self.reconstructor = nn.Sequential(
            ConvEncoder(in_channels, resolution, width, latent_dim),
            ConvDecoder(latent_dim, in_channels, resolution, width),
        )
        self.discriminator = ConvEncoder(in_channels, resolution, width, 1, norm=discriminator_norm)

    def probability_real(self, images: Tensor) -> Tensor:
        """D(images): (N, C, R, R) -> (N,) probability of a real normal image, in [0, 1]."""
        return torch.sigmoid(self.discriminator(images)).squeeze(1)

    def forward(self, images: Tensor) -> Tensor:
        """R(x): (N, C, R, R) -> (N, C, R, R) in [0, 1]."""
        return self.reconstructor(images)


def alocc_score(network: AloccNet, images: Tensor) -> tuple[Tensor, Tensor]:
    """ALOCC's score 1 - D(R(x)) per image.

    Args:
        network: The ALOCC networks.
        images: (N, C, R, R) in [0, 1].

    Returns:
        ((N,) scores in [0, 1], higher = more anomalous; (N, C, R, R) refined images R(x) in [0, 1]).
    """
    refined = network(images)
    return torch.sigmoid(-network.discriminator(refined)).squeeze(1), refined  # = 1 - D(R(x)), exact near 0


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def alocc_losses(
    network: AloccNet, images: Tensor, noisy: Tensor, reconstruction_weight: float, reconstruction_loss: str
) -> tuple[Tensor, dict[str, Tensor]]:
    """Reconstructor loss and the refined batch.

    Args:
        network: The ALOCC networks.
        images: (N, C, R, R) clean normal images in [0, 1].
        noisy: (N, C, R, R) the same images plus Gaussian noise (R's input).
        reconstruction_weight: Weight lambda of the reconstruction term.
        reconstruction_loss: ``l2`` (the paper's) or ``l1``.

    Returns:
        (R(noisy) for the discriminator step, {"adversarial", "reconstruction", "loss"} scalars for R): R is trained
        to make D call its output real, plus lambda * ||x - R(x + noise)||.
    """
    refined = network(noisy)
    losses = {
        "adversarial": _bce(network.discriminator(refined), 1.0),
        "reconstruction": feature_distance(images, refined, reconstruction_loss).mean(),
    }
    losses["loss"] = losses["adversarial"] + reconstruction_weight * losses["reconstruction"]
    return refined, losses


def discriminator_loss(network: AloccNet, images: Tensor, refined: Tensor) -> Tensor:
    """D's binary cross-entropy: real normals -> 1, R's outputs (detached) -> 0; a scalar."""
    return _bce(network.discriminator(images), 1.0) + _bce(network.discriminator(refined.detach()), 0.0)

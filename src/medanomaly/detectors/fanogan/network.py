"""f-AnoGAN networks and losses: WGAN-GP generator/critic, then an izi_f encoder (Schlegl et al., MedIA 2019).

Paper: https://doi.org/10.1016/j.media.2019.01.010. The generator maps z ~ U(-1, 1)^L to an image, the critic
(layer norm, no batch norm, as WGAN-GP requires) scores images, and the encoder (tanh output, the prior's range) maps
an image back to z. All three are built from :mod:`medanomaly.detectors.gan_blocks`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medanomaly.detectors.gan_blocks import ConvDecoder, ConvEncoder, feature_distance, gradient_penalty


class FanoganNet(nn.Module):
    """Generator G, critic D and encoder E of f-AnoGAN.

    Args:
        in_channels: Image channels C.
        resolution: Side R of the square images (multiple of 16).
        width: Channels of the first encoder / critic stage (and the last generator stage).
        latent_dim: Size L of z.
    """

    def __init__(self, in_channels: int, resolution: int, width: int, latent_dim: int) -> None:
        super().__init__()
        self.generator = ConvDecoder(latent_dim, in_channels, resolution, width)
        self.critic = ConvEncoder(in_channels, resolution, width, 1, norm="layer")
        self.encoder = ConvEncoder(in_channels, resolution, width, latent_dim, norm="batch")
        self.latent_dim = latent_dim

    def sample_latent(self, n_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """(n_samples, L) draws from U(-1, 1) on this network's device."""
        device = next(self.parameters()).device
        return torch.rand(n_samples, self.latent_dim, generator=generator).to(device) * 2 - 1

    def encode(self, images: Tensor) -> Tensor:
        """(N, C, R, R) in [0, 1] -> (N, L) in (-1, 1)."""
        return torch.tanh(self.encoder(images))

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruction G(E(x)): (N, C, R, R) -> (N, C, R, R) in [0, 1]."""
        return self.generator(self.encode(images))


def critic_loss(critic: nn.Module, real: Tensor, fake: Tensor, gp_weight: float) -> tuple[Tensor, Tensor]:
    """WGAN-GP critic loss D(fake) - D(real) + gp_weight * GP.

    Args:
        critic: Images (N, C, R, R) -> (N, 1) scores.
        real: (N, C, R, R) normal images.
        fake: (N, C, R, R) generated images (detached inside).
        gp_weight: Penalty weight lambda (10 in the paper).

    Returns:
        (scalar loss to minimise, scalar Wasserstein estimate E[D(real)] - E[D(fake)], detached).
    """
    wasserstein = critic(real).mean() - critic(fake.detach()).mean()
    loss = -wasserstein + gp_weight * gradient_penalty(critic, real, fake)
    return loss, wasserstein.detach()


def izif_residual(network: FanoganNet, images: Tensor, kappa: float) -> tuple[Tensor, Tensor]:
    """The izi_f residual of each image: MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x)))), f = critic features.

    Args:
        network: The f-AnoGAN networks.
        images: (N, C, R, R) in [0, 1].
        kappa: Weight of the critic-feature term (1 in the paper).

    Returns:
        ((N,) residuals >= 0, (N, C, R, R) reconstructions in [0, 1]).
    """
    reconstruction = network(images)
    image_term = feature_distance(images, reconstruction, "l2")
    feature_term = feature_distance(network.critic.features(images), network.critic.features(reconstruction), "l2")
    return image_term + kappa * feature_term, reconstruction

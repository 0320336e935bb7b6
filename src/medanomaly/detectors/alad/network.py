"""ALAD networks and losses (Zenati et al., ICDM 2018, https://arxiv.org/abs/1812.02288).

A BiGAN (encoder E: x -> z, generator G: z -> x) with three discriminators: D_xz on (x, z) pairs (the BiGAN
discriminator), D_xx on (x, x') pairs (cycle consistency in image space) and D_zz on (z, z') pairs (in latent space).
All three are spectrally normalised, as in the paper. Convolutional parts come from
:mod:`medanomaly.detectors.gan_blocks`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medanomaly.detectors.gan_blocks import ConvDecoder, ConvEncoder, linear


def _mlp(in_features: int, hidden: int, spectral: bool) -> nn.Sequential:
    return nn.Sequential(
        linear(in_features, hidden, spectral), nn.LeakyReLU(0.2), linear(hidden, hidden, spectral), nn.LeakyReLU(0.2)
    )


class JointDiscriminator(nn.Module):
    """D_xz: (image, latent) -> logit; the image goes through a conv encoder, the latent through a dense layer.

    Args:
        in_channels: Image channels C.
        resolution: Image side R.
        width: Channels of the first conv stage.
        latent_dim: Size L of z.
        hidden: Width of the dense layers.
        spectral: Spectral norm on every layer.
    """

    def __init__(
        self, in_channels: int, resolution: int, width: int, latent_dim: int, hidden: int, spectral: bool
    ) -> None:
        super().__init__()
        self.image = ConvEncoder(in_channels, resolution, width, hidden, norm="none", spectral=spectral)
        self.latent = nn.Sequential(linear(latent_dim, hidden, spectral), nn.LeakyReLU(0.2))
        self.joint = _mlp(2 * hidden, hidden, spectral)
        self.logit = linear(hidden, 1, spectral)

    def forward(self, images: Tensor, latent: Tensor) -> Tensor:
        """(N, C, R, R), (N, L) -> (N, 1) logits (1 = an encoder pair (x, E(x)))."""
        joint = torch.cat([F.leaky_relu(self.image(images), 0.2), self.latent(latent)], dim=1)
        return self.logit(self.joint(joint))


class PairImageDiscriminator(nn.Module):
    """D_xx: (image, image') -> logit, on the channel-wise concatenation; exposes its penultimate features.

    Args:
        in_channels: Image channels C (the network sees 2C).
        resolution: Image side R.
        width: Channels of the first conv stage.
        spectral: Spectral norm on every layer.
    """

    def __init__(self, in_channels: int, resolution: int, width: int, spectral: bool) -> None:
        super().__init__()
        self.body = ConvEncoder(2 * in_channels, resolution, width, 1, norm="none", spectral=spectral)

    def forward_features(self, images: Tensor, others: Tensor) -> tuple[Tensor, Tensor]:
        """((N, 1) logits, (N, F) flattened last conv features) of the pairs (images, others)."""
        logits, features = self.body.forward_features(torch.cat([images, others], dim=1))
        return logits, features.flatten(1)

    def forward(self, images: Tensor, others: Tensor) -> Tensor:
        """(N, 1) logits (1 = the pair (x, x))."""
        return self.body(torch.cat([images, others], dim=1))


class PairLatentDiscriminator(nn.Module):
    """D_zz: (z, z') -> logit, a dense network on the concatenation.

    Args:
        latent_dim: Size L of z.
        hidden: Width of the dense layers.
        spectral: Spectral norm on every layer.
    """

    def __init__(self, latent_dim: int, hidden: int, spectral: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(_mlp(2 * latent_dim, hidden, spectral), linear(hidden, 1, spectral))

    def forward(self, latent: Tensor, others: Tensor) -> Tensor:
        """(N, L), (N, L) -> (N, 1) logits (1 = the pair (z, z))."""
        return self.body(torch.cat([latent, others], dim=1))


class AladNet(nn.Module):
    """Encoder, generator and the three discriminators of ALAD.

    Args:
        in_channels: Image channels C.
        resolution: Side R of the square images (multiple of 16).
        width: Channels of the first conv stage of every conv network.
        latent_dim: Size L of z.
        spectral: Spectral norm in the discriminators.
    """

    def __init__(self, in_channels: int, resolution: int, width: int, latent_dim: int, spectral: bool = True) -> None:
        super().__init__()
        hidden = 8 * width
        self.encoder = ConvEncoder(in_channels, resolution, width, latent_dim)
        self.generator = ConvDecoder(latent_dim, in_channels, resolution, width)
        self.d_xz = JointDiscriminator(in_channels, resolution, width, latent_dim, hidden, spectral)
        self.d_xx = PairImageDiscriminator(in_channels, resolution, width, spectral)
        self.d_zz = PairLatentDiscriminator(latent_dim, hidden, spectral)
        self.latent_dim = latent_dim

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters of E and G."""
        return [*self.encoder.parameters(), *self.generator.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of D_xz, D_xx and D_zz."""
        return [p for part in (self.d_xz, self.d_xx, self.d_zz) for p in part.parameters()]

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruction G(E(x)): (N, C, R, R) -> (N, C, R, R) in [0, 1]."""
        return self.generator(self.encoder(images))


def feature_matching_score(network: AladNet, images: Tensor) -> tuple[Tensor, Tensor]:
    """ALAD's score: || f_xx(x, x) - f_xx(x, G(E(x))) ||_1 per image, f_xx = D_xx's penultimate features.

    Args:
        network: The ALAD networks.
        images: (N, C, R, R) in [0, 1].

    Returns:
        ((N,) scores >= 0, (N, C, R, R) reconstructions in [0, 1]).
    """
    reconstruction = network(images)
    _, real = network.d_xx.forward_features(images, images)
    _, fake = network.d_xx.forward_features(images, reconstruction)
    return (real - fake).abs().sum(dim=1), reconstruction


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def adversarial_losses(network: AladNet, images: Tensor, latent: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Discriminator and generator/encoder losses of one batch (binary cross-entropy on logits).

    Args:
        network: The ALAD networks.
        images: (N, C, R, R) normal images.
        latent: (N, L) prior draws z ~ N(0, I).

    Returns:
        (discriminator loss, generator + encoder loss, (N, C, R, R) detached G(E(x))). The discriminators label
        (x, E(x)), (x, x) and (z, z) real and (G(z), z), (x, G(E(x))) and (z, E(G(z))) fake; E and G are trained
        with the labels flipped, as in the authors' code (both pairs of each discriminator enter the generator loss).
    """
    encoded = network.encoder(images)
    generated = network.generator(latent)
    reconstruction = network.generator(encoded)
    latent_cycle = network.encoder(generated)
    pairs = [
        (network.d_xz(images, encoded), network.d_xz(generated, latent)),
        (network.d_xx(images, images), network.d_xx(images, reconstruction)),
        (network.d_zz(latent, latent), network.d_zz(latent, latent_cycle)),
    ]
    generator_loss = sum(_bce(real, 0.0) + _bce(fake, 1.0) for real, fake in pairs)
    detached = [
        (network.d_xz(images, encoded.detach()), network.d_xz(generated.detach(), latent)),
        (network.d_xx(images, images), network.d_xx(images, reconstruction.detach())),
        (network.d_zz(latent, latent), network.d_zz(latent, latent_cycle.detach())),
    ]
    discriminator_loss = sum(_bce(real, 1.0) + _bce(fake, 0.0) for real, fake in detached)
    return discriminator_loss, generator_loss, reconstruction.detach()

"""Symmetric ConvNet encoder / DeConvNet decoder with a dense bottleneck.

Built from MONAI's ``Convolution`` blocks (conv + batch norm + activation; transposed in the decoder). With
``hidden_dim`` the bottleneck is a small MLP (linear, batch norm, ReLU, linear) on each side, the layout of the
MedIAnomaly benchmark's AE (Cai et al. 2024, https://arxiv.org/abs/2404.04518).
"""

from __future__ import annotations

from monai.networks.blocks import Convolution
from torch import Tensor, nn


class ConvAutoencoderNet(nn.Module):
    """Autoencoder for (C, R, R) images in [0, 1].

    Args:
        in_channels: Image channels C.
        resolution: Side R of the square input; must be divisible by ``2 ** depth``.
        depth: Number of stride-2 stages in the encoder (and the decoder).
        width: Channels of the first stage; doubled at each stage, capped at ``8 * width``.
        latent_dim: Size of the bottleneck vector.
        hidden_dim: Width of the MLP layer on each side of the bottleneck; 0 = a single linear layer each way.
    """

    def __init__(
        self,
        in_channels: int,
        resolution: int,
        depth: int = 4,
        width: int = 32,
        latent_dim: int = 128,
        hidden_dim: int = 0,
    ):
        super().__init__()
        if resolution % (2**depth):
            msg = f"resolution {resolution} must be divisible by 2**depth = {2**depth}"
            raise ValueError(msg)
        channels = [min(width * 2**stage, width * 8) for stage in range(depth)]
        self.bottom = (channels[-1], resolution // 2**depth, resolution // 2**depth)
        flat = channels[-1] * self.bottom[1] * self.bottom[2]
        encoder: list[nn.Module] = []
        previous = in_channels
        for out in channels:
            encoder.append(_block(previous, out))
            previous = out
        self.encoder = nn.Sequential(*encoder, nn.Flatten(), *_dense(flat, latent_dim, hidden_dim))
        decoder: list[nn.Module] = [*_dense(latent_dim, flat, hidden_dim), nn.Unflatten(1, self.bottom)]
        for out in reversed([in_channels, *channels[:-1]]):
            decoder.append(_block(previous, max(out, width // 2), transposed=True))
            previous = max(out, width // 2)
        decoder += [nn.Conv2d(previous, in_channels, kernel_size=3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)

    def encode(self, images: Tensor) -> Tensor:
        """(N, C, R, R) -> (N, latent_dim)."""
        return self.encoder(images)

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruction (N, C, R, R) in [0, 1]."""
        return self.decoder(self.encoder(images))


def _dense(in_features: int, out_features: int, hidden: int) -> list[nn.Module]:
    if not hidden:
        return [nn.Linear(in_features, out_features)]
    return [nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out_features)]


def _block(in_channels: int, out_channels: int, transposed: bool = False) -> nn.Module:
    return Convolution(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        strides=2,
        kernel_size=3,
        padding=1,
        output_padding=1 if transposed else None,
        act=("leakyrelu", {"negative_slope": 0.2}),
        norm="batch",
        is_transposed=transposed,
    )

"""The translation generator: encoder, residual blocks, decoder; outputs a healthy-looking image and a mask.

StarGAN/Brainomaly-style layout (Siddiquee et al., WACV 2023, https://arxiv.org/abs/2302.09759): a 7x7 stem,
``n_down`` stride-2 convolutions, ``n_res`` residual blocks, as many upsampling stages, and a 7x7 head. The head
predicts an intermediate healthy image ``B_int`` (sigmoid, [0, 1]) and a mask ``M`` (sigmoid, [0, 1]); the
translation keeps the input wherever the mask is off::

    x' = M * B_int + (1 - M) * x

Instance normalisation throughout (per-image statistics, so batch composition never changes a translation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Initial bias of the mask logit: sigmoid(-3) ~ 0.05, so training starts close to the identity translation.
MASK_BIAS_INIT = -3.0


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance norm layers with a skip connection; keeps (N, F, h, w)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, features: Tensor) -> Tensor:
        """(N, F, h, w) -> (N, F, h, w)."""
        return features + self.body(features)


class MaskGeneratorNet(nn.Module):
    """Generator G(x) -> (x', B_int, M) for (C, R, R) images in [0, 1].

    Args:
        in_channels: Image channels C.
        width: Channels after the stem; doubled by each down-sampling stage.
        n_down: Stride-2 stages (R must be divisible by ``2 ** n_down``).
        n_res: Residual blocks at the bottleneck.
    """

    def __init__(self, in_channels: int, width: int = 16, n_down: int = 2, n_res: int = 4):
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, width, 7, 1)]
        channels = width
        for _ in range(n_down):
            layers.append(_conv(channels, channels * 2, 4, 2))
            channels *= 2
        layers += [ResidualBlock(channels) for _ in range(n_res)]
        for _ in range(n_down):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(channels, channels // 2, 3, 1)]
            channels //= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, in_channels + 1, kernel_size=7, padding=3)
        with torch.no_grad():
            self.head.bias[in_channels] = MASK_BIAS_INIT
        self.in_channels = in_channels
        self.n_down = n_down

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Translate towards the healthy domain.

        Args:
            images: (N, C, R, R) float32 in [0, 1].

        Returns:
            translated x' (N, C, R, R) in [0, 1], intermediate B_int (N, C, R, R) in [0, 1], mask M (N, 1, R, R)
            in [0, 1].
        """
        out = self.head(self.body(images))
        intermediate = torch.sigmoid(out[:, : self.in_channels])
        mask = torch.sigmoid(out[:, self.in_channels :])
        return mask * intermediate + (1 - mask) * images, intermediate, mask


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    padding = (kernel - stride + 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.ReLU(inplace=True),
    )


def check_resolution(resolution: int, n_down: int) -> None:
    """ValueError unless ``resolution`` is divisible by ``2 ** n_down``."""
    if resolution % (2**n_down):
        msg = f"anomalypro: resolution {resolution} must be divisible by 2**n_down = {2**n_down}"
        raise ValueError(msg)


def absolute_difference(images: Tensor, translated: Tensor) -> Tensor:
    """|x - x'| averaged over channels: (N, C, H, W) x 2 -> (N, H, W), values in [0, 1]."""
    return torch.abs(images - translated).mean(dim=1)

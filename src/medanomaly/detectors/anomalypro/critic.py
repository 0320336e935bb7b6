"""PatchGAN critic for the Wasserstein loss (Isola et al., CVPR 2017, https://arxiv.org/abs/1611.07004).

Stride-2 4x4 convolutions with leaky ReLU and no normalisation (batch norm would break the per-sample gradient
penalty of WGAN-GP, Gulrajani et al. 2017, https://arxiv.org/abs/1704.00028); a final 3x3 convolution gives one
unbounded realness value per patch. The image's critic value is the mean over its patches.
"""

from __future__ import annotations

from torch import Tensor, nn


class PatchCriticNet(nn.Module):
    """Critic D(x) -> (N, 1, R / 2**n_layers, R / 2**n_layers) patch values.

    Args:
        in_channels: Image channels C.
        width: Channels of the first layer; doubled at each further layer, capped at ``8 * width``.
        n_layers: Stride-2 layers (receptive field grows with each).
    """

    def __init__(self, in_channels: int, width: int = 32, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for layer in range(n_layers):
            out = min(width * 2**layer, width * 8)
            layers += [nn.Conv2d(previous, out, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            previous = out
        layers.append(nn.Conv2d(previous, 1, kernel_size=3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, R, R) in [0, 1] -> (N, 1, h, w) patch values (higher = more like a real healthy image)."""
        return self.body(images)

    def image_values(self, images: Tensor) -> Tensor:
        """(N,) critic value of each image: the mean of its patch values."""
        return self.body(images).flatten(1).mean(dim=1)

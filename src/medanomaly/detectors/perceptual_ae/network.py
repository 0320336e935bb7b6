"""Progressively growing autoencoder (PGGAN-style growth, Karras et al., https://arxiv.org/abs/1710.10196).

Used for anomaly detection by Shvetsova et al., IEEE Access 2021, https://arxiv.org/abs/2006.13265.

The network works at ``n_stages`` resolutions ``start * 2**s`` up to the target. At stage ``s`` the encoder reads
images of side ``start * 2**s`` and the decoder writes them; a newly added stage is faded in with ``alpha`` in
[0, 1]: the new layers' path is blended with the previous stage's path (images down/up-sampled by 2), as in PGGAN.
The current ``stage``, ``alpha`` and the number of training images seen are buffers, so they are saved with the
weights and a best-epoch snapshot restores them together.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProgressiveAutoencoderNet(nn.Module):
    """Encoder ``start * 2**s`` px -> latent vector -> decoder, growable stage by stage.

    Args:
        in_channels: Image channels C.
        resolution: Final side R (``R / start`` must be a power of two).
        start_resolution: Side of the first stage.
        width: Channels at the final resolution; doubled per lower stage, capped at ``8 * width``.
        latent_dim: Size of the bottleneck vector.
    """

    def __init__(
        self, in_channels: int, resolution: int, start_resolution: int = 8, width: int = 16, latent_dim: int = 16
    ):
        super().__init__()
        self.n_stages = count_stages(resolution, start_resolution)
        self.start_resolution = start_resolution
        channels = [min(width * 2 ** (self.n_stages - 1 - s), width * 8) for s in range(self.n_stages)]
        self.from_rgb = nn.ModuleList(_conv(in_channels, ch, 1) for ch in channels)
        self.to_rgb = nn.ModuleList(nn.Conv2d(ch, in_channels, 1) for ch in channels)
        stages = range(1, self.n_stages)
        self.down = nn.ModuleList([nn.Identity()] + [_Down(channels[s], channels[s - 1]) for s in stages])
        self.up = nn.ModuleList([nn.Identity()] + [_Up(channels[s - 1], channels[s]) for s in stages])
        flat = channels[0] * start_resolution**2
        self.encode_base = nn.Sequential(_conv(channels[0], channels[0], 3), nn.Flatten(), nn.Linear(flat, latent_dim))
        self.decode_base = nn.Sequential(
            nn.Linear(latent_dim, flat),
            nn.Unflatten(1, (channels[0], start_resolution, start_resolution)),
            nn.LeakyReLU(0.2),
            _conv(channels[0], channels[0], 3),
        )
        self.register_buffer("stage", torch.tensor(self.n_stages - 1))
        self.register_buffer("alpha", torch.tensor(1.0))
        self.register_buffer("images_seen", torch.tensor(0, dtype=torch.long))

    @property
    def current_resolution(self) -> int:
        """Side of the images the network reads and writes at its current stage."""
        return self.start_resolution * 2 ** int(self.stage)

    def encode(self, images: Tensor) -> Tensor:
        """(N, C, r, r) at the current resolution -> (N, latent_dim)."""
        stage, alpha = int(self.stage), float(self.alpha)
        features = self.from_rgb[stage](images)
        if stage > 0:
            features = self.down[stage](features)
            if alpha < 1.0:
                previous = self.from_rgb[stage - 1](F.avg_pool2d(images, 2))
                features = alpha * features + (1 - alpha) * previous
        for level in range(stage - 1, 0, -1):
            features = self.down[level](features)
        return self.encode_base(features)

    def decode(self, latent: Tensor) -> Tensor:
        """(N, latent_dim) -> (N, C, r, r) reconstruction in [0, 1] at the current resolution."""
        stage, alpha = int(self.stage), float(self.alpha)
        features = self.decode_base(latent)
        for level in range(1, stage):
            features = self.up[level](features)
        if stage == 0:
            return torch.sigmoid(self.to_rgb[0](features))
        out = self.to_rgb[stage](self.up[stage](features))
        if alpha < 1.0:
            previous = F.interpolate(self.to_rgb[stage - 1](features), scale_factor=2, mode="nearest")
            out = alpha * out + (1 - alpha) * previous
        return torch.sigmoid(out)

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, r, r) in [0, 1] at the current resolution -> reconstruction of the same shape."""
        return self.decode(self.encode(images))

    def set_progress(self, stage: int, alpha: float) -> None:
        """Move to ``stage`` with fade-in weight ``alpha`` (in place, on the buffers)."""
        self.stage.fill_(stage)
        self.alpha.fill_(alpha)


def count_stages(resolution: int, start_resolution: int) -> int:
    """Number of stages from ``start_resolution`` to ``resolution``; ValueError unless a power-of-two ratio."""
    ratio = resolution / start_resolution
    if start_resolution < 4 or ratio < 1 or not math.log2(ratio).is_integer():
        msg = (
            f"perceptual_ae: resolution {resolution} must be start_resolution ({start_resolution}, >= 4) times a "
            "power of two, e.g. 32, 64, 128 with start 8"
        )
        raise ValueError(msg)
    return int(math.log2(ratio)) + 1


def progress_at(images_seen: int, stage_images: float, n_stages: int) -> tuple[int, float]:
    """Stage and fade-in weight after ``images_seen`` training images.

    Stage 0 lasts ``stage_images`` images; every later stage fades in over its first half (alpha 0 -> 1) and is
    trained stably over the second; the last stage then stays. Growth completes after
    ``(n_stages - 0.5) * stage_images`` images.

    Returns:
        (stage in [0, n_stages - 1], alpha in [0, 1]).
    """
    return progress_at_phase(images_seen / max(stage_images, 1e-9), n_stages)


def progress_at_phase(phase: float, n_stages: int) -> tuple[int, float]:
    """Stage and fade-in weight at ``phase`` (>= 0) measured in stage lengths (see :func:`progress_at`)."""
    stage = min(int(phase), n_stages - 1)
    if stage == 0:
        return 0, 1.0
    return stage, min(1.0, 2.0 * (phase - stage))


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.LeakyReLU(0.2))


class _Down(nn.Module):
    """(N, in, 2r, 2r) -> (N, out, r, r): two 3x3 conv + leaky ReLU, then 2x average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(_conv(in_channels, in_channels, 3), _conv(in_channels, out_channels, 3))

    def forward(self, features: Tensor) -> Tensor:
        return F.avg_pool2d(self.convs(features), 2)


class _Up(nn.Module):
    """(N, in, r, r) -> (N, out, 2r, 2r): nearest 2x upsampling, then two 3x3 conv + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(_conv(in_channels, out_channels, 3), _conv(out_channels, out_channels, 3))

    def forward(self, features: Tensor) -> Tensor:
        return self.convs(F.interpolate(features, scale_factor=2, mode="nearest"))

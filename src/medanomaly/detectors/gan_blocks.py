"""DCGAN-style building blocks shared by the GAN baselines (``fanogan``, ``ganomaly``, ``alad``, ``alocc``).

Every network of the four methods is made of the two builders here: :class:`ConvEncoder` (image -> vector, with the
last convolutional feature map exposed for feature matching) and :class:`ConvDecoder` (vector -> image in [0, 1]).
They follow Radford et al., "Unsupervised representation learning with deep convolutional GANs", ICLR 2016,
https://arxiv.org/abs/1511.06434: 4x4 stride-2 convolutions, batch norm (none on the first encoder stage),
LeakyReLU(0.2) going down and ReLU going up, weights drawn from N(0, 0.02).

Resolutions: the side R must be a multiple of 16 (32, 48, 64, ..., 128, 224, 256). The encoder halves the side while
it is even and larger than 4, so 64 px ends at 4x4, 224 px at 7x7 and 48 px at 3x3; a final convolution as large as
that map gives the vector, and the decoder mirrors it. Widths double per stage, capped at ``max_width_mult * width``.

Plain ``torch.nn`` layers are used instead of MONAI's ``Convolution`` because the critics need spectral norm and
norm-free variants that are clearer written out than configured.

Also here: the WGAN-GP :func:`gradient_penalty`, :class:`WeightAverage` (the moving average of weights that
``ganomaly``, ``alad`` and ``alocc`` score with), :class:`StepCounter` (saved step counts, e.g. f-AnoGAN's n_critic
rhythm) and small helpers for residual maps and feature distances.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

NORMS = ("batch", "layer", "none")


def stage_plan(resolution: int, width: int, max_width_mult: int = 8, owner: str = "gan") -> tuple[list[int], int]:
    """Channels of each stride-2 stage and the side of the last feature map.

    Args:
        resolution: Side R of the square input; a multiple of 16.
        width: Channels of the first stage.
        max_width_mult: Cap on the channels, as a multiple of ``width``.
        owner: Method name used in error messages.

    Returns:
        (channels per stage, side of the deepest map), e.g. ([32, 64, 128, 256], 4) for R = 64, width = 32.
    """
    if resolution < 16 or resolution % 16:
        msg = f"{owner}: the image side must be a multiple of 16 (32, 64, 128, 224, ...), got {resolution}"
        raise ValueError(msg)
    if width < 1:
        msg = f"{owner}: width must be a positive number of channels, got {width}"
        raise ValueError(msg)
    channels: list[int] = []
    side = resolution
    while side > 4 and side % 2 == 0:
        channels.append(min(width * 2 ** len(channels), width * max_width_mult))
        side //= 2
    return channels, side


def check_square(owner: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(channels, side) of a (C, R, R) input shape; ValueError for non-square images."""
    channels, height, width = input_shape
    if height != width:
        msg = f"{owner} needs square images, got {height}x{width}: set a square --resolution"
        raise ValueError(msg)
    return int(channels), int(height)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int, spectral: bool) -> nn.Module:
    layer = nn.Conv2d(in_channels, out_channels, kernel, stride, padding)
    nn.init.normal_(layer.weight, 0.0, 0.02)
    nn.init.zeros_(layer.bias)
    return _spectral_norm(layer) if spectral else layer


def _deconv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int) -> nn.Module:
    layer = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, padding, bias=False)
    nn.init.normal_(layer.weight, 0.0, 0.02)
    return layer


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        layer = nn.BatchNorm2d(channels)
        nn.init.normal_(layer.weight, 1.0, 0.02)
        nn.init.zeros_(layer.bias)
        return layer
    if kind == "layer":  # layer norm over (C, H, W): the WGAN-GP critic must not mix samples of a batch
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    msg = f"norm must be one of {NORMS}, got {kind!r}"
    raise ValueError(msg)


def linear(in_features: int, out_features: int, spectral: bool = False) -> nn.Module:
    """A linear layer with DCGAN initialisation, spectrally normalised on request."""
    layer = nn.Linear(in_features, out_features)
    nn.init.normal_(layer.weight, 0.0, 0.02)
    nn.init.zeros_(layer.bias)
    return _spectral_norm(layer) if spectral else layer


class ConvEncoder(nn.Module):
    """Image -> vector; also the discriminator / critic body.

    Args:
        in_channels: Image channels C.
        resolution: Side R of the square input (multiple of 16).
        width: Channels of the first stage.
        out_features: Size of the output vector (latent size, or 1 for a critic / discriminator logit).
        norm: ``batch`` (encoders, discriminators), ``layer`` (WGAN-GP critics) or ``none``.
        spectral: Spectral norm on every convolution (ALAD's discriminators).
        max_width_mult: Cap on the channels, as a multiple of ``width``.
    """

    def __init__(
        self,
        in_channels: int,
        resolution: int,
        width: int,
        out_features: int,
        norm: str = "batch",
        spectral: bool = False,
        max_width_mult: int = 8,
    ) -> None:
        super().__init__()
        channels, side = stage_plan(resolution, width, max_width_mult)
        layers: list[nn.Module] = []
        previous = in_channels
        for index, out in enumerate(channels):
            layers.append(_conv(previous, out, 4, 2, 1, spectral))
            layers.append(_norm("none" if index == 0 else norm, out))
            layers.append(nn.LeakyReLU(0.2))
            previous = out
        self.body = nn.Sequential(*layers)
        self.head = _conv(previous, out_features, side, 1, 0, spectral)
        self.feature_shape = (previous, side, side)

    def features(self, images: Tensor) -> Tensor:
        """(N, C, R, R) -> (N, C_last, b, b), the last convolutional feature map (used for feature matching)."""
        return self.body(images)

    def forward_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, R, R) -> ((N, out_features), (N, C_last, b, b))."""
        features = self.body(images)
        return self.head(features).flatten(1), features

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, R, R) -> (N, out_features), unbounded."""
        return self.head(self.body(images)).flatten(1)


class ConvDecoder(nn.Module):
    """Vector -> image in [0, 1] (generators and decoders).

    Args:
        latent_dim: Size L of the input vector.
        out_channels: Image channels C.
        resolution: Side R of the output (multiple of 16).
        width: Channels of the last (largest) stage, mirroring :class:`ConvEncoder`'s first.
        max_width_mult: Cap on the channels, as a multiple of ``width``.
    """

    def __init__(
        self, latent_dim: int, out_channels: int, resolution: int, width: int, max_width_mult: int = 8
    ) -> None:
        super().__init__()
        channels, side = stage_plan(resolution, width, max_width_mult)
        channels = channels[::-1]
        layers: list[nn.Module] = [_deconv(latent_dim, channels[0], side, 1, 0), _norm("batch", channels[0]), nn.ReLU()]
        for previous, out in zip(channels[:-1], channels[1:], strict=True):
            layers += [_deconv(previous, out, 4, 2, 1), _norm("batch", out), nn.ReLU()]
        layers += [_deconv(channels[-1], out_channels, 4, 2, 1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, latent: Tensor) -> Tensor:
        """(N, L) -> (N, C, R, R) in [0, 1]."""
        return self.body(latent[:, :, None, None])


class StepCounter(nn.Module):
    """Optimiser-step counters kept as buffers, so schedules (n_critic) survive checkpoints and resuming.

    Args:
        names: One ``long`` scalar buffer per name, starting at 0.
    """

    def __init__(self, *names: str) -> None:
        super().__init__()
        for name in names:
            self.register_buffer(name, torch.zeros((), dtype=torch.long))

    def increment(self, name: str) -> int:
        """Add one to ``name`` and return the new count."""
        buffer = getattr(self, name)
        buffer.add_(1)
        return int(buffer)

    def value(self, name: str) -> int:
        """The current count of ``name``."""
        return int(getattr(self, name))


class WeightAverage(nn.Module):
    """An exponential moving average (EMA) of a network's weights, for scoring with smoothed GAN weights.

    Averaging the weights of an adversarial game damps its step-to-step swings (Yazıcı et al., "The unusual
    effectiveness of averaging in GAN training", ICLR 2019, https://arxiv.org/abs/1806.04498). The decay warms up as
    ``min(decay, (1 + t) / (10 + t))`` after t updates (TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``), so a short run is not dominated by the initial weights. Buffers (batch-norm statistics,
    spectral-norm vectors) are copied, not averaged.

    Args:
        network: The network to track; a frozen copy of it is the starting average.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).requires_grad_(False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, source: nn.Module, decay: float) -> None:
        """Move the average towards ``source`` (same architecture); ``decay`` in [0, 1), 0 copies ``source``."""
        step = float(self.steps)
        rate = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
        for mean, value in zip(self.network.parameters(), source.parameters(), strict=True):
            mean.lerp_(value, rate)
        for mean, value in zip(self.network.buffers(), source.buffers(), strict=True):
            mean.copy_(value)
        self.steps.add_(1)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP penalty E[(||grad_x critic(x_hat)||_2 - 1)^2] on random interpolates (Gulrajani et al. 2017).

    Args:
        critic: Maps (N, ...) inputs to (N, 1) or (N,) scores.
        real: (N, ...) real samples.
        fake: (N, ...) generated samples, same shape (detached or not).

    Returns:
        Scalar penalty >= 0 (0 exactly when the critic's gradient has unit norm at every interpolate); it is part of
        the graph, so it can be back-propagated into the critic.
    """
    alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grads,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grads.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def residual_map(images: Tensor, reconstruction: Tensor) -> Tensor:
    """Per-pixel absolute residual averaged over channels: (N, C, H, W) x 2 -> (N, H, W), >= 0."""
    return torch.abs(images - reconstruction).mean(dim=1)


def feature_distance(first: Tensor, second: Tensor, kind: str = "l2") -> Tensor:
    """Per-sample mean squared (``l2``) or absolute (``l1``) difference of two (N, ...) feature tensors -> (N,)."""
    difference = (first - second).flatten(1)
    return difference.pow(2).mean(dim=1) if kind == "l2" else difference.abs().mean(dim=1)


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Switch ``requires_grad`` of every parameter of ``module``."""
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def adam(module: nn.Module | list[nn.Module], learning_rate: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam over one module or several modules' parameters."""
    modules = module if isinstance(module, list) else [module]
    return torch.optim.Adam([p for m in modules for p in m.parameters()], lr=learning_rate, betas=betas)

"""Classifier networks: a small CNN from scratch, or a pretrained feature extractor with a linear head.

Both expose ``features(images)`` (the last convolutional activation, which Grad-CAM explains) and ``head(features)``
(pooling + linear layer to class logits), and ``forward = head(features(...))``.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import Tensor, nn


class ClassifierNet(nn.Module):
    """CNN from scratch: ``depth`` stages of two 3x3 conv + batch norm + ReLU, 2x max-pooling between stages.

    Args:
        in_channels: Image channels C.
        n_classes: Number of output logits.
        width: Channels of the first stage; doubled at each stage, capped at ``8 * width``.
        depth: Number of stages; the last conv map has side ``R / 2 ** (depth - 1)``.
        dropout: Dropout before the linear layer.
    """

    def __init__(self, in_channels: int, n_classes: int = 2, width: int = 16, depth: int = 4, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for stage in range(depth):
            out = min(width * 2**stage, width * 8)
            if stage:
                layers.append(nn.MaxPool2d(2))
            layers += [_conv(previous, out), _conv(out, out)]
            previous = out
        self.features = nn.Sequential(*layers)
        self.head = _head(previous, n_classes, dropout)

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, R, R) in [0, 1] -> (N, n_classes) logits."""
        return self.head(self.features(images))


class PretrainedFeatures(nn.Module):
    """A pretrained backbone of :mod:`medanomaly.features`, trainable, returning one layer's feature map.

    Grey images are replicated to 3 channels and normalised as the backbone's weights expect. Batch-norm layers
    keep their pretrained statistics (eval mode) while the weights are fine-tuned: small batches would spoil them.
    The stages up to ``frozen_through`` run without gradient, so their weights stay pretrained (their generic edges
    and textures are what a few hundred images cannot relearn) and no backward pass is spent on them.

    Args:
        backbone: A :class:`medanomaly.features.backbone.Backbone` (e.g. ``FeatureExtractor(...).backbone``).
        layer: The layer whose output feeds the head.
        frozen_through: Last frozen layer (a name of ``backbone.layer_names`` before ``layer``); None = none frozen.
    """

    def __init__(self, backbone: nn.Module, layer: str, frozen_through: str | None = None):
        super().__init__()
        self.backbone = backbone.requires_grad_(True)
        self.layer = layer
        names = backbone.layer_names
        backbone.check_layers([layer] if frozen_through is None else [layer, frozen_through])
        if frozen_through is not None and names.index(frozen_through) >= names.index(layer):
            msg = f"frozen_through={frozen_through!r} must come before the output layer {layer!r}"
            raise ValueError(msg)
        self.n_frozen = 0 if frozen_through is None else names.index(frozen_through) + 1
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PretrainedFeatures:
        """Set the mode; the backbone's batch norms stay in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """(N, 1 or 3, R, R) in [0, 1] -> (N, F, R / stride, R / stride)."""
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = (x - self.mean) / self.std
        for index, (name, stage) in enumerate(self.backbone.stages()):
            with torch.set_grad_enabled(torch.is_grad_enabled() and index >= self.n_frozen):
                x = stage(x)
            if name == self.layer:
                return x
        msg = f"layer {self.layer!r} not reached"
        raise RuntimeError(msg)


class BackboneClassifierNet(nn.Module):
    """Pretrained features (fine-tuned) with a pooling + linear head.

    Args:
        features: Module mapping (N, C, R, R) images in [0, 1] to (N, F, h, w) (a :class:`PretrainedFeatures`).
        channels: Channels F of the feature map.
        n_classes: Number of output logits.
        dropout: Dropout before the linear layer.
    """

    def __init__(self, features: nn.Module, channels: int, n_classes: int = 2, dropout: float = 0.2):
        super().__init__()
        self.features = features
        self.head = _head(channels, n_classes, dropout)

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, R, R) in [0, 1] -> (N, n_classes) logits."""
        return self.head(self.features(images))


def _conv(in_channels: int, out_channels: int) -> nn.Module:
    return Convolution(
        spatial_dims=2, in_channels=in_channels, out_channels=out_channels, kernel_size=3, act="relu", norm="batch"
    )


def _head(channels: int, n_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, n_classes))

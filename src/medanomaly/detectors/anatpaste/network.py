"""AnatPaste's networks: a fine-tuned feature backbone with a binary "pasted?" head, and the fitted Gaussians.

The backbone comes from :mod:`medanomaly.features`' backbone registry (EfficientNet-Lite0 with its offline
ImageNet weights, ResNets from a local file, or the seeded ``tiny`` CNN for tests). Unlike
:class:`medanomaly.features.FeatureExtractor`, which keeps its backbone frozen and out of the state dict, this one is
trained, so its weights are part of the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medanomaly.features.backbones import build_backbone, load_pretrained, needs_weights

#: (image layer, map layer) per backbone: the pooled image feature feeds the head and the image Gaussian, the
#: map layer's local features the patch Gaussian behind the anomaly map.
DEFAULT_LAYERS = {
    "efficientnet_lite0": ("head", "blocks.10"),
    "resnet18": ("layer4", "layer3"),
    "wide_resnet50_2": ("layer4", "layer3"),
    "tiny": ("stage3", "stage2"),
}
#: First fine-tuned layer per backbone; earlier stages stay frozen (weights and batch-norm statistics). On a CPU the
#: high-resolution early stages dominate the backward pass, and generic low-level filters need no re-learning.
DEFAULT_TRAINABLE_FROM = {"efficientnet_lite0": "blocks.8", "resnet18": "layer3", "wide_resnet50_2": "layer3"}


class AnatPasteNet(nn.Module):
    """Backbone + linear head giving the logit of "this image has a pasted patch".

    Args:
        backbone: A name of :func:`medanomaly.features.available_backbones`.
        image_layer: Layer whose global average pool is the image feature (None = :data:`DEFAULT_LAYERS`).
        map_layer: Layer whose local features make the anomaly map (None = :data:`DEFAULT_LAYERS`).
        pretrained: Start from the backbone's pretrained weights (False: random init, e.g. when weights follow).
        weights: Path of a backbone state dict (None = the bundled weights).
        trainable_from: First layer that is fine-tuned; the stages before it are frozen. None = the backbone's
            :data:`DEFAULT_TRAINABLE_FROM` (everything for ``tiny``); ``"all"`` = the whole backbone.
        density_layer: Layer whose pooled features the image Gaussian models (None = ``image_layer``).
    """

    def __init__(
        self,
        backbone: str,
        image_layer: str | None = None,
        map_layer: str | None = None,
        pretrained: bool = True,
        weights: str | None = None,
        trainable_from: str | None = None,
        density_layer: str | None = None,
    ) -> None:
        super().__init__()
        net = load_pretrained(backbone, weights) if pretrained and needs_weights(backbone) else build_backbone(backbone)
        names = net.layer_names
        default = DEFAULT_LAYERS.get(backbone, (names[-1], net.default_layers[-1]))
        self.image_layer, self.map_layer = image_layer or default[0], map_layer or default[1]
        self.density_layer = density_layer or self.image_layer
        net.check_layers([self.image_layer, self.map_layer, self.density_layer])
        self.backbone = net.to(memory_format=torch.channels_last)  # faster convolutions on a CPU
        first = trainable_from or DEFAULT_TRAINABLE_FROM.get(backbone, "all")
        self.trainable_from = names[0] if first == "all" else first
        net.check_layers([self.trainable_from])
        self.frozen = nn.ModuleList(_modules_before(net, self.trainable_from))
        for module in self.frozen:
            module.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(net.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(net.std).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Linear(net.channels[self.image_layer], 1)

    @property
    def image_channels(self) -> int:
        """Size of the pooled image feature."""
        return self.backbone.channels[self.image_layer]

    @property
    def density_channels(self) -> int:
        """Size of the pooled feature behind the image score."""
        return self.backbone.channels[self.density_layer]

    @property
    def map_channels(self) -> int:
        """Channels of the local features."""
        return self.backbone.channels[self.map_layer]

    def train(self, mode: bool = True) -> AnatPasteNet:
        """Set the training mode; frozen stages stay in eval mode (fixed batch-norm statistics)."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def features(self, images: Tensor, pooled_layer: str | None = None) -> tuple[Tensor, Tensor]:
        """Local and pooled features.

        Args:
            images: (N, 1 or 3, H, W) float in [0, 1] (grey is replicated to 3 channels).
            pooled_layer: Layer to pool (None = ``image_layer``, the head's input; ``density_layer`` for scoring).

        Returns:
            (N, C_map, h, w) local features of the map layer and (N, C) pooled features of ``pooled_layer``.
        """
        pooled_layer = pooled_layer or self.image_layer
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = (x - self.mean) / self.std
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        wanted, found, grad, frozen = {self.map_layer, pooled_layer}, {}, torch.is_grad_enabled(), True
        for name, stage in self.backbone.stages():
            frozen = frozen and name != self.trainable_from
            with torch.set_grad_enabled(grad and not frozen):
                x = stage(x)
            if name in wanted:
                found[name] = x
                if len(found) == len(wanted):
                    break
        return found[self.map_layer].contiguous(), found[pooled_layer].mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        """(N,) logits of "pasted" for (N, C, H, W) images in [0, 1]."""
        _, pooled = self.features(images)
        return self.head(pooled)[:, 0]


def _modules_before(backbone: nn.Module, layer: str) -> list[nn.Module]:
    """Leaf modules that the stages before ``layer`` run (found by tracing a small dummy input once)."""
    called: list[nn.Module] = []
    hooks = [module.register_forward_pre_hook(lambda m, _: called.append(m))
             for module in backbone.modules() if not list(module.children())]  # fmt: skip
    try:
        x = torch.zeros(1, 3, 64, 64)
        with torch.no_grad():
            for name, stage in backbone.stages():
                if name == layer:
                    break
                x = stage(x)
    finally:
        for hook in hooks:
            hook.remove()
    unique = {id(module): module for module in called}
    return list(unique.values())


class GaussianDensity(nn.Module):
    """Mean and precision (inverse shrunk covariance) of normal features, as buffers; scores by Mahalanobis distance.

    Args:
        image_dim: Size of the pooled image feature.
        map_dim: Size of a local feature vector.
    """

    def __init__(self, image_dim: int, map_dim: int) -> None:
        super().__init__()
        self.register_buffer("image_mean", torch.zeros(image_dim))
        self.register_buffer("image_precision", torch.eye(image_dim))
        self.register_buffer("patch_mean", torch.zeros(map_dim))
        self.register_buffer("patch_precision", torch.eye(map_dim))

    def image_distance(self, pooled: Tensor) -> Tensor:
        """(N,) Mahalanobis distances of (N, C_image) pooled features."""
        return mahalanobis(pooled, self.image_mean, self.image_precision)

    def patch_distance(self, local: Tensor) -> Tensor:
        """(N, h, w) Mahalanobis distances of (N, C_map, h, w) local features."""
        n, c, h, w = local.shape
        vectors = local.permute(0, 2, 3, 1).reshape(-1, c)
        return mahalanobis(vectors, self.patch_mean, self.patch_precision).view(n, h, w)


def mahalanobis(x: Tensor, mean: Tensor, precision: Tensor) -> Tensor:
    """(M,) sqrt((x - mean)^T P (x - mean)) of (M, D) vectors, clamped at 0 against round-off."""
    delta = x - mean
    return ((delta @ precision) * delta).sum(dim=1).clamp_min(0.0).sqrt()

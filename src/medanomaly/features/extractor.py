"""A frozen pretrained CNN that turns images into intermediate feature maps (PatchCore, PaDiM, perceptual losses).

The extractor is an ``nn.Module`` a detector may list in its ``modules()``, but its backbone weights are *not* part
of its ``state_dict``: they are rebuilt from ``backbone``/``weights`` (the detector's hyper-parameters) when a model
is loaded, so a model directory holds only what was fitted (a memory bank, Gaussians), not 18-270 MB of ImageNet
weights per model. Loading a state dict fills the backbone entries from the extractor's own weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import torch
from torch import Tensor, nn

from medanomaly.features.backbones import build_backbone, fingerprint, load_pretrained, needs_weights
from medanomaly.features.fast import OnnxRunner, build_runner, onnxruntime_available

logger = logging.getLogger(__name__)
_RUNTIMES = ("auto", "torch", "onnx")
#: Images per ONNX Runtime call: its memory arena grows with the batch (~0.8 GB at 32 x 224 px, ~0.25 GB at 8)
#: and small batches ran no slower per image on 2 cores.
_ONNX_CHUNK = 8


class FeatureExtractor(nn.Module):
    """Frozen backbone returning feature maps of chosen layers.

    Grey inputs are replicated to 3 channels and normalised the way the backbone's weights expect (ImageNet
    mean/std for the ResNets, TensorFlow's [-1, 1] scaling for EfficientNet-Lite0). The backbone stays in eval mode
    (batch-norm running statistics) even when a parent module is put in training mode; gradients flow to the input
    (for perceptual losses) but never into the frozen weights.

    Args:
        backbone: One of :func:`~medanomaly.features.available_backbones`.
        layers: Layer names (see the backbone's ``layer_names``); None = the backbone's default pair
            (EfficientNet-Lite0 ``blocks.4``, ``blocks.10``; ResNets ``layer2``, ``layer3``; tiny ``stage2``,
            ``stage3``).
        weights: Path to a state dict for the backbone; None = its bundled weights (EfficientNet-Lite0's pip
            package). Required for the ResNets.
        pretrained: False = random initialisation (tests only; ``tiny`` is always seeded and needs no weights).
        runtime: ``auto`` (ONNX Runtime when installed and no gradient is needed, else torch channels-last),
            ``torch`` or ``onnx`` (error if ONNX Runtime is missing).

    Raises:
        ValueError: Unknown backbone, layer or runtime, or a weights file that does not fit.
        FileNotFoundError: Missing weights (the message says what to install or pass).
    """

    mean: Tensor  # (1, 3, 1, 1) buffers, registered in __init__
    std: Tensor

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[str] | None = None,
        weights: str | Path | None = None,
        pretrained: bool = True,
        runtime: str = "auto",
    ) -> None:
        super().__init__()
        if runtime not in _RUNTIMES:
            msg = f"runtime must be one of {_RUNTIMES}, got {runtime!r}"
            raise ValueError(msg)
        if runtime == "onnx" and not onnxruntime_available():
            msg = "runtime='onnx' needs ONNX Runtime: pip install 'medanomaly[fast]' (onnxruntime, onnx)"
            raise ValueError(msg)
        use_weights = pretrained and needs_weights(backbone)
        net = load_pretrained(backbone, weights) if use_weights else build_backbone(backbone)
        layers = net.default_layers if layers is None else layers
        net.check_layers(layers)
        self.backbone_name, self.layers, self.weights, self.runtime = backbone, tuple(layers), weights, runtime
        self.pretrained = use_weights
        self.backbone = net.eval().requires_grad_(False)
        self.backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it
        self.register_buffer("mean", torch.tensor(net.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(net.std).view(1, 3, 1, 1), persistent=False)
        self.register_state_dict_post_hook(_drop_backbone_state)
        self.register_load_state_dict_pre_hook(_fill_backbone_state)
        self._runners: dict[tuple[int, int, int], OnnxRunner] = {}
        self._fingerprint: str | None = None

    @property
    def cpu_runtime(self) -> str:
        """What CPU inference runs on here: ``onnx`` or ``torch`` (``auto`` resolved on this machine)."""
        return "onnx" if self.runtime == "onnx" or (self.runtime == "auto" and onnxruntime_available()) else "torch"

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned layer, in ``layers`` order."""
        return [self.backbone.channels[layer] for layer in self.layers]

    @property
    def strides(self) -> list[int]:
        """Nominal stride of each returned layer (map size = ceil(input size / stride))."""
        return [self.backbone.strides[layer] for layer in self.layers]

    @property
    def weights_id(self) -> str:
        """``<backbone>:<sha256 prefix of its weights>``: detectors save it to notice a changed weights file."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.backbone)
        return f"{self.backbone_name}:{self._fingerprint}"

    def train(self, mode: bool = True) -> Self:
        """Set the mode of this module; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps of ``images``.

        Args:
            images: (N, C, H, W) float in [0, 1], C = 1 (replicated to 3) or 3.

        Returns:
            One (N, C_i, ceil(H / s_i), ceil(W / s_i)) float32 tensor per layer, in ``layers`` order.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            msg = f"feature extractor: expected images (N, 1 or 3, H, W), got {tuple(images.shape)}"
            raise ValueError(msg)
        x = images.to(self.mean.dtype).expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.to(self.mean.dtype)
        if self._use_onnx(x):
            channels, height, width = (int(size) for size in x.shape[1:])
            runner = self._runner((channels, height, width))
            parts = [runner(x[start : start + _ONNX_CHUNK]) for start in range(0, len(x), _ONNX_CHUNK)]
            return [torch.cat(layer) if len(parts) > 1 else layer[0] for layer in zip(*parts, strict=True)]
        x = (x - self.mean) / self.std
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return [feature.contiguous() for feature in self.backbone.forward_features(x, self.layers)]

    def _use_onnx(self, x: Tensor) -> bool:
        if self.runtime == "torch" or x.device.type != "cpu" or x.dtype != torch.float32:
            return False
        if torch.is_grad_enabled():  # a gradient may be wanted: stay in torch
            return False
        return self.runtime == "onnx" or onnxruntime_available()

    def _runner(self, input_shape: tuple[int, int, int]) -> OnnxRunner:
        if input_shape not in self._runners:
            key = self.weights_id.replace(":", "-")
            self._runners[input_shape] = build_runner(self.backbone, self.layers, self.mean, self.std, input_shape, key)
        return self._runners[input_shape]

    def extra_repr(self) -> str:  # noqa: D102
        return f"backbone={self.backbone_name!r}, layers={self.layers}, runtime={self.runtime!r}"


def _drop_backbone_state(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [key for key in state_dict if key.startswith(prefix + "backbone.")]:
        del state_dict[key]


def _fill_backbone_state(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for key, value in module.get_submodule("backbone").state_dict().items():
        state_dict.setdefault(f"{prefix}backbone.{key}", value)

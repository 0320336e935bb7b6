"""ResNet-18 and Wide-ResNet-50-2 with torchvision's parameter names, so torchvision state dicts load strictly.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, https://arxiv.org/abs/1512.03385;
Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016, https://arxiv.org/abs/1605.07146 (torchvision's
``wide_resnet50_2``: bottleneck width doubled). Stride sits on the 3x3 convolution of a bottleneck (torchvision's
"ResNet v1.5"). Only the architecture is here: the weights come from a local file the user gives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from medanomaly.features.backbone import Backbone


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, width_factor: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, planes, H / stride, W / stride)."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4) with a skip connection (ResNet-50 family)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, width_factor: int = 1) -> None:
        super().__init__()
        width = planes * width_factor
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _downsample(in_channels, planes * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, 4 planes, H / stride, W / stride)."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    return nn.Sequential(projection, nn.BatchNorm2d(out_channels))


class ResNet(Backbone):
    """A torchvision-layout ResNet; layers ``stem`` (stride 4), ``layer1`` (4) ... ``layer4`` (32).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        repeats: Blocks per stage.
        width_factor: Bottleneck width multiplier (2 for Wide-ResNet-50-2).
        num_classes: Classifier outputs.
    """

    default_layers = ("layer2", "layer3")

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        repeats: tuple[int, ...],
        width_factor: int = 1,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        self.channels, self.strides = {"stem": 64}, {"stem": 4}
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), repeats, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = []
            for position in range(count):
                blocks.append(block(in_channels, planes, stride if position == 0 else 1, width_factor))
                in_channels = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            self.channels[f"layer{index + 1}"] = in_channels
            self.strides[f"layer{index + 1}"] = 4 * 2**index
        self.fc = nn.Linear(in_channels, num_classes)

    def stages(self) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """``stem`` (conv, bn, relu, max-pool) then ``layer1`` ... ``layer4``."""
        stem = ("stem", lambda x: self.maxpool(torch.relu(self.bn1(self.conv1(x)))))
        return [stem, *[(f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, 5)]]

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised images -> (N, num_classes) logits."""
        (features,) = self.forward_features(x, ["layer4"])
        return self.fc(features.mean(dim=(2, 3)))


def resnet18() -> ResNet:
    """ResNet-18 (torchvision ``resnet18`` layout; layer2 128 ch, layer3 256 ch)."""
    return ResNet(BasicBlock, (2, 2, 2, 2))


def wide_resnet50_2() -> ResNet:
    """Wide-ResNet-50-2 (torchvision ``wide_resnet50_2`` layout; layer2 512 ch, layer3 1024 ch)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), width_factor=2)

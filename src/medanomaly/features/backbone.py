"""The small interface every feature backbone implements: named stages applied in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn


class Backbone(nn.Module):
    """A CNN seen as a chain of named stages, each one's output a feature layer.

    Subclasses set ``channels`` and ``strides`` (dicts keyed by layer name), the class attributes ``default_layers``,
    ``mean`` and ``std`` (the per-channel input normalisation its weights expect, for inputs in [0, 1]), and implement
    :meth:`stages`.
    """

    default_layers: ClassVar[tuple[str, ...]] = ()
    mean: ClassVar[tuple[float, float, float]] = (0.485, 0.456, 0.406)
    std: ClassVar[tuple[float, float, float]] = (0.229, 0.224, 0.225)
    channels: dict[str, int]
    strides: dict[str, int]

    def stages(self) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """``(layer name, callable)`` pairs; applying them in order runs the network up to its last feature layer."""
        raise NotImplementedError

    @property
    def layer_names(self) -> list[str]:
        """Every feature layer, shallow to deep."""
        return [name for name, _ in self.stages()]

    def check_layers(self, layers: Sequence[str]) -> None:
        """Raise ValueError naming the valid layers if any of ``layers`` is unknown or the list is empty."""
        names = self.layer_names
        unknown = [layer for layer in layers if layer not in names]
        if unknown or not layers:
            msg = f"{type(self).__name__}: unknown feature layer(s) {unknown or '(none given)'}; choose from {names}"
            raise ValueError(msg)

    def forward_features(self, x: Tensor, layers: Sequence[str]) -> list[Tensor]:
        """Run the stages up to the deepest requested layer.

        Args:
            x: (N, 3, H, W) normalised images.
            layers: Layer names, in any order.

        Returns:
            One (N, C_i, H_i, W_i) tensor per entry of ``layers``, in that order.
        """
        wanted, found = set(layers), {}
        for name, stage in self.stages():
            x = stage(x)
            if name in wanted:
                found[name] = x
                if len(found) == len(wanted):
                    break
        return [found[name] for name in layers]


def _relu_after(conv: nn.Module) -> Callable[[Tensor], Tensor]:
    return lambda x: torch.relu(conv(x))


class TinyBackbone(Backbone):
    """A small randomly initialised CNN for unit tests and smoke runs (no weights needed).

    Layers ``stage1`` (stride 2, 16 ch), ``stage2`` (stride 4, 32 ch), ``stage3`` (stride 8, 48 ch). The weights come
    from a fixed seed, so every instance is identical (a fitted detector rebuilt from its name scores the same).
    """

    default_layers = ("stage2", "stage3")
    _WIDTHS = (16, 32, 48)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        convs, in_channels = [], 3
        for width in self._WIDTHS:
            convs.append(nn.Conv2d(in_channels, width, 3, stride=2, padding=1))
            in_channels = width
        self.convs = nn.ModuleList(convs)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in convs:
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu", generator=generator)
                if conv.bias is not None:
                    conv.bias.zero_()
        self.channels = {f"stage{i + 1}": width for i, width in enumerate(self._WIDTHS)}
        self.strides = {f"stage{i + 1}": 2 ** (i + 1) for i in range(len(self._WIDTHS))}

    def stages(self) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """``stage1`` ... ``stage3``: 3x3 stride-2 convolution + ReLU each."""
        return [(f"stage{i + 1}", _relu_after(conv)) for i, conv in enumerate(self.convs)]

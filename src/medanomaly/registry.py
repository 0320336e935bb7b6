"""Detectors by name: an explicit registry that imports a method's module only when that method is asked for.

Adding a built-in method is one line in :data:`BUILTIN` (name -> module that registers it with
``@register(name)``). Importing this module, listing the names or building the CLI parser imports no detector.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from medanomaly.detectors.base import BaseDetector

D = TypeVar("D", bound="BaseDetector")

#: Built-in methods, in the order they are documented: name -> module whose import registers the class.
BUILTIN: dict[str, str] = {
    "conv_ae": "medanomaly.detectors.conv_ae",
    "anomalypro": "medanomaly.detectors.anomalypro",
    "cnn_classifier": "medanomaly.detectors.classifier",
    "perceptual_ae": "medanomaly.detectors.perceptual_ae",
    "firefly_svm": "medanomaly.detectors.firefly_svm",
    "anatpaste": "medanomaly.detectors.anatpaste",
    "patchcore": "medanomaly.detectors.patchcore",
    "padim": "medanomaly.detectors.padim",
    "region_gaussian": "medanomaly.detectors.region_gaussian",
    "fanogan": "medanomaly.detectors.fanogan",
    "ganomaly": "medanomaly.detectors.ganomaly",
    "alad": "medanomaly.detectors.alad",
    "alocc": "medanomaly.detectors.alocc",
}

_DETECTORS: dict[str, type[BaseDetector]] = {}


def register(name: str) -> Callable[[type[D]], type[D]]:
    """Class decorator that registers a detector under ``name`` (snake_case, unique)."""

    def decorator(cls: type[D]) -> type[D]:
        if name in _DETECTORS:
            msg = f"a detector named {name!r} is already registered"
            raise ValueError(msg)
        cls.name = name
        _DETECTORS[name] = cls
        return cls

    return decorator


def create(name: str, **params: Any) -> BaseDetector:
    """Build a detector by its registered name with keyword hyper-parameters."""
    return detector_class(name)(**params)


def detector_class(name: str) -> type[BaseDetector]:
    """The class registered under ``name`` (importing its module on first use); KeyError naming the known ones."""
    if name not in _DETECTORS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name in _DETECTORS:
        return _DETECTORS[name]
    if name in BUILTIN:
        msg = f"importing {BUILTIN[name]} registered no method named {name!r}"
        raise RuntimeError(msg)
    msg = f"unknown method {name!r}; available: {', '.join(available())}"
    raise KeyError(msg)


def available() -> list[str]:
    """Names of all known detectors (built-in and registered), sorted; imports none of them."""
    return sorted({*BUILTIN, *_DETECTORS})

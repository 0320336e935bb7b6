"""Detectors by name: an explicit registry, filled by ``medanomaly.detectors`` importing each method."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medanomaly.detectors.base import BaseDetector

_DETECTORS: dict[str, Callable[..., BaseDetector]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator that registers a detector under ``name`` (snake_case, unique)."""

    def decorator(cls: type) -> type:
        if name in _DETECTORS:
            msg = f"a detector named {name!r} is already registered"
            raise ValueError(msg)
        cls.name = name
        _DETECTORS[name] = cls
        return cls

    return decorator


def _ensure_loaded() -> None:
    import medanomaly.detectors  # noqa: F401  (registers the built-in methods)


def create(name: str, **params: Any) -> BaseDetector:
    """Build a detector by its registered name with keyword hyper-parameters."""
    return detector_class(name)(**params)


def detector_class(name: str) -> Callable[..., BaseDetector]:
    """The class registered under ``name``; KeyError naming the known methods otherwise."""
    _ensure_loaded()
    try:
        return _DETECTORS[name]
    except KeyError:
        msg = f"unknown method {name!r}; available: {', '.join(available())}"
        raise KeyError(msg) from None


def available() -> list[str]:
    """Names of all registered detectors, sorted."""
    _ensure_loaded()
    return sorted(_DETECTORS)

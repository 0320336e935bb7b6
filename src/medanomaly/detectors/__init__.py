"""Every built-in detector; importing this package registers them by name."""

from medanomaly.detectors import conv_ae  # noqa: F401
from medanomaly.detectors.base import BaseDetector

__all__ = ["BaseDetector"]

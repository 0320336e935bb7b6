"""The built-in detectors, one subpackage each; :mod:`medanomaly.registry` imports one when its name is used."""

from medanomaly.detectors.base import BaseDetector

__all__ = ["BaseDetector"]

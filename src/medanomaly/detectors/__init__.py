"""Every built-in detector; importing this package registers them by name."""
# ruff: noqa: I001  (registration order is the order methods are listed in, not alphabetical)

from medanomaly.detectors import conv_ae  # noqa: F401
from medanomaly.detectors import anomalypro  # noqa: F401
from medanomaly.detectors import classifier  # noqa: F401
from medanomaly.detectors import perceptual_ae  # noqa: F401
from medanomaly.detectors import firefly_svm  # noqa: F401
from medanomaly.detectors import anatpaste  # noqa: F401
from medanomaly.detectors import patchcore  # noqa: F401
from medanomaly.detectors import padim  # noqa: F401
from medanomaly.detectors import fanogan  # noqa: F401
from medanomaly.detectors import ganomaly  # noqa: F401
from medanomaly.detectors import alad  # noqa: F401
from medanomaly.detectors import alocc  # noqa: F401
from medanomaly.detectors.base import BaseDetector

__all__ = ["BaseDetector"]

from medanomaly.detectors.alad.detector import Alad
from medanomaly.detectors.alad.network import AladNet

__all__ = ["Alad", "AladNet"]

from medanomaly.detectors.ganomaly.detector import Ganomaly
from medanomaly.detectors.ganomaly.network import GanomalyNet

__all__ = ["Ganomaly", "GanomalyNet"]

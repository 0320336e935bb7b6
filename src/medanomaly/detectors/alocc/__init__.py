from medanomaly.detectors.alocc.detector import Alocc
from medanomaly.detectors.alocc.network import AloccNet

__all__ = ["Alocc", "AloccNet"]

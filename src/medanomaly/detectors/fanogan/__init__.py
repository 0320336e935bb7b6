from medanomaly.detectors.fanogan.detector import Fanogan
from medanomaly.detectors.fanogan.network import FanoganNet

__all__ = ["Fanogan", "FanoganNet"]

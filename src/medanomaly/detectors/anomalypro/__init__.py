from medanomaly.detectors.anomalypro.critic import PatchCriticNet
from medanomaly.detectors.anomalypro.detector import AnomalyPro
from medanomaly.detectors.anomalypro.generator import MaskGeneratorNet

__all__ = ["AnomalyPro", "MaskGeneratorNet", "PatchCriticNet"]

from medanomaly.detectors.classifier.detector import CnnClassifier
from medanomaly.detectors.classifier.gradcam import grad_cam
from medanomaly.detectors.classifier.network import BackboneClassifierNet, ClassifierNet

__all__ = ["BackboneClassifierNet", "ClassifierNet", "CnnClassifier", "grad_cam"]

from medanomaly.detectors.firefly_svm.detector import FireflySvm, SvmNet
from medanomaly.detectors.firefly_svm.features import TextureFeatures
from medanomaly.detectors.firefly_svm.firefly import SearchResult, firefly_search

__all__ = ["FireflySvm", "SearchResult", "SvmNet", "TextureFeatures", "firefly_search"]

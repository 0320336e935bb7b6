"""Pretrained backbone feature extraction shared by PatchCore, PaDiM and perceptual losses (weights from local files).

>>> import torch
>>> extractor = FeatureExtractor("tiny")
>>> [tuple(f.shape) for f in extractor(torch.rand(2, 1, 32, 32))]
[(2, 32, 8, 8), (2, 48, 4, 4)]
"""

from medanomaly.features.backbones import available_backbones, load_backbone_weights
from medanomaly.features.extractor import FeatureExtractor

__all__ = ["FeatureExtractor", "available_backbones", "load_backbone_weights"]

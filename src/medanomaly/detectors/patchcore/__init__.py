"""PatchCore (Roth et al., CVPR 2022): coreset memory bank of pretrained patch features."""

from medanomaly.detectors.patchcore.coreset import CoresetResult, k_center_greedy, random_projection
from medanomaly.detectors.patchcore.detector import PatchCore
from medanomaly.detectors.patchcore.memory_bank import MemoryBank, nearest

__all__ = ["CoresetResult", "MemoryBank", "PatchCore", "k_center_greedy", "nearest", "random_projection"]

"""PaDiM (Defard et al., ICPR 2021): per-position Gaussians of pretrained patch embeddings."""

from medanomaly.detectors.padim.detector import DEFAULT_LAYERS, Padim
from medanomaly.detectors.padim.gaussian import GaussianAccumulator, GaussianModel

__all__ = ["DEFAULT_LAYERS", "GaussianAccumulator", "GaussianModel", "Padim"]

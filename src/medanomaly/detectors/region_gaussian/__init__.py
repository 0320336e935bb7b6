"""Region Gaussians: Gaussians of region-pooled pretrained features (after Rippel et al., ICPR 2020)."""

from medanomaly.detectors.region_gaussian.augment import acquisition_jitter
from medanomaly.detectors.region_gaussian.detector import DEFAULT_REGIONS, RegionGaussian

__all__ = ["DEFAULT_REGIONS", "RegionGaussian", "acquisition_jitter"]

from medanomaly.detectors.perceptual_ae.detector import PerceptualAutoencoder
from medanomaly.detectors.perceptual_ae.loss import PerceptualDistance
from medanomaly.detectors.perceptual_ae.network import ProgressiveAutoencoderNet, progress_at, progress_at_phase
from medanomaly.detectors.perceptual_ae.tuning import TuningResult, tune_perceptual_ae

__all__ = [
    "PerceptualAutoencoder",
    "PerceptualDistance",
    "ProgressiveAutoencoderNet",
    "TuningResult",
    "progress_at",
    "progress_at_phase",
    "tune_perceptual_ae",
]

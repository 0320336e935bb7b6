from medanomaly.detectors.anatpaste.detector import AnatPaste
from medanomaly.detectors.anatpaste.network import AnatPasteNet, GaussianDensity
from medanomaly.detectors.anatpaste.organ_mask import (
    available_organ_masks,
    body_mask,
    get_organ_mask,
    lung_mask,
    organ_masks,
    register_organ_mask,
)
from medanomaly.detectors.anatpaste.paste import PasteConfig, paste_patches

__all__ = [
    "AnatPaste",
    "AnatPasteNet",
    "GaussianDensity",
    "PasteConfig",
    "available_organ_masks",
    "body_mask",
    "get_organ_mask",
    "lung_mask",
    "organ_masks",
    "paste_patches",
    "register_organ_mask",
]

"""AnatPaste's organ masks: the label-free masks of :mod:`medanomaly.transforms.foreground`, under their old names."""

from medanomaly.transforms import foreground
from medanomaly.transforms.foreground import MIN_FRACTION, body_mask, full_mask, lung_mask

OrganMask = foreground.MaskFunction
available_organ_masks = foreground.available_masks
get_organ_mask = foreground.get_mask
organ_masks = foreground.masks
register_organ_mask = foreground.register_mask

__all__ = [
    "MIN_FRACTION",
    "OrganMask",
    "available_organ_masks",
    "body_mask",
    "full_mask",
    "get_organ_mask",
    "lung_mask",
    "organ_masks",
    "register_organ_mask",
]

"""Intensity and geometry transforms that turn a read study into model input."""

from medanomaly.transforms.geometry import Geometry, resize_pad
from medanomaly.transforms.intensity import WINDOW_PRESETS, apply_window, equalize, parse_window, percentile_normalize
from medanomaly.transforms.preprocessing import Preprocessing

__all__ = [
    "WINDOW_PRESETS",
    "Geometry",
    "Preprocessing",
    "apply_window",
    "equalize",
    "parse_window",
    "percentile_normalize",
    "resize_pad",
]

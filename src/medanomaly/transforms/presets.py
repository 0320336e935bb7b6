"""Per-modality presets: the intensity window and foreground mask that suit a kind of study.

Chosen from the DICOM header of the training data (Modality, BodyPartExamined) or named on the command line
(``medanomaly train --preset``), and recorded in the model (``info["preset"]``), so that scoring prepares studies the
same way. Files without a header (PNG, JPEG, most NIfTI) get ``generic``: percentile intensities and the ``auto``
mask, which outlines the anatomy only when the image has a dark background.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from medanomaly.errors import InputError
from medanomaly.io import read_study
from medanomaly.transforms.preprocessing import Preprocessing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """What a modality preset sets.

    Attributes:
        name: Preset name.
        normalize: Preprocessing ``normalize`` (``window`` for CT in HU, ``percentile`` otherwise, ``auto``).
        window: CT window preset name (:data:`medanomaly.transforms.WINDOW_PRESETS`) or None.
        foreground: Foreground mask of the scores (:mod:`medanomaly.transforms.foreground`).
    """

    name: str
    normalize: str = "auto"
    window: str | None = None
    foreground: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("generic"),
        Preset("chest_xray", "percentile", None, "auto"),
        Preset("chest_ct", "window", "lung", "outline"),
        Preset("head_ct", "window", "brain", "outline"),
        Preset("abdomen_ct", "window", "abdomen", "outline"),
        Preset("ct", "auto", None, "outline"),
        Preset("brain_mri", "percentile", None, "outline"),
        Preset("mri", "percentile", None, "outline"),
    )
}
_HEAD = ("HEAD", "BRAIN", "SKULL", "NECK")
_CHEST = ("CHEST", "LUNG", "THORAX")
_ABDOMEN = ("ABDOMEN", "PELVIS", "LIVER", "KIDNEY", "ABD")
_RADIOGRAPHY = ("CR", "DX", "DR", "RG")


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError naming the choices otherwise."""
    if name not in PRESETS:
        msg = f"unknown preset {name!r}; available: auto, {', '.join(PRESETS)}"
        raise ValueError(msg)
    return PRESETS[name]


def preset_from_header(meta: dict[str, Any]) -> Preset:
    """The preset of a study from its header facts (``modality``, ``body_part``); ``generic`` when unknown."""
    modality = str(meta.get("modality") or "").upper()
    part = str(meta.get("body_part") or "").upper()
    if modality == "CT":
        for parts, name in ((_HEAD, "head_ct"), (_CHEST, "chest_ct"), (_ABDOMEN, "abdomen_ct")):
            if any(key in part for key in parts):
                return PRESETS[name]
        return PRESETS["ct"]
    if modality == "MR":
        return PRESETS["brain_mri" if any(key in part for key in _HEAD) else "mri"]
    if modality in _RADIOGRAPHY and any(key in part for key in _CHEST):
        return PRESETS["chest_xray"]
    return PRESETS["generic"]


def choose_preset(name: str | None, example: str | Path | None) -> tuple[Preset, str]:
    """The preset to train with and where it came from (``cli``, ``header of <file>``, ``default``).

    Args:
        name: A preset name, or ``auto``/None to read it from the header of ``example`` (a training study).
        example: A training study whose header decides under ``auto``.
    """
    if name and name != "auto":
        return get_preset(name), "cli"
    if example is None:
        return PRESETS["generic"], "default"
    try:
        meta = read_study(example).meta
    except (InputError, ValueError) as error:
        logger.warning("preset: cannot read %s (%s); using generic", example, error)
        return PRESETS["generic"], "default"
    if not meta.get("modality"):
        return PRESETS["generic"], "default (no DICOM header)"
    return preset_from_header(meta), f"header of {example}"


def apply_preset(
    preset: Preset, preprocessing: Preprocessing, params: dict[str, Any], factory: Callable[..., Any]
) -> tuple[Preprocessing, dict[str, Any]]:
    """Fill in what the user left at its default from ``preset``.

    That is the intensity (when ``normalize`` is ``auto`` with no window) and the detector's ``foreground`` (only for
    methods that take one and when not given in ``params``). CT windows apply to Hounsfield units (DICOM/NIfTI CT).
    """
    if preprocessing.normalize == "auto" and preprocessing.window is None:
        preprocessing = replace(preprocessing, normalize=preset.normalize, window=preset.window)
    if "foreground" in inspect.signature(factory).parameters and "foreground" not in params:
        params = {**params, "foreground": preset.foreground}
    return preprocessing, params

"""A model knows its domain: what it learned from, and whether a study to score is like it.

Training records a :class:`Domain` in ``model.json``: modalities and body parts (from DICOM headers, or declared with
``--modality`` / ``--body-part``), photometric interpretations and colour, image size and spacing ranges, raw
intensity statistics, a label-free appearance reference (:mod:`medanomaly.domain_features`) and the anomaly score's
distribution on held-out normals. :func:`check_study` tells the pipeline, before it decides, whether a study is out of
the domain and why ("CT, HEAD; this model was trained on DX/CR CHEST"); an out-of-domain study gets no decision.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.domain_features import AppearanceReference, fit_reference
from medanomaly.types import Study

logger = logging.getLogger(__name__)

RADIOGRAPHY = frozenset({"CR", "DX", "DR", "RG"})  # projection X-ray: one family
_UNINFORMATIVE_MODALITIES = frozenset({"OT", "SC"})
_BODY_ALIASES = {"THORAX": "CHEST", "LUNG": "CHEST", "LUNGS": "CHEST", "BRAIN": "HEAD", "SKULL": "HEAD"}
_COLOUR_PHOTOMETRIC = ("RGB", "YBR", "PALETTE")
_COLOUR_MODES = frozenset({"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
COLOUR_CHROMA = 24 / 255  # a pixel is coloured when its channels differ by more than this share of the range
COLOUR_FRACTION = 0.01  # an image is colour when more than this share of its pixels is coloured
SPACING_FACTOR = 3.0  # pixel spacing beyond [min / 3, max * 3] of training is out of domain
BLANK_STD = 1e-3  # a preprocessed slice with a smaller standard deviation is blank


@dataclass
class DomainCheck:
    """The verdict of :func:`check_study`.

    Attributes:
        known: False for a model trained before domains were recorded (nothing could be checked).
        reasons: Why the study is out of the domain; empty = in the domain.
        details: Measured values (appearance distance and bound, the study's modality, ...).
        ignored: The caller asked to score regardless (research override).
    """

    known: bool
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    ignored: bool = False

    @property
    def in_domain(self) -> bool:
        """True when nothing places the study outside the domain (always True for an unknown domain)."""
        return not self.reasons

    @property
    def reason(self) -> str | None:
        """The reasons as one sentence, or None."""
        return "; ".join(self.reasons) if self.reasons else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "known": self.known,
            "in_domain": self.in_domain,
            "ignored": self.ignored,
            "reasons": list(self.reasons),
            **self.details,
        }


@dataclass
class Domain:
    """What a model was trained on (see the module docstring); ranges are [min, max] over training studies.

    Attributes:
        modalities: DICOM modalities (``DX``, ``CT``, ...), declared or from headers; empty = unknown.
        body_parts: Body parts (``CHEST``, ...), declared or from BodyPartExamined; empty = unknown.
        photometric: Photometric interpretations seen (DICOM) or ``MONOCHROME2`` / ``RGB`` for image files.
        channels: Model input channels (1 grey, 3 colour).
        colour: Whether training images had colour content.
        height: Image height range of the training studies, pixels.
        width: Image width range, pixels.
        slices: Slice count range.
        spacing_mm: Pixel spacing range (row/column, mm), or None when no training study had one.
        intensity: Raw intensity percentiles (``p1``, ``p50``, ``p99``) as [min, max] over studies, file units.
        appearance: The image-statistics reference, or None.
        scores: Anomaly-score quantiles on held-out normals (``q50``, ``q90``, ``q99``, ``max``, ``n``; set at
            calibration), for context: a high score is what an anomaly detector is for, so it never makes a study
            out of domain on its own.
        declared: Modalities/body parts came from ``--modality`` / ``--body-part``.
        n_studies: Training studies the record describes.
    """

    modalities: list[str]
    body_parts: list[str]
    photometric: list[str]
    channels: int
    colour: bool
    height: list[int]
    width: list[int]
    slices: list[int]
    spacing_mm: list[float] | None
    intensity: dict[str, list[float]]
    appearance: AppearanceReference | None = None
    scores: dict[str, float] = field(default_factory=dict)
    declared: bool = False
    n_studies: int = 0

    def describe(self) -> str:
        """Short description such as ``DX/CR CHEST`` (``unknown modality`` when none is known)."""
        parts = ["/".join(self.modalities) or "unknown modality"]
        if self.body_parts:
            parts.append("/".join(self.body_parts))
        return " ".join(parts) + (" (colour)" if self.colour else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for ``model.json``."""
        data = asdict(self)
        data["appearance"] = None if self.appearance is None else self.appearance.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Domain:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["appearance"] = AppearanceReference.from_dict(data["appearance"]) if data.get("appearance") else None
        return cls(**values)


# --- facts of one study (collected while loading training data, and at scoring time) ---------------------------
def study_facts(study: Study) -> dict[str, Any]:
    """What the domain records about one raw study: modality, body part, photometric, colour, sizes, intensity."""
    meta, pixels = study.meta, study.pixels
    spacing = meta.get("spacing")
    step = max(1, int(np.sqrt(pixels[0].size / 65536)))
    slice_step = max(1, len(pixels) // 64)  # at most ~128 slices of ~65k values: a long series is not copied whole
    sample = np.asarray(pixels[::slice_step, ::step, ::step], dtype=np.float32)
    p1, p50, p99 = (float(v) for v in np.nanpercentile(sample, [1, 50, 99]))
    return {
        "modality": _modality(meta.get("modality")),
        "body_part": _body_part(meta.get("body_part")),
        "photometric": _photometric(study),
        "colour": is_colour(study),
        "height": int(pixels.shape[1]),
        "width": int(pixels.shape[2]),
        "slices": int(pixels.shape[0]),
        "spacing_mm": [float(spacing[0]), float(spacing[1])] if spacing else None,
        "intensity": {"p1": p1, "p50": p50, "p99": p99},
        "constant": bool(sample.max() == sample.min()),
    }


def is_colour(study: Study) -> bool:
    """True when the study has colour content (not merely a colour file format holding a grey image)."""
    if study.pixels.ndim == 4:
        return _coloured_fraction(study.pixels[0]) > COLOUR_FRACTION
    if str(study.meta.get("photometric", "")).startswith(_COLOUR_PHOTOMETRIC):
        return True  # a DICOM colour image read as grey: its header says colour
    if study.meta.get("mode") in _COLOUR_MODES and study.meta.get("path"):
        return _file_colour(Path(study.meta["path"]))  # an image file read as grey: look at its colours again
    return False


def _coloured_fraction(rgb: np.ndarray) -> float:
    rgb = np.asarray(rgb, dtype=np.float32)[..., :3]
    span = float(rgb.max() - rgb.min()) or 1.0
    chroma = (rgb.max(axis=-1) - rgb.min(axis=-1)) / span
    return float((chroma > COLOUR_CHROMA).mean())


def _file_colour(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (256, 256))
            rgb = img.convert("RGB")
            rgb.thumbnail((256, 256))
            return _coloured_fraction(np.asarray(rgb)) > COLOUR_FRACTION
    except (OSError, ValueError) as error:
        logger.warning("%s: cannot look at its colours (%s)", path, error)
        return False


def _photometric(study: Study) -> str:
    if study.meta.get("kind") in ("dicom", "dicom_series") and study.meta.get("photometric"):
        return str(study.meta["photometric"])
    return "RGB" if study.pixels.ndim == 4 or study.meta.get("mode") in _COLOUR_MODES else "MONOCHROME2"


def _modality(value: Any) -> str | None:
    text = str(value or "").strip().upper()
    return text if text and text not in _UNINFORMATIVE_MODALITIES else None


def _body_part(value: Any) -> str | None:
    text = str(value or "").strip().upper().replace(" ", "_")
    return _BODY_ALIASES.get(text, text) or None


def parse_declared(value: str | None, normalise: Any = _modality) -> list[str]:
    """``"DX,CR"`` -> ``["DX", "CR"]`` (normalised); None -> []."""
    return [item for item in (normalise(part) for part in (value or "").split(",")) if item]


# --- training ----------------------------------------------------------------------------------------------------
def build_domain(
    facts: list[dict[str, Any]],
    train_images: np.ndarray,
    held_out_images: np.ndarray,
    *,
    channels: int,
    modality: str | None = None,
    body_part: str | None = None,
    random_state: int = 0,
) -> Domain:
    """Summarise the training studies into a :class:`Domain`.

    Args:
        facts: :func:`study_facts` of every training and held-out normal study.
        train_images: (N, C, R, R) preprocessed training normal slices.
        held_out_images: (M, C, R, R) preprocessed held-out normal slices (may be empty).
        channels: Model input channels.
        modality: Declared modalities (``"DX,CR"``), overriding the headers.
        body_part: Declared body parts (``"CHEST"``), likewise.
        random_state: Seed of the appearance reference's subsample.
    """
    modalities = parse_declared(modality) or _distinct(f["modality"] for f in facts)
    body_parts = parse_declared(body_part, _body_part) or _distinct(f["body_part"] for f in facts)
    spacings = [f["spacing_mm"] for f in facts if f.get("spacing_mm")]
    return Domain(
        modalities=modalities,
        body_parts=body_parts,
        photometric=_distinct(f["photometric"] for f in facts),
        channels=int(channels),
        colour=any(f["colour"] for f in facts),
        height=_range(f["height"] for f in facts),
        width=_range(f["width"] for f in facts),
        slices=_range(f["slices"] for f in facts),
        spacing_mm=[min(min(s) for s in spacings), max(max(s) for s in spacings)] if spacings else None,
        intensity={key: _range(f["intensity"][key] for f in facts) for key in ("p1", "p50", "p99")},
        appearance=fit_reference(train_images, held_out_images, random_state) if len(train_images) > 1 else None,
        declared=bool(parse_declared(modality) or parse_declared(body_part, _body_part)),
        n_studies=len(facts),
    )


def _distinct(values: Any) -> list[str]:
    return sorted({v for v in values if v})


def _range(values: Any) -> list[Any]:
    items = list(values)
    return [min(items), max(items)] if items else []


def score_quantiles(scores: np.ndarray) -> dict[str, float]:
    """Quantiles of held-out normals' anomaly scores (``q50``, ``q90``, ``q99``, ``max``, ``n``) for the record."""
    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {}
    q50, q90, q99 = (float(v) for v in np.quantile(values, [0.5, 0.9, 0.99]))
    return {"q50": q50, "q90": q90, "q99": q99, "max": float(values.max()), "n": int(len(values))}


# --- scoring -----------------------------------------------------------------------------------------------------
def check_study(domain: Domain | None, study: Study, images: np.ndarray) -> DomainCheck:
    """Whether ``study`` (raw) and its preprocessed slices ``images`` (S, C, R, R) lie in the model's domain."""
    if domain is None:
        return DomainCheck(known=False)
    facts = study_facts(study)
    check = DomainCheck(known=True, details={"study": _describe_study(facts), "trained_on": domain.describe()})
    if facts["constant"] or bool((images.reshape(len(images), -1).std(axis=1) < BLANK_STD).all()):
        check.reasons.append("blank or constant image")
        return check
    if facts["colour"] and not domain.colour:
        check.reasons.append("colour image; this model was trained on greyscale images")
    check.reasons += _header_reasons(domain, facts)
    if domain.appearance is not None:
        distance = float(np.median(domain.appearance.distances(images)))
        check.details["appearance"] = {"distance": round(distance, 3), "bound": round(domain.appearance.bound, 3)}
        if distance > domain.appearance.bound:
            said = any("trained on" in reason for reason in check.reasons)
            check.reasons.append(
                f"image unlike the training images (appearance distance {distance:.1f} > bound "
                f"{domain.appearance.bound:.1f})" + ("" if said else f"; this model was trained on {domain.describe()}")
            )
    return check


def _header_reasons(domain: Domain, facts: dict[str, Any]) -> list[str]:
    modality, body_part = facts["modality"], facts["body_part"]
    wrong_modality = bool(modality and domain.modalities and not _same_modality(modality, domain.modalities))
    wrong_part = bool(body_part and domain.body_parts and body_part not in domain.body_parts)
    reasons = []
    if wrong_modality or wrong_part:
        seen = ", ".join(v for v in (modality, body_part) if v)
        reasons.append(f"{seen}; this model was trained on {domain.describe()}")
    spacing = facts["spacing_mm"]
    if spacing and domain.spacing_mm:
        low, high = domain.spacing_mm
        if min(spacing) < low / SPACING_FACTOR or max(spacing) > high * SPACING_FACTOR:
            reasons.append(f"pixel spacing {min(spacing):.3g} mm; this model was trained on {low:.3g}-{high:.3g} mm")
    return reasons


def _same_modality(modality: str, trained: list[str]) -> bool:
    return modality in trained or (modality in RADIOGRAPHY and bool(RADIOGRAPHY & set(trained)))


def _describe_study(facts: dict[str, Any]) -> dict[str, Any]:
    keys = ("modality", "body_part", "photometric", "colour", "height", "width", "slices", "spacing_mm")
    return {key: facts[key] for key in keys}

"""What every result object shares: the source images, the algorithm's identity and deterministic UIDs.

Result UIDs are derived from the source instances (every SOP Instance UID of the scored unit), the model (name,
method, version, creation time) and the kind of result, so scoring and sending the same images twice produces the
same SOP Instance UIDs and the PACS keeps one copy, while another image, a grown series or a new model version
gets new ones (pydicom ``generate_uid`` with ``entropy_srcs``: a SHA-512 hash under the configured UID root).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly import __version__

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from medanomaly.mapping import Finding
    from medanomaly.pipeline import StudyResult

MANUFACTURER = "medanomaly"
#: Patient and study attributes every result object carries (Type 2: present, possibly empty).
TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
#: Study UID and the Type 2 attributes: what any result object copies from its source.
PATIENT_STUDY_KEYS = ("StudyInstanceUID", *TYPE2_KEYWORDS)
#: Patient/study attributes copied from the source when it has them (Type 3, but a PACS sorts by them).
TYPE3_KEYWORDS = ("IssuerOfPatientID", "StudyDescription")
#: Every result declares UTF-8, so any name the source holds (Müller^Anna, 山田^太郎) survives.
CHARACTER_SET = "ISO_IR 192"
#: Modalities whose series are volumes (scored as one unit); other series are scored image by image.
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
#: What each result series holds (its description also names the model and version).
KIND_TITLES = {"sr": "anomaly report", "seg": "anomaly map", "sc": "heat-map", "pdf": "report", "ko": "superseded by"}
#: Series numbers of the result series (high, to stay clear of the modality's own numbering).
SERIES_NUMBERS = {"sr": 9901, "seg": 9902, "sc": 9903, "pdf": 9904, "ko": 9905}


@dataclass(frozen=True)
class ResultContext:
    """Source images and model identity of one scored series.

    Attributes:
        sources: Source image headers (pixel data not needed), one per slice in the order of the result's
            slices; for a multi-frame source, the single dataset.
        method: Registered detector name.
        model_version: Model version (incremented by recalibration).
        model_created: Creation time of the model (tells two models of the same version apart).
        model_name: The model's name (its folder): results of one name supersede each other, other names coexist.
        uid_root: Organisation UID root for the result UIDs (None: pydicom's).
    """

    sources: tuple[Dataset, ...]
    method: str
    model_version: int
    model_created: str = ""
    model_name: str = ""
    uid_root: str | None = None

    @classmethod
    def from_result(
        cls, result: StudyResult, sources: list[Dataset], created: str = "", uid_root: str | None = None
    ) -> ResultContext:
        """Context of a pipeline result and its source headers (copies, with missing Type 2 attributes added)."""
        method = str(result.model.get("method", "unknown"))
        return cls(
            tuple(with_type2_attributes(ds) for ds in sources),
            method,
            int(result.model.get("version", 0)),
            created,
            model_name(result.model.get("path"), method),
            uid_root,
        )

    @property
    def first(self) -> Dataset:
        """The first source image (patient and study attributes are taken from it)."""
        return self.sources[0]

    @property
    def multiframe(self) -> bool:
        """True when one multi-frame dataset holds all slices."""
        return len(self.sources) == 1 and int(self.first.get("NumberOfFrames") or 1) > 1

    @property
    def algorithm_name(self) -> str:
        """Human name of the algorithm, e.g. ``medanomaly conv_ae``."""
        return f"{MANUFACTURER} {self.method}"

    @property
    def algorithm_version(self) -> str:
        """Package and model version, e.g. ``0.1.0 model v2``."""
        return f"{__version__} model v{self.model_version}"

    @property
    def unit_key(self) -> str:
        """What was scored: the source series for a volume, ``series/instance`` for one projection image."""
        series = str(self.first.SeriesInstanceUID)
        volume = self.first.get("Modality") in VOLUME_MODALITIES or len(self.sources) > 1 or self.multiframe
        return series if volume else f"{series}/{self.first.SOPInstanceUID}"

    @property
    def model_label(self) -> str:
        """Model name and version as result series descriptions show it, e.g. ``conv_ae v2``."""
        return f"{self.model_name or self.method} v{self.model_version}"

    def uid(self, *parts: Any) -> str:
        """Deterministic UID from the source instances, the model identity and ``parts``."""
        from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

        instances = hashlib.sha256("\\".join(sorted(str(ds.SOPInstanceUID) for ds in self.sources)).encode())
        entropy = [instances.hexdigest(), self.model_name, self.method, str(self.model_version), self.model_created]
        root = self.uid_root.rstrip(".") + "." if self.uid_root else PYDICOM_ROOT_UID
        return str(generate_uid(prefix=root, entropy_srcs=entropy + [str(part) for part in parts]))

    def series_description(self, kind: str) -> str:
        """E.g. ``medanomaly anomaly report conv_ae v2 (decision support)`` (at most 64 characters)."""
        return f"{MANUFACTURER} {KIND_TITLES[kind]} {self.model_label} (decision support)"[:64]

    def series_uid(self, kind: str) -> str:
        """Series Instance UID of the result series of ``kind`` (``sr``, ``seg``, ``sc``, ``pdf``)."""
        return self.uid(kind, "series")

    def instance_uid(self, kind: str, index: int = 0) -> str:
        """SOP Instance UID of the ``index``-th instance of the result series of ``kind``."""
        return self.uid(kind, "instance", index)

    def slice_source(self, slice_index: int) -> tuple[Dataset, int | None]:
        """Source dataset of a slice and its 1-based frame number (None for single-frame images)."""
        if self.multiframe:
            return self.first, slice_index + 1
        return self.sources[slice_index], None

    def common(self, kind: str, index: int = 0) -> dict[str, Any]:
        """Keyword arguments every highdicom SOP class constructor takes for a result of ``kind``."""
        return {
            "series_instance_uid": self.series_uid(kind),
            "series_number": SERIES_NUMBERS[kind],
            "sop_instance_uid": self.instance_uid(kind, index),
            "instance_number": index + 1,
            "manufacturer": MANUFACTURER,
            "series_description": self.series_description(kind),
        }


def out_of_domain(result: StudyResult) -> str | None:
    """The reason a result lies outside its model's domain, or None (in the domain, or not checked)."""
    if getattr(result, "status", None) != "out_of_domain":
        return None
    return str(getattr(result, "domain_reason", None) or "outside the model's domain")


def model_name(path: Any, method: str) -> str:
    """A model's name: its folder (``runs/chest``), or the folder above ``versions/v<N>``; else the method."""
    if not path:
        return method
    folder = Path(str(path))
    if folder.parent.name == "versions":
        folder = folder.parent.parent
    return folder.name or method


def with_type2_attributes(source: Dataset) -> Dataset:
    """A copy of a source header with the patient/study attributes results must carry, empty when absent.

    De-identified files often drop Type 2 attributes such as PatientBirthDate; highdicom copies them from the
    source and fails without them.
    """
    copied = copy.deepcopy(source)
    for keyword in TYPE2_KEYWORDS:
        if keyword not in copied:
            setattr(copied, keyword, "")
    return copied


def copy_study_attributes(source: Dataset, target: Dataset) -> None:
    """Copy IssuerOfPatientID / StudyDescription (when the source has them) and declare UTF-8 on ``target``."""
    for keyword in TYPE3_KEYWORDS:
        if source.get(keyword):
            setattr(target, keyword, source.get(keyword))
    target.SpecificCharacterSet = CHARACTER_SET


def to_source_box(result: StudyResult, finding: Finding) -> tuple[float, float, float, float]:
    """A finding's bounding box from the model grid to source pixel coordinates.

    Returns:
        (row0, col0, row1, col1) in source-image pixels (continuous, half-open box edges).
    """
    geometry = result.geometry
    top, left = geometry.offset
    scale_r = geometry.original_shape[0] / geometry.resized_shape[0]
    scale_c = geometry.original_shape[1] / geometry.resized_shape[1]
    row0, col0, row1, col1 = finding.bbox
    box = ((row0 - top) * scale_r, (col0 - left) * scale_c, (row1 - top) * scale_r, (col1 - left) * scale_c)
    height, width = geometry.original_shape
    return tuple(float(np.clip(v, 0, limit)) for v, limit in zip(box, (height, width, height, width), strict=True))


def original_maps(result: StudyResult, indices: Iterable[int] | None = None) -> np.ndarray:
    """The filtered anomaly maps of some (default: all) slices resampled onto the source slices' pixel grid.

    One slice at a time, so memory stays at the output's size (resampling a whole volume at once works in float64:
    2 GB for 1000 slices of 512 x 512).

    Returns:
        (len(indices), H, W) float32, same values as the model-space maps (bilinear).

    Raises:
        ValueError: The method produces no anomaly map.
    """
    if result.anomaly_maps is None:
        msg = f"{result.model.get('method')}: the method produces no anomaly map; no SEG or heat-map can be made"
        raise ValueError(msg)
    maps = result.anomaly_maps
    wanted = range(len(maps)) if indices is None else list(indices)
    resampled = np.empty((len(wanted), *result.geometry.original_shape), dtype=np.float32)
    for row, index in enumerate(wanted):
        resampled[row] = result.geometry.to_original(np.asarray(maps[index : index + 1], dtype=np.float32), order=1)[0]
    return resampled

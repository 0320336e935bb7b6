"""Results for viewers that show pictures only: a Secondary Capture of the heat-map overlay, an Encapsulated PDF.

The overlay is drawn at the source slice's own size (model input and map resampled back with
``Geometry.to_original``), so it carries the source's pixel spacing and can sit next to the original images.
Secondary Capture: PS3.3 A.8.1; Encapsulated PDF: PS3.3 A.45.1 (https://dicom.nema.org/medical/dicom/current/).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from medanomaly import __version__
from medanomaly.mapping import overlay
from medanomaly.pacs.identity import MANUFACTURER, PATIENT_STUDY_KEYS, SERIES_NUMBERS, ResultContext, original_maps

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from medanomaly.pipeline import StudyResult

_AXES = (("L", "R"), ("P", "A"), ("H", "F"))  # patient +x, +y, +z letters (DICOM LPS) and their opposites


def patient_orientation(source: Dataset) -> tuple[str, str]:
    """Row and column directions (e.g. ``("L", "P")``) from PatientOrientation or ImageOrientationPatient.

    Falls back to ``("L", "F")`` (frontal projection) when the source says nothing.
    """
    given = source.get("PatientOrientation")
    if given and len(given) == 2 and all(given):
        return str(given[0]), str(given[1])
    cosines = source.get("ImageOrientationPatient")
    if not cosines or len(cosines) != 6:
        return "L", "F"
    letters = []
    for vector in (np.asarray(cosines[:3], float), np.asarray(cosines[3:], float)):
        axis = int(np.argmax(np.abs(vector)))
        letters.append(_AXES[axis][0] if vector[axis] > 0 else _AXES[axis][1])
    return letters[0], letters[1]


def overlay_slices(
    result: StudyResult, threshold: float | None, max_slices: int = 3, maps: np.ndarray | None = None
) -> list[tuple[int, np.ndarray]]:
    """Heat-map overlays of the most anomalous slices, on the source grid.

    Args:
        result: The pipeline's result.
        threshold: Map value below which pixels stay untinted, or None (tint everything).
        max_slices: How many slices (most anomalous first).
        maps: (S, H, W) maps on the source grid, when already computed.

    Returns:
        [(slice index, (H, W, 3) uint8 RGB)], most anomalous slice first.
    """
    order = [int(i) for i in np.argsort(-np.asarray(result.slice_scores))[:max_slices]]
    chosen = original_maps(result, order) if maps is None else maps[order]
    pictures = []
    for index, heat in zip(order, chosen, strict=True):
        image = result.geometry.to_original(result.images[index]).transpose(1, 2, 0)
        image = image[..., 0] if image.shape[-1] == 1 else image
        high = float(heat.max())
        vmin = threshold if threshold is not None and threshold < high else None
        pictures.append((index, overlay(image, heat, vmin=vmin, vmax=high, mask_below=vmin)))
    return pictures


def build_captures(
    result: StudyResult,
    context: ResultContext,
    threshold: float | None,
    max_slices: int = 3,
    maps: np.ndarray | None = None,
) -> list[Dataset]:
    """Secondary Capture images of the overlays (highdicom ``SCImage``), one per top slice.

    Args:
        result: The pipeline's result.
        context: Source image headers in slice order and model identity.
        threshold: Map value below which pixels stay untinted (the model's ``region_threshold``), or None.
        max_slices: How many slices of a volume to capture (most anomalous first).
        maps: (S, H, W) maps on the source grid, when already computed.
    """
    pictures = overlay_slices(result, threshold, max_slices, maps)
    return [_capture(result, context, index, rank, rgb) for rank, (index, rgb) in enumerate(pictures)]


def _capture(result: StudyResult, context: ResultContext, index: int, rank: int, rgb: np.ndarray) -> Dataset:
    """One SCImage of slice ``index`` (the ``rank``-th most anomalous), referencing its source image."""
    import highdicom as hd
    from pydicom.dataset import Dataset as PydicomDataset
    from pydicom.uid import ExplicitVRLittleEndian

    source, frame = context.slice_source(index)
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        **context.common("sc", rank),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        patient_orientation=patient_orientation(source),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    reference = PydicomDataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None:
        reference.ReferencedFrameNumber = frame
    capture.SourceImageSequence = [reference]
    capture.BurnedInAnnotation = "NO"
    capture.Laterality = source.get("Laterality", "")  # Type 2C (paired body parts): empty when unknown
    capture.ImageComments = (
        f"anomaly heat-map, slice {index + 1}/{len(result.slice_scores)}, score "
        f"{result.score:.4g} (threshold {result.threshold:.4g}); decision support only"
    )
    return capture


def build_pdf(pdf: bytes, context: ResultContext, title: str = "medanomaly report") -> Dataset:
    """An Encapsulated PDF document in the source study, in a new series.

    Args:
        pdf: The PDF file's bytes (must start with ``%PDF``).
        context: Source headers (patient and study attributes are copied from the first) and model identity.
        title: DocumentTitle.

    Raises:
        ValueError: ``pdf`` is not a PDF.
    """
    from pydicom.dataset import Dataset as PydicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

    if not pdf.startswith(b"%PDF"):
        msg = "the report is not a PDF (it does not start with %PDF); no Encapsulated PDF written"
        raise ValueError(msg)
    ds = PydicomDataset()
    for keyword in PATIENT_STUDY_KEYS:  # Type 1/2 patient and study attributes, empty when the source lacks them
        value = context.first.get(keyword)
        setattr(ds, keyword, "" if value is None else value)
    now = dt.datetime.now()
    common = context.common("pdf")
    ds.SOPClassUID, ds.SOPInstanceUID = EncapsulatedPDFStorage, common["sop_instance_uid"]
    ds.SeriesInstanceUID, ds.SeriesNumber = common["series_instance_uid"], SERIES_NUMBERS["pdf"]
    ds.InstanceNumber, ds.Modality, ds.ConversionType = 1, "DOC", "SYN"
    ds.Manufacturer, ds.SoftwareVersions = MANUFACTURER, __version__
    ds.SeriesDescription, ds.DocumentTitle = common["series_description"], title
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation, ds.ConceptNameCodeSequence = "YES", []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds

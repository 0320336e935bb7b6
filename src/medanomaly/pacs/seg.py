"""The thresholded anomaly map as a DICOM Segmentation (highdicom ``Segmentation``, BINARY, one segment).

The map is resampled from the model grid back onto each source slice (``Geometry.to_original``), thresholded at
the model's ``postprocessing.region_threshold`` (the value that also delimits the findings) and written with one
frame per source slice, each carrying that slice's reference and plane position (for a CT series, its
ImagePositionPatient), so viewers lay it over the images exactly.
DICOM Segmentation IOD: PS3.3 A.51, https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_A.51.html
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from medanomaly import __version__
from medanomaly.pacs.identity import ResultContext, original_maps

if TYPE_CHECKING:
    import highdicom as hd
    from pydicom.dataset import Dataset

    from medanomaly.pipeline import StudyResult

logger = logging.getLogger(__name__)
SEGMENT_LABEL = "anomaly"


def anomaly_mask(result: StudyResult, threshold: float, maps: np.ndarray | None = None) -> np.ndarray:
    """The anomaly map on the source grid, thresholded.

    Args:
        result: The pipeline's result.
        threshold: Map value above which a pixel is anomalous.
        maps: (S, H, W) maps already resampled with :func:`original_maps` (computed when None).

    Returns:
        (S, H, W) bool, True where the resampled map exceeds ``threshold``.
    """
    if maps is not None:
        return maps > float(threshold)
    mask = np.empty((len(result.slice_scores), *result.geometry.original_shape), dtype=bool)
    for index in range(len(mask)):  # slice by slice: no float volume at the source's size
        mask[index] = original_maps(result, [index])[0] > float(threshold)
    return mask


def segment_description(context: ResultContext) -> hd.seg.SegmentDescription:
    """The one segment: anomalous pixels, found automatically by the named algorithm."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=context.algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=context.algorithm_version
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.MorphologicallyAbnormalStructure,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=context.uid("seg", "segment"),
        tracking_id="anomaly map above threshold",
    )


def build_seg(result: StudyResult, context: ResultContext, threshold: float, maps: np.ndarray | None = None) -> Dataset:
    """A BINARY Segmentation of ``map > threshold``, one frame per source slice (empty frames kept).

    Args:
        result: The pipeline's result (maps in model space, geometry back to the source grid).
        context: Source image headers in slice order and model identity.
        threshold: Map value above which a pixel is anomalous (the model's ``region_threshold``).
        maps: (S, H, W) maps on the source grid, when already computed.

    Returns:
        A ``highdicom.seg.Segmentation`` dataset in the source study, in a new series.

    Raises:
        ValueError: No anomaly map, or the map does not match the source images' size.
    """
    import highdicom as hd

    mask = anomaly_mask(result, threshold, maps)
    rows, cols = int(context.first.Rows), int(context.first.Columns)
    if mask.shape[1:] != (rows, cols):
        msg = f"anomaly map {mask.shape[1:]} does not match the source images ({rows}, {cols}); SEG not written"
        raise ValueError(msg)
    logger.debug("SEG: %d of %d frames hold anomalous pixels", int(mask.any(axis=(1, 2)).sum()), len(mask))
    seg = hd.seg.Segmentation(
        source_images=list(context.sources),
        pixel_array=mask,  # bool: no uint8 copy of a long series
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(context)],
        **context.common("seg"),
        manufacturer_model_name=context.method,
        software_versions=__version__,
        device_serial_number=f"model-v{context.model_version}",
        content_label="ANOMALY",
        content_description=f"anomaly map > {threshold:.4g}",
        omit_empty_frames=False,
    )
    if "ImageOrientationPatient" not in context.first and not context.multiframe:
        _as_projection(seg, context.first)
    return seg


def _as_projection(seg: Dataset, source: Dataset) -> None:
    """Fit a SEG of a projection image (DX/CR/MG...: no patient plane) to what dciodvfy and ``segread`` accept.

    It takes the source's PatientOrientation (Type 2C without a plane orientation), and it drops the Pixel
    Measures group, which highdicom writes without the SliceThickness its own reader requires (a radiograph has
    none): the SEG has the source's rows and columns, one frame per source image, so its grid is the source's.
    """
    from medanomaly.pacs.capture import patient_orientation

    seg.PatientOrientation = list(patient_orientation(source))
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PixelMeasuresSequence" in shared:
        del shared.PixelMeasuresSequence

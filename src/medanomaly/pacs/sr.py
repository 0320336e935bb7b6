"""The result as a DICOM Structured Report: TID 1500 Measurement Report (highdicom ``Comprehensive3DSR``).

Content: the algorithm (TID 4019 Algorithm Identification: name and version), one image-level measurement group
(anomaly score, threshold, decision, referencing every source image) and one planar-ROI group per finding (its
bounding box as a closed polyline on the source slice, its maximum/mean anomaly-map value and area).
TID 1500: https://dicom.nema.org/medical/dicom/current/output/chtml/part16/chapter_A.html#sect_TID_1500
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medanomaly.pacs.identity import MANUFACTURER, ResultContext, out_of_domain, to_source_box

if TYPE_CHECKING:
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.dataset import Dataset

    from medanomaly.mapping import Finding
    from medanomaly.pipeline import StudyResult

#: Private coding scheme (a ``99`` designator, PS3.16 section 8.2) for concepts no standard code covers.
SCHEME = "99MEDANOMALY"


def _concepts() -> dict[str, hd.sr.CodedConcept]:
    import highdicom as hd

    private = {
        "score": ("anomaly-score", "Anomaly score"),
        "decision": ("anomaly-decision", "Anomaly decision"),
        "max": ("region-max-score", "Maximum anomaly-map value"),
        "mean": ("region-mean-score", "Mean anomaly-map value"),
        "outside": ("out-of-domain", "Outside the model's domain: no decision"),
    }
    return {key: hd.sr.CodedConcept(value, SCHEME, meaning) for key, (value, meaning) in private.items()}


def _coding_scheme() -> CodingSchemeIdentificationItem:
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return CodingSchemeIdentificationItem(
        designator=SCHEME, name="medanomaly anomaly-detection concepts", responsible_organization=MANUFACTURER
    )


def algorithm_identification(result: StudyResult, context: ResultContext) -> hd.sr.AlgorithmIdentification:
    """TID 4019: algorithm name, version and its decision threshold."""
    import highdicom as hd

    parameters = [f"threshold={result.threshold:.6g}", f"method={context.method}", f"model={context.model_label}"]
    if out_of_domain(result):
        parameters.append(f"out of domain={out_of_domain(result)}"[:1024])
    return hd.sr.AlgorithmIdentification(
        name=context.algorithm_name, version=context.algorithm_version, parameters=parameters
    )


def _image_group(
    result: StudyResult, context: ResultContext, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """Image-level group: score, threshold and decision for the whole series."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    concepts = _concepts()
    values = ((concepts["score"], result.score, algorithm), (codes.DCM.ThresholdValue, result.threshold, None))
    measurements = [
        hd.sr.Measurement(name, float(value), codes.UCUM.NoUnits, algorithm_id=algorithm_id)
        for name, value, algorithm_id in values
        if np.isfinite(value)  # out of domain: no score
    ]
    decision = codes.SCT.Abnormal if result.abnormal else codes.SCT.Normal
    if out_of_domain(result):
        decision = concepts["outside"]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=context.uid("sr", "image"), identifier="image-level result"),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(concepts["decision"], decision)],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in context.sources],
    )


def _finding_group(
    result: StudyResult,
    context: ResultContext,
    finding: Finding,
    index: int,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """One finding: its box on the source slice, peak and mean anomaly, area."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    concepts = _concepts()
    row0, col0, row1, col1 = to_source_box(result, finding)
    polyline = np.array([[col0, row0], [col1, row0], [col1, row1], [col0, row1], [col0, row0]], dtype=np.float64)
    source, frame = context.slice_source(finding.slice_index)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=polyline,
        source_image=hd.sr.SourceImageForRegion.from_source_image(source, None if frame is None else [frame]),
    )
    measurements = [
        hd.sr.Measurement(concepts["max"], float(finding.max_score), codes.UCUM.NoUnits),
        hd.sr.Measurement(concepts["mean"], float(finding.mean_score), codes.UCUM.NoUnits),
    ]
    if finding.area_mm2 is not None:
        measurements.append(hd.sr.Measurement(codes.SCT.Area, float(finding.area_mm2), codes.UCUM.SquareMillimeter))
    tracking = hd.sr.TrackingIdentifier(uid=context.uid("sr", "finding", index), identifier=f"finding {index + 1}")
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_region=region,
        finding_type=codes.SCT.MorphologicallyAbnormalStructure,
        algorithm_id=algorithm,
        measurements=measurements,
    )


def observer(context: ResultContext) -> hd.sr.ObserverContext:
    """The device observer: this software, identified by a UID stable for the model."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=context.uid("device"),
            name=context.algorithm_name,
            manufacturer_name=MANUFACTURER,
            model_name=context.method,
        ),
    )


def build_sr(result: StudyResult, context: ResultContext) -> Dataset:
    """The TID 1500 measurement report of one scored series, in the source study, in a new series.

    Args:
        result: The pipeline's result for the series (score, threshold, decision, findings in model space).
        context: Source image headers (in slice order) and model identity.

    Returns:
        A ``highdicom.sr.Comprehensive3DSR`` dataset (COMPLETE, UNVERIFIED: a radiologist decides).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = algorithm_identification(result, context)
    groups: list = [_image_group(result, context, algorithm)]
    if not out_of_domain(result):
        groups += [_finding_group(result, context, f, i, algorithm) for i, f in enumerate(result.findings)]
    is_ct = context.first.get("Modality") == "CT"
    procedure = codes.LN.CTUnspecifiedBodyRegion if is_ct else codes.SCT.ImagingProcedure
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer(context)),
        procedure_reported=procedure,
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(context.sources),
        content=report,
        **context.common("sr"),
        is_complete=True,
        is_verified=False,
        coding_schemes=[_coding_scheme()],
    )

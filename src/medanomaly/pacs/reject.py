"""Retire superseded results in the PACS: a Key Object Selection "Rejected for Quality Reasons" (IHE IOCM).

When a unit is scored again (new instances, a new model version, ``pull --study``) the new results get new UIDs
and the older ones of the same images and model name are named in one KOS document with the title
(DCM 113001, "Rejected for Quality Reasons"): PACS and viewers that follow IHE Imaging Object Change Management
hide or delete them; with ``delete_superseded`` they are also deleted through the Orthanc REST API.
KOS: PS3.3 A.35.4, https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_A.35.4.html
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medanomaly.pacs.identity import PATIENT_STUDY_KEYS, ResultContext, copy_study_attributes

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from medanomaly.pacs.outbox import OutboxItem

_IMAGE_KINDS = ("seg", "sc")  # referenced as IMAGE items; the others as COMPOSITE


def _stub(context: ResultContext, item: OutboxItem, sop_class: str) -> Dataset:
    """The header a KOS needs of an old result: patient/study of the source, the old instance's UIDs."""
    from pydicom.dataset import Dataset as PydicomDataset

    stub = PydicomDataset()
    for keyword in PATIENT_STUDY_KEYS:
        setattr(stub, keyword, context.first.get(keyword, ""))
    stub.SOPClassUID, stub.SOPInstanceUID, stub.SeriesInstanceUID = sop_class, item.sop_uid, item.series_uid
    if item.kind in _IMAGE_KINDS:
        stub.Rows = stub.Columns = 1
    return stub


def build_rejection(context: ResultContext, superseded: list[tuple[OutboxItem, str]]) -> Dataset:
    """A KOS (title DCM 113001 "Rejected for Quality Reasons") naming the superseded result instances.

    Args:
        context: The new result's context (source study, model identity, UIDs).
        superseded: [(old result item, its SOP Class UID)], as :meth:`Outbox.supersede` returns them.

    Raises:
        ValueError: ``superseded`` is empty.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medanomaly.pacs.sr import observer

    references = [_stub(context, item, sop_class) for item, sop_class in superseded]
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.RejectedForQualityReasons,
        referenced_objects=references,
        observer_device_context=observer(context),
        description=f"superseded by the results of {context.model_label} on the same images",
    )
    document = hd.ko.KeyObjectSelectionDocument(
        evidence=references,
        content=content,
        **context.common("ko"),
    )
    copy_study_attributes(context.first, document)
    return document

"""The outbox: results survive on disk, stay pending while the PACS is down, and are queued again on request."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medanomaly.pacs.client import PacsClient
from medanomaly.pacs.outbox import Outbox
from medanomaly.pacs.settings import PacsSettings


def _instance(study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.BasicTextSRStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study_uid, series_uid, "SR"
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return ds


def test_items_persist_and_are_requeued(tmp_path: Path) -> None:
    study, other = generate_uid(), generate_uid()
    outbox = Outbox(tmp_path / "outbox")
    first = outbox.add(_instance(study, generate_uid()), "sr")
    outbox.add(_instance(other, generate_uid()), "seg")
    assert first.path.is_file() and pydicom.dcmread(first.path).SOPInstanceUID == first.sop_uid
    reopened = Outbox(tmp_path / "outbox")  # a new process sees the same queue
    assert reopened.counts() == {"pending": 2, "sent": 0, "rejected": 0}
    reopened._mark(reopened.items(study_uid=study), "sent")
    assert [item.status for item in reopened.items(study_uid=study)] == ["sent"]
    assert reopened.requeue(study) == 1 and reopened.counts()["pending"] == 2
    assert reopened.requeue(generate_uid()) == 0


def test_readding_an_instance_replaces_it_without_a_second_row(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    dataset = _instance(generate_uid(), generate_uid())
    outbox.add(dataset, "sr")
    outbox._mark(outbox.items(), "sent")
    dataset.ContentLabel = "AGAIN"
    outbox.add(dataset, "sr")
    assert len(outbox.items()) == 1 and outbox.items()[0].status == "pending"
    assert pydicom.dcmread(outbox.items()[0].path).ContentLabel == "AGAIN"


def test_pacs_down_keeps_everything_pending_with_the_reason(tmp_path: Path, dead_url: str) -> None:
    outbox = Outbox(tmp_path)
    study = generate_uid()
    for series in (generate_uid(), generate_uid()):
        outbox.add(_instance(study, series), "sr")
    client = PacsClient(PacsSettings(url=dead_url, retries=2, backoff=0.0, timeout=2), sleep=lambda _: None)
    report = outbox.flush(client)
    assert not report.ok and report.sent == 0 and report.pending == 2
    assert "failed after 2 attempt(s)" in report.error
    tried = [item for item in outbox.items() if item.attempts == 1]
    assert len(tried) == 1 and "connection refused" in tried[0].last_error  # stopped after the first series


def test_watcher_memory(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.remember_study("1.2.3", "failed", "boom")
    outbox.remember_study("1.2.3", "done", "1 unit(s) scored")
    assert Outbox(tmp_path).studies() == {"1.2.3": ("done", "1 unit(s) scored")}

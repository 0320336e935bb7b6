"""The outbox: results survive on disk, stay pending while the PACS is down, and are queued again on request."""

from __future__ import annotations

import datetime as dt
import stat
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from medanomaly.pacs.client import PacsClient
from medanomaly.pacs.ledger import StudyLedger
from medanomaly.pacs.outbox import Outbox
from medanomaly.pacs.settings import PacsSettings


def test_items_persist_and_are_requeued(tmp_path: Path, make_sr) -> None:
    study, other = generate_uid(), generate_uid()
    outbox = Outbox(tmp_path / "outbox")
    first = outbox.add(make_sr(study, generate_uid()), "sr")
    outbox.add(make_sr(other, generate_uid()), "seg")
    assert first.path.is_file() and pydicom.dcmread(first.path).SOPInstanceUID == first.sop_uid
    reopened = Outbox(tmp_path / "outbox")  # a new process sees the same queue
    assert reopened.counts() == {"pending": 2, "sent": 0, "rejected": 0, "superseded": 0, "deleted": 0}
    reopened._mark(reopened.items(study_uid=study), "sent")
    assert [item.status for item in reopened.items(study_uid=study)] == ["sent"]
    assert reopened.requeue(study) == 1 and reopened.counts()["pending"] == 2
    assert reopened.requeue(generate_uid()) == 0


def test_readding_an_instance_replaces_it_without_a_second_row(tmp_path: Path, make_sr) -> None:
    outbox = Outbox(tmp_path)
    dataset = make_sr(generate_uid(), generate_uid())
    outbox.add(dataset, "sr")
    outbox._mark(outbox.items(), "sent")
    dataset.ContentLabel = "AGAIN"
    outbox.add(dataset, "sr")
    assert len(outbox.items()) == 1 and outbox.items()[0].status == "pending"
    assert pydicom.dcmread(outbox.items()[0].path).ContentLabel == "AGAIN"


def test_pacs_down_keeps_everything_pending_with_the_reason(tmp_path: Path, dead_url: str, make_sr) -> None:
    outbox = Outbox(tmp_path)
    study = generate_uid()
    for series in (generate_uid(), generate_uid()):
        outbox.add(make_sr(study, series), "sr")
    client = PacsClient(PacsSettings(url=dead_url, retries=2, backoff=0.0, timeout=2), sleep=lambda _: None)
    report = outbox.flush(client)
    assert not report.ok and report.sent == 0 and report.pending == 2
    assert "failed after 2 attempt(s)" in report.error
    tried = [item for item in outbox.items() if item.attempts == 1]
    assert len(tried) == 1 and "connection refused" in tried[0].last_error  # stopped after the first series


def test_watcher_memory_and_retry_backoff(tmp_path: Path) -> None:
    ledger = StudyLedger(Outbox(tmp_path))
    ledger.remember("1.2.3", "failed", "boom", backoff=(30, 3600))
    state = ledger.get("1.2.3")
    assert state.attempts == 1 and not ledger.is_due(state)
    assert 29 < (state.next_try - dt.datetime.now(dt.UTC)).total_seconds() <= 30
    ledger.remember("1.2.3", "failed", "boom", backoff=(30, 3600))
    assert 59 < (ledger.get("1.2.3").next_try - dt.datetime.now(dt.UTC)).total_seconds() <= 60  # doubled
    ledger.remember("1.2.3", "done", "1 scored")
    state = StudyLedger(Outbox(tmp_path)).get("1.2.3")
    assert (state.status, state.detail, state.attempts) == ("done", "1 scored", 0) and ledger.is_due(state)


def test_stability_clock_restarts_when_instances_arrive(tmp_path: Path) -> None:
    ledger = StudyLedger(Outbox(tmp_path))
    first = ledger.observe("1.2.3", 12)
    assert first.status == "arriving" and not ledger.is_stable(first, 60) and ledger.is_stable(first, 0)
    assert ledger.observe("1.2.3", 12).changed == first.changed
    time.sleep(0.01)  # the ledger keeps milliseconds: a fast machine observes twice within one
    assert ledger.observe("1.2.3", 28).changed > first.changed
    ledger.remember("1.2.3", "done")
    assert ledger.observe("1.2.3", 28).status == "done"
    assert ledger.observe("1.2.3", 30).status == "arriving"  # grew after scoring: scored again


def test_since_defaults_to_the_first_start(tmp_path: Path) -> None:
    ledger = StudyLedger(Outbox(tmp_path))
    today = dt.datetime.now(dt.UTC).astimezone().strftime("%Y%m%d")
    assert ledger.since() == (today, True) and ledger.since() == (today, False)
    assert ledger.since("2024-05-01") == ("20240501", False)


def test_outbox_is_private_and_sent_files_expire(tmp_path: Path, make_sr) -> None:
    outbox = Outbox(tmp_path / "outbox")
    item = outbox.add(make_sr(generate_uid(), generate_uid()), "sr")
    assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700
    assert stat.S_IMODE(item.path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(item.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "outbox" / "index.sqlite").stat().st_mode) == 0o600
    assert outbox.purge(0) == 0  # pending: kept
    outbox._mark([item], "sent")
    assert outbox.purge(1) == 0 and item.path.is_file()  # sent just now, retention 1 day
    assert outbox.purge(0) == 1 and not item.path.exists()
    assert outbox.items()[0].status == "sent" and outbox.requeue(item.study_uid) == 0  # UIDs kept, file gone


def test_a_new_result_supersedes_the_old_one_of_the_same_unit_and_model(tmp_path: Path, make_sr) -> None:
    outbox, study = Outbox(tmp_path), generate_uid()
    old_sent, old_unsent = make_sr(study, generate_uid()), make_sr(study, generate_uid())
    other_model = outbox.add(make_sr(study, generate_uid()), "sr", "series-1", "other")
    outbox.add(old_sent, "sr", "series-1", "chest")
    outbox._mark(outbox.items(sop_uid=old_sent.SOPInstanceUID), "sent")
    outbox.add(old_unsent, "seg", "series-1", "chest")
    new = outbox.add(make_sr(study, generate_uid()), "sr", "series-1", "chest")
    retired = outbox.supersede("series-1", "chest", {new.series_uid})
    assert [(item.sop_uid, sop_class) for item, sop_class in retired] == [
        (old_sent.SOPInstanceUID, pydicom.uid.BasicTextSRStorage)
    ]
    statuses = {item.sop_uid: item.status for item in outbox.items()}
    assert statuses == {other_model.sop_uid: "pending", old_sent.SOPInstanceUID: "superseded", new.sop_uid: "pending"}
    assert outbox.supersede("series-1", "chest", {new.series_uid}) == []

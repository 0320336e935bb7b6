"""The watcher's order and failure handling, with a stand-in PACS: small studies first, a failing study (even out
of memory) is retried later with back-off and does not stop the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from medanomaly.pacs import watcher
from medanomaly.pacs.client import SeriesInfo, StudyInfo
from medanomaly.pacs.ledger import StudyLedger
from medanomaly.pacs.outbox import Outbox
from medanomaly.pacs.settings import PacsSettings
from medanomaly.pacs.sync import SeriesOutcome, SyncReport


class _Pacs:
    """Lists studies with a given number of CT instances each."""

    def __init__(self, settings: PacsSettings, studies: dict[str, int]) -> None:
        self.settings, self.studies = settings, studies

    def search_studies(self, modalities: object, since: object = None) -> list[StudyInfo]:
        return [StudyInfo(uid) for uid in self.studies]

    def list_series(self, study_uid: str) -> list[SeriesInfo]:
        return [SeriesInfo(f"{study_uid}.1", "CT", "", self.studies[study_uid])]


def test_small_studies_first_and_a_failing_one_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = PacsSettings(url="http://pacs.invalid/dicom-web", workdir=tmp_path, since="2000-01-01", stable_seconds=0)
    pacs, calls = _Pacs(settings, {"big": 1000, "small": 3, "medium": 40}), []

    def process(client: object, model: object, study_uid: str, *args: object, **kwargs: object) -> SyncReport:
        calls.append(study_uid)
        if study_uid == "big":
            raise MemoryError("out of memory")
        return SyncReport(study_uid, [SeriesOutcome(f"{study_uid}.1", "CT", "", result=object())])  # type: ignore[arg-type]

    monkeypatch.setattr(watcher, "process_study", process)
    outbox = Outbox(settings.outbox_dir)
    reports = watcher.watch_once(pacs, None, outbox, settings)  # type: ignore[arg-type]
    assert calls == ["small", "medium", "big"] and [r.study_uid for r in reports] == ["small", "medium"]
    state = StudyLedger(outbox).get("big")
    assert state.status == "failed" and "MemoryError" in state.detail and not StudyLedger.is_due(state)
    assert watcher.watch_once(pacs, None, outbox, settings) == [] and calls == ["small", "medium", "big"]  # type: ignore[arg-type]


def test_a_study_that_kills_the_watcher_waits_after_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = PacsSettings(url="http://pacs.invalid/dicom-web", workdir=tmp_path, since="2000-01-01", stable_seconds=0)
    pacs, calls = _Pacs(settings, {"big": 1000}), []

    def process(client: object, model: object, study_uid: str, *args: object, **kwargs: object) -> SyncReport:
        calls.append(study_uid)
        if study_uid == "big":
            raise KeyboardInterrupt  # stands for a kill by the out-of-memory killer: nothing after it runs
        return SyncReport(study_uid, [SeriesOutcome(f"{study_uid}.1", "CT", "", result=object())])  # type: ignore[arg-type]

    monkeypatch.setattr(watcher, "process_study", process)
    outbox = Outbox(settings.outbox_dir)
    with pytest.raises(KeyboardInterrupt):
        watcher.watch_once(pacs, None, outbox, settings)  # type: ignore[arg-type]
    state = StudyLedger(outbox).get("big")
    assert state.status == "failed" and state.detail == watcher.UNFINISHED and not StudyLedger.is_due(state)
    pacs.studies["larger"] = 2000  # restarted: the killer waits its back-off, the next study is scored
    reports = watcher.watch_once(pacs, None, Outbox(settings.outbox_dir), settings)  # type: ignore[arg-type]
    assert calls == ["big", "larger"] and [r.study_uid for r in reports] == ["larger"]
    assert StudyLedger(outbox).get("larger").status == "done"

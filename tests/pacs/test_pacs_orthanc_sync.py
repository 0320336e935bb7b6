"""Results that are complete and current, against a real Orthanc: one result set per image, a study scored once it
is complete, re-scored results superseding the old ones, nothing lost to a wrong password."""

from __future__ import annotations

import time
from dataclasses import replace

import pydicom
import pytest

from medanomaly.cli.main import main
from medanomaly.model import Model
from medanomaly.pacs.client import PacsClient
from medanomaly.pacs.ledger import StudyLedger
from medanomaly.pacs.outbox import Outbox
from medanomaly.pacs.settings import PacsSettings
from medanomaly.pacs.sync import process_study
from medanomaly.pacs.watcher import watch_once

pytestmark = [pytest.mark.integration]


@pytest.fixture
def settings(orthanc, tmp_path) -> PacsSettings:
    return orthanc.settings(tmp_path)


def _series(orthanc, study_uid: str) -> list[dict]:
    return orthanc.rest(f"/studies/{orthanc.study_id(study_uid)}/series")


def _instances(orthanc, study_uid: str, modality: str) -> list[pydicom.Dataset]:
    """Every instance of the study's series of one modality, read back over Orthanc's REST API."""
    import io

    import requests

    found = []
    for series in _series(orthanc, study_uid):
        if series["MainDicomTags"].get("Modality") != modality:
            continue
        for instance in series["Instances"]:
            raw = requests.get(f"{orthanc.url}/instances/{instance}/file", auth=(orthanc.user, orthanc.password))
            found.append(pydicom.dcmread(io.BytesIO(raw.content)))
    return found


def _evidence(sr: pydicom.Dataset) -> set[str]:
    series = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    return {item.ReferencedSOPInstanceUID for item in series.ReferencedSOPSequence}


def test_two_image_dx_series_gets_two_complete_result_sets(orthanc, pacs_model_dir, make_dx, settings) -> None:
    first, second = make_dx(seed=21)[0], make_dx(seed=22, lesion=False)[0]
    second.StudyInstanceUID, second.SeriesInstanceUID, second.InstanceNumber = (
        first.StudyInstanceUID,
        first.SeriesInstanceUID,
        2,
    )
    client, study = PacsClient(settings), str(first.StudyInstanceUID)
    client.store([first, second])
    report = process_study(client, Model.load(pacs_model_dir), study, Outbox(settings.outbox_dir), settings)
    assert len(report.scored) == 2 and report.flush.ok
    per_set = len(report.outcomes[0].queued)
    assert report.flush.sent == 2 * per_set == 2 * len(report.outcomes[1].queued)
    reports = _instances(orthanc, study, "SR")
    assert sorted(map(_evidence, reports), key=sorted) == sorted(
        [{first.SOPInstanceUID}, {second.SOPInstanceUID}], key=sorted
    )
    for modality in ("SEG", "OT"):
        assert len(_instances(orthanc, study, modality)) == 2
    uids = [s["ID"] for s in _series(orthanc, study)]
    assert len(uids) == 1 + 2 * len({k for k in report.outcomes[0].queued})  # source + one series per kind per image


def test_slowly_uploaded_ct_is_scored_once_after_it_is_complete(orthanc, pacs_model_dir, make_ct, settings) -> None:
    slices = make_ct(seed=31, n_slices=28)
    for ds in slices:
        ds.StudyDate = "20300101"  # a date no other test uses: this watcher sees only this study
    watching = replace(settings, modalities=("CT",), since="2030-01-01", stable_seconds=1.5)
    client, outbox, model = PacsClient(watching), Outbox(watching.outbox_dir), Model.load(pacs_model_dir)
    polls = []
    for batch in (slices[:10], slices[10:20], slices[20:]):
        client.store(batch)
        polls.append(watch_once(client, model, outbox, watching))
        time.sleep(0.5)
    assert polls == [[], [], []]  # arriving: never scored half
    time.sleep(1.6)
    [report] = watch_once(client, model, outbox, watching)
    assert watch_once(client, model, outbox, watching) == []  # once
    study = str(slices[0].StudyInstanceUID)
    assert report.study_uid == study and report.flush.ok
    [sr] = _instances(orthanc, study, "SR")
    assert len(_evidence(sr)) == 28 and sr.CompletionFlag == "COMPLETE"
    assert StudyLedger(outbox).get(study).status == "done"


def test_rescoring_supersedes_the_old_results(orthanc, pacs_model_dir, make_dx, settings) -> None:
    datasets = make_dx(seed=41)
    client, study = PacsClient(settings), str(datasets[0].StudyInstanceUID)
    client.store(datasets)
    outbox, model = Outbox(settings.outbox_dir), Model.load(pacs_model_dir)
    model.info["path"] = str(pacs_model_dir)
    process_study(client, model, study, outbox, settings)
    [old_sr] = _instances(orthanc, study, "SR")
    assert "conv_ae v1" in old_sr.SeriesDescription
    old_series = {s["ID"] for s in _series(orthanc, study)}

    model.info.update(version=2, created="2026-02-01T00:00:00+00:00")  # a recalibrated model of the same name
    deleting = replace(settings, delete_superseded=True)
    report = process_study(PacsClient(deleting), model, study, outbox, deleting)
    assert report.flush.ok and report.flush.deleted == len(report.outcomes[0].queued) - 1  # all but the KOS
    [new_sr] = _instances(orthanc, study, "SR")
    assert "conv_ae v2" in new_sr.SeriesDescription and new_sr.SOPInstanceUID != old_sr.SOPInstanceUID
    [kos] = _instances(orthanc, study, "KO")
    assert kos.ConceptNameCodeSequence[0].CodeMeaning == "Rejected for Quality Reasons"
    named = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in kos.ContentSequence if "ReferencedSOPSequence" in i
    }
    assert old_sr.SOPInstanceUID in named and new_sr.SOPInstanceUID not in named
    remaining = {s["ID"] for s in _series(orthanc, study)} & old_series
    assert len(remaining) == 1  # only the source series is left of the old ones
    assert outbox.counts()["deleted"] == len(named)


def test_wrong_then_fixed_password_delivers_everything(orthanc, pacs_model_dir, make_dx, settings, capsys) -> None:
    datasets = make_dx(seed=51)
    client, study = PacsClient(settings), str(datasets[0].StudyInstanceUID)
    client.store(datasets)
    outbox = Outbox(settings.outbox_dir)
    process_study(client, Model.load(pacs_model_dir), study, outbox, settings, send=False)
    queued = outbox.counts()["pending"]
    common = ["--url", orthanc.dicomweb, "--user", orthanc.user, "--workdir", str(settings.workdir)]
    assert main(["pacs", "push", "--pending", *common, "--password", "wrong"]) == 1
    out = capsys.readouterr().out
    assert "HTTP 401 (wrong user or password" in out and f"{queued} instance(s) wait in the outbox" in out
    assert outbox.counts()["pending"] == queued and outbox.counts()["rejected"] == 0
    assert main(["pacs", "status", *common, "--password", "wrong"]) == 1
    assert main(["pacs", "push", "--pending", *common, "--password", orthanc.password]) == 0
    assert f"sent {queued} result instance(s)" in capsys.readouterr().out
    assert outbox.counts()["sent"] == queued and len(_instances(orthanc, study, "SR")) == 1

    outbox._mark(outbox.items(study_uid=study)[:1], "rejected", "HTTP 400")  # a permanent refusal is final...
    assert main(["pacs", "status", *common, "--password", orthanc.password]) == 1  # ...and keeps the exit code up
    assert main(["pacs", "push", "--pending", *common, "--password", orthanc.password]) == 1
    assert "1 instance(s) rejected by the PACS" in capsys.readouterr().out


def test_first_start_leaves_the_archive_alone_and_filters_on_the_server(orthanc, pacs_model_dir, settings) -> None:
    client = PacsClient(settings)
    queries: list[dict] = []
    search = client.web.search_for_studies
    client.web.search_for_studies = lambda **kw: queries.append(kw) or search(**kw)  # type: ignore[method-assign]
    reports = watch_once(client, Model.load(pacs_model_dir), Outbox(settings.outbox_dir), settings)
    assert reports == []  # the archive (older study dates) is not scored at the first start
    today = time.strftime("%Y%m%d")
    assert {q["search_filters"].get("ModalitiesInStudy") for q in queries} == {"CT", "CR", "DX"}
    assert all(q["search_filters"]["StudyDate"] == f"{today}-" for q in queries)
    assert StudyLedger(Outbox(settings.outbox_dir)).since() == (today, False)


def test_head_ct_to_a_chest_radiograph_model_gets_no_decision_in_the_pacs(
    orthanc, pacs_model_dir, make_ct, settings, sr_items
) -> None:
    from medanomaly.domain import Domain

    slices = make_ct(seed=71, n_slices=4)
    client, study = PacsClient(settings), str(slices[0].StudyInstanceUID)
    client.store(slices)
    model = Model.load(pacs_model_dir)
    model.domain = Domain(["DX", "CR"], ["CHEST"], ["MONOCHROME2"], 1, False, [32, 4096], [32, 4096], [1, 1], None, {})
    report = process_study(client, model, study, Outbox(settings.outbox_dir), settings)
    [outcome] = report.outcomes
    assert outcome.result.status == "out_of_domain" and outcome.queued == ["sr"] and report.flush.ok
    modalities = {s["MainDicomTags"]["Modality"] for s in _series(orthanc, study)}
    assert modalities == {"CT", "SR"}  # no SEG, no heat-map, no PDF
    [sr] = _instances(orthanc, study, "SR")
    meanings = {item.ConceptCodeSequence[0].CodeMeaning for item in sr_items(sr) if "ConceptCodeSequence" in item}
    assert "Outside the model's domain: no decision" in meanings and not meanings & {"Normal", "Abnormal"}

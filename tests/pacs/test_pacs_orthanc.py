"""Pull -> score -> push against a real Orthanc: results land in the source study, read back as DICOM, no duplicates,
nothing lost while the PACS is down.

Studies: the Philips phantom CT series from ../shared/data (28 slices of 512 x 512), a synthetic DX radiograph
and a synthetic CT volume written with pydicom.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from medanomaly.cli.main import main
from medanomaly.io import read_study
from medanomaly.model import Model
from medanomaly.pacs.client import PacsClient, PacsConfigError, PacsError
from medanomaly.pacs.ledger import StudyLedger
from medanomaly.pacs.outbox import Outbox
from medanomaly.pacs.seg import anomaly_mask
from medanomaly.pacs.settings import PacsSettings
from medanomaly.pacs.sync import SyncReport, process_study
from medanomaly.pacs.worklist import Worklist

pytestmark = [
    pytest.mark.integration,
    # the Philips phantom's PatientName "HEAD" has one component; highdicom warns when copying it
    pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name:UserWarning"),
]


pytest.importorskip("reportlab", reason="the PDF report pushed as DOC needs the 'service' extra (reportlab)")
pytest.importorskip("sqlalchemy", reason="the service worklist needs the 'service' extra (SQLAlchemy, Alembic)")
RESULT_MODALITIES = {"SR", "SEG", "OT", "DOC"}


@dataclass
class Processed:
    """The studies uploaded to Orthanc and what pull -> score -> push made of them."""

    settings: PacsSettings
    client: PacsClient
    outbox: Outbox
    model: Model
    db_url: str | None
    sources: dict[str, list[pydicom.Dataset]]
    reports: dict[str, SyncReport]

    def uid(self, name: str) -> str:
        return str(self.sources[name][0].StudyInstanceUID)

    def result_series(self, name: str, modality: str) -> pydicom.Dataset:
        """The first instance of a result series, retrieved over DICOMweb (WADO-RS)."""
        series = next(s for s in self.client.list_series(self.uid(name)) if s.modality == modality)
        return self.client.web.retrieve_series(self.uid(name), series.series_uid)[0]


@pytest.fixture(scope="module")
def processed(orthanc, pacs_model_dir, philips_ct, make_dx, make_ct, tmp_path_factory) -> Processed:
    work = tmp_path_factory.mktemp("pacs-work")
    settings = orthanc.settings(work, keep_downloads=True)
    client = PacsClient(settings)
    sources = {"philips": philips_ct, "dx": make_dx(seed=3), "ct": make_ct(seed=4)}
    for datasets in sources.values():
        client.store(datasets)
    model = Model.load(pacs_model_dir)
    model.info["path"] = str(pacs_model_dir)
    db_url = f"sqlite:///{work / 'service' / 'medanomaly.db'}"
    outbox, worklist = Outbox(settings.outbox_dir), Worklist(db_url)
    reports = {
        name: process_study(
            client,
            model,
            str(datasets[0].StudyInstanceUID),
            outbox,
            settings,
            worklist=None if name == "philips" else worklist,
        )  # keeps the test quick
        for name, datasets in sources.items()
    }
    return Processed(settings, client, outbox, model, db_url, sources, reports)


def _series_by_modality(orthanc, study_uid: str) -> dict[str, dict]:
    series = orthanc.rest(f"/studies/{orthanc.study_id(study_uid)}/series")
    return {item["MainDicomTags"]["Modality"]: item for item in series}


def test_results_are_new_series_of_the_source_study(processed, orthanc) -> None:
    for name, sources in processed.sources.items():
        report = processed.reports[name]
        assert report.flush.ok and len(report.scored) == 1, name
        series = _series_by_modality(orthanc, processed.uid(name))
        assert RESULT_MODALITIES <= set(series), name
        assert len(series[sources[0].Modality]["Instances"]) == len(sources)
        for modality in RESULT_MODALITIES - {"OT"}:
            assert len(series[modality]["Instances"]) == 1
        assert len(series["OT"]["Instances"]) == min(3, len(sources))
        assert {series[m]["MainDicomTags"]["Manufacturer"] for m in RESULT_MODALITIES} == {"medanomaly"}
        assert report.flush.sent == len(RESULT_MODALITIES) - 1 + min(3, len(sources))


def test_ct_sr_and_seg_read_back_match_the_source_slices(processed) -> None:
    outcome = processed.reports["philips"].outcomes[0]
    sources = {str(ds.SOPInstanceUID): ds for ds in processed.sources["philips"]}
    sr = hd.sr.Comprehensive3DSR.from_dataset(processed.result_series("philips", "SR"))
    measured = {m.name.meaning: m.value for m in sr.content.get_image_measurement_groups()[0].get_measurements()}
    assert measured["Anomaly score"] == pytest.approx(outcome.result.score, rel=1e-6)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert {item.ReferencedSOPInstanceUID for item in evidence} == set(sources)
    assert len(sr.content.get_planar_roi_measurement_groups()) == len(outcome.result.findings)

    seg = hd.seg.Segmentation.from_dataset(processed.result_series("philips", "SEG"))
    assert seg.StudyInstanceUID == processed.uid("philips") and int(seg.NumberOfFrames) == 28
    order = read_study(Path(processed.settings.download_dir, processed.uid("philips"), outcome.series_uid))
    index = {uid: i for i, uid in enumerate(order.meta["sop_uids"])}
    expected = anomaly_mask(outcome.result, processed.model.postprocessing.region_threshold)
    pixels = seg.pixel_array.reshape(28, 512, 512).astype(bool)
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in sources[uid].ImagePositionPatient])
        assert (pixels[frame] == expected[index[uid]]).all()


def test_synthetic_dx_and_ct_results_read_back(processed) -> None:
    for name, shape in (("dx", (1, 80, 64)), ("ct", (6, 48, 48))):
        result = processed.reports[name].outcomes[0].result
        sr = hd.sr.Comprehensive3DSR.from_dataset(processed.result_series(name, "SR"))
        group = sr.content.get_image_measurement_groups()[0]
        assert group.get_measurements()[0].value == pytest.approx(result.score, rel=1e-6)
        seg = processed.result_series(name, "SEG")
        assert (int(seg.NumberOfFrames), seg.Rows, seg.Columns) == shape
        assert processed.result_series(name, "DOC").EncapsulatedDocument.startswith(b"%PDF")


def test_results_appear_in_the_service_worklist(processed) -> None:
    from medanomaly.service.db import make_engine, make_session_factory
    from medanomaly.service.studies import query_studies

    with make_session_factory(make_engine(processed.db_url))() as db:
        rows = {row.study_instance_uid: row for row in db.scalars(query_studies()).all()}
        assert set(rows) == {processed.uid("dx"), processed.uid("ct")}
        for name in ("dx", "ct"):
            report, row = processed.reports[name], rows[processed.uid(name)]
            assert row.status == "done" and row.original_name == f"PACS series {report.outcomes[0].series_uid}" + (
                f" image {processed.sources[name][0].SOPInstanceUID}" if name == "dx" else ""
            )
            assert row.result.score == pytest.approx(report.outcomes[0].result.score)
            assert (Path(processed.db_url.removeprefix("sqlite:///")).parent / row.result.arrays_path).is_file()


def test_pushing_twice_leaves_one_copy(processed, orthanc, capsys) -> None:
    uid = processed.uid("dx")
    before = {m: len(s["Instances"]) for m, s in _series_by_modality(orthanc, uid).items()}
    queued = processed.outbox.requeue(uid)
    flush = processed.outbox.flush(processed.client, uid)
    assert (flush.sent, flush.already_there, flush.pending) == (0, queued, 0)
    again = process_study(
        processed.client,
        processed.model,
        uid,
        processed.outbox,
        processed.settings,
        worklist=Worklist(processed.db_url),
    )
    assert again.flush.already_there == queued and again.flush.sent == 0 and again.registered == 0
    s = processed.settings
    argv = [
        "pacs",
        "push",
        "--study",
        uid,
        "--url",
        s.url,
        "--user",
        s.user,
        "--password",
        s.password,
        "--workdir",
        str(s.workdir),
    ]
    assert main(argv) == 0
    assert f"sent 0 result instance(s), {queued} already in the PACS" in capsys.readouterr().out
    assert {m: len(s["Instances"]) for m, s in _series_by_modality(orthanc, uid).items()} == before


def test_pacs_down_keeps_results_queued_then_sends_them(
    orthanc, pacs_model_dir, make_dx, dead_url, tmp_path, capsys, monkeypatch
) -> None:
    good = PacsSettings(url=orthanc.dicomweb, user=orthanc.user, password=orthanc.password, workdir=tmp_path)
    datasets = make_dx(seed=7, lesion=False)
    PacsClient(good).store(datasets)
    uid, outbox = str(datasets[0].StudyInstanceUID), Outbox(good.outbox_dir)
    process_study(PacsClient(good), Model.load(pacs_model_dir), uid, outbox, good, send=False)
    queued = outbox.counts()["pending"]
    waits: list[float] = []
    down = PacsClient(replace(good, url=dead_url, retries=3, backoff=0.01), sleep=waits.append)
    flush = outbox.flush(down)
    assert "failed after 3 attempt(s) (connection refused" in flush.error and waits == [0.01, 0.02]
    assert queued == len(RESULT_MODALITIES) and outbox.counts()["pending"] == queued  # SR, SEG, SC, PDF on disk
    assert "SR" not in _series_by_modality(orthanc, uid)

    auth = ["--user", orthanc.user, "--password", orthanc.password, "--workdir", str(tmp_path)]
    assert main(["pacs", "status", "--url", dead_url, *auth]) == 1
    out = capsys.readouterr().out
    assert f"{queued} pending" in out and "NOT answering" in out and "connection refused" in out
    monkeypatch.setenv("MEDANOMALY_PACS_BACKOFF", "0.01")
    assert (
        main(
            ["pacs", "pull", "--study", uid, "--model", str(pacs_model_dir), "--url", dead_url, "--retries", "2", *auth]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"medanomaly pacs: error: PACS {dead_url}: list series of {uid} failed after 2")

    assert main(["pacs", "push", "--pending", "--url", orthanc.dicomweb, *auth]) == 0
    assert f"sent {queued} result instance(s)" in capsys.readouterr().out
    assert outbox.counts() == {"pending": 0, "sent": queued, "rejected": 0, "superseded": 0, "deleted": 0}
    assert RESULT_MODALITIES <= set(_series_by_modality(orthanc, uid))


def test_watch_once_processes_each_new_study_once(orthanc, pacs_model_dir, make_dx, tmp_path, capsys) -> None:
    settings = PacsSettings(url=orthanc.dicomweb, user=orthanc.user, password=orthanc.password)
    PacsClient(settings).store(make_dx(seed=11))
    dx_studies = {s.study_uid for s in PacsClient(settings).search_studies(["DX"])}
    argv = [
        "pacs",
        "watch",
        "--once",
        "--modalities",
        "DX",
        "--model",
        str(pacs_model_dir),
        "--url",
        orthanc.dicomweb,
        "--user",
        orthanc.user,
        "--password",
        orthanc.password,
        "--workdir",
        str(tmp_path),
        "--since",
        "2000-01-01",
        "--stable-seconds",
        "0",
    ]
    assert main(argv) == 0
    assert f"poll done: {len(dx_studies)} new study(ies); outbox 0 pending" in capsys.readouterr().out
    seen = StudyLedger(Outbox(tmp_path / "outbox")).all()
    assert set(seen) == dx_studies and {state.status for state in seen.values()} == {"done"}
    assert main(argv) == 0
    assert "poll done: 0 new study(ies)" in capsys.readouterr().out


def test_list_filters_studies_by_modality(processed, orthanc, capsys) -> None:
    argv = [
        "pacs",
        "list",
        "--modalities",
        "CT",
        "--url",
        orthanc.dicomweb,
        "--user",
        orthanc.user,
        "--password",
        orthanc.password,
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0] for line in lines[:-1]}
    assert {processed.uid("philips"), processed.uid("ct")} <= listed and processed.uid("dx") not in listed
    assert main([*argv[:3], "DX,CR", *argv[4:]]) == 0
    assert processed.uid("dx") in capsys.readouterr().out


def test_refusals_are_clear_and_not_retried(orthanc, pacs_model_dir, tmp_path) -> None:
    waits: list[float] = []
    wrong = PacsSettings(url=orthanc.dicomweb, user=orthanc.user, password="wrong", retries=3, workdir=tmp_path)
    with pytest.raises(PacsConfigError, match=r"HTTP 401 \(wrong user or password: check MEDANOMALY_PACS_USER"):
        PacsClient(wrong, sleep=waits.append).search_studies()
    assert waits == []
    right = replace(wrong, password=orthanc.password)
    with pytest.raises(PacsError, match="study 1.2.3.4 is not in the PACS"):
        process_study(PacsClient(right), Model.load(pacs_model_dir), "1.2.3.4", Outbox(tmp_path), right)

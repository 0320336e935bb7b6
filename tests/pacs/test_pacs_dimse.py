"""DIMSE round trip with a real Orthanc: Orthanc C-STOREs a study to ``pacs listen``'s receiver, it is scored like a
DICOMweb study, and the results go back to Orthanc's DICOM port with C-STORE; dcmtk's storescu reaches the receiver."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import replace

import pytest
import requests
from pydicom.uid import generate_uid

from medanomaly.cli.main import main
from medanomaly.model import Model
from medanomaly.pacs.client import PacsClient, PacsConfigError, PacsUnavailableError
from medanomaly.pacs.dimse import DimseSender, Peer, Receiver, process_inbox
from medanomaly.pacs.ledger import StudyLedger
from medanomaly.pacs.outbox import Outbox
from medanomaly.pacs.settings import PacsSettings

pytestmark = [pytest.mark.integration]


@pytest.fixture
def settings(orthanc, tmp_path, port_factory) -> PacsSettings:
    return orthanc.settings(
        tmp_path,
        ae_title="MEDANOMALY",
        listen_host="127.0.0.1",
        listen_port=port_factory(),
        dimse_peer=f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
        stable_seconds=0,
        timeout=30,
    )


def _wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_orthanc_sends_a_study_we_score_it_and_send_results_back(orthanc, pacs_model_dir, make_dx, settings) -> None:
    datasets = make_dx(seed=61)
    study = str(datasets[0].StudyInstanceUID)
    PacsClient(settings).store(datasets)
    auth = (orthanc.user, orthanc.password)
    modality = {"AET": settings.ae_title, "Host": "127.0.0.1", "Port": settings.listen_port}
    requests.put(f"{orthanc.url}/modalities/medanomaly", json=modality, auth=auth, timeout=10).raise_for_status()
    outbox = Outbox(settings.outbox_dir)
    receiver = Receiver(settings, outbox)
    receiver.start()
    try:
        sent = requests.post(
            f"{orthanc.url}/modalities/medanomaly/store", data=orthanc.study_id(study), auth=auth, timeout=60
        )
        sent.raise_for_status()  # Orthanc's C-STORE SCU -> our receiver
    finally:
        receiver.stop()
    assert StudyLedger(outbox).get(study).instances == 1
    [report] = process_inbox(Model.load(pacs_model_dir), outbox, settings, DimseSender(settings))
    assert report.study_uid == study and len(report.scored) == 1
    assert report.flush.ok and report.flush.sent == len(report.outcomes[0].queued)
    series = orthanc.rest(f"/studies/{orthanc.study_id(study)}/series")
    assert {"SR", "SEG", "OT"} <= {s["MainDicomTags"]["Modality"] for s in series}  # stored by C-STORE
    assert process_inbox(Model.load(pacs_model_dir), outbox, settings, DimseSender(settings)) == []  # once


def test_storescu_reaches_the_listen_command(pacs_model_dir, make_dx, write_series, settings, tmp_path) -> None:
    storescu = shutil.which("storescu")
    if storescu is None:
        if os.environ.get("CI") == "true":
            pytest.fail("dcmtk's storescu is missing (apt-get install dcmtk)")
        pytest.skip("dcmtk is not installed (apt-get install dcmtk)")
    datasets = make_dx(seed=62)
    folder = write_series(datasets, tmp_path / "send")
    argv = [
        "pacs", "listen", "--model", str(pacs_model_dir), "--port", str(settings.listen_port), "--host", "127.0.0.1",
        "--peer", settings.dimse_peer, "--stable-seconds", "0", "--for", "8", "--workdir", str(settings.workdir),
        "--url", settings.url, "--user", settings.user, "--password", settings.password,
    ]  # fmt: skip
    codes: list[int] = []
    listener = threading.Thread(target=lambda: codes.append(main(argv)))
    listener.start()
    _wait_for(lambda: _accepts(settings.listen_port))
    run = subprocess.run(
        [storescu, "-aec", "MEDANOMALY", "127.0.0.1", str(settings.listen_port), *map(str, folder.iterdir())],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    listener.join(60)
    assert run.returncode == 0, run.stderr
    assert codes == [0]
    study = str(datasets[0].StudyInstanceUID)
    assert (settings.inbox_dir / study).is_dir() and StudyLedger(Outbox(settings.outbox_dir)).get(
        study
    ).status == "done"
    assert Outbox(settings.outbox_dir).counts()["sent"] >= 3


def test_sender_errors_are_named(settings, port_factory, make_sr) -> None:
    with pytest.raises(PacsConfigError, match="expected AET@HOST:PORT"):
        Peer.parse("ORTHANC:4242")
    down = DimseSender(replace(settings, dimse_peer=f"ORTHANC@127.0.0.1:{port_factory()}", timeout=2))
    with pytest.raises(PacsUnavailableError, match="no association"):
        down.store([make_sr(generate_uid(), generate_uid())])


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0

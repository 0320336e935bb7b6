"""PACS fixtures: a real Orthanc (DICOMweb plugin, authentication on) on loopback, a tiny model, synthetic DICOM.

The Orthanc fixture skips the tests that use it when the ``Orthanc`` binary or its DICOMweb plugin is missing
(``apt-get install orthanc orthanc-dicomweb``; ``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medanomaly.data.synthetic import make_phantom, make_phantom_set, make_phantom_volume
from medanomaly.fitting import calibrate_model
from medanomaly.model import Model, Postprocessing
from medanomaly.pacs.settings import PacsSettings
from medanomaly.registry import create
from medanomaly.training import TrainConfig, Trainer
from medanomaly.transforms import Preprocessing
from medanomaly.types import Study

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "ai", "secret"
SHARED_CT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ct_dicom_dcm_qa_ct" / "dicom"
PHILIPS_CT = SHARED_CT / "Philips_Ingenuity_phantom_5mm_notilt"


@pytest.fixture(scope="session", autouse=True)
def _no_outside_pacs_settings() -> Iterator[None]:
    """Tests must not pick up a developer's MEDANOMALY_PACS_* / MEDANOMALY_DATA_DIR environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MEDANOMALY_PACS_") or n == "MEDANOMALY_DATA_DIR"]:
            patch.delenv(name)
        yield


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def port_factory() -> Callable[[], int]:
    """Factory: a free loopback TCP port."""
    return free_port


@pytest.fixture
def dead_url() -> str:
    """A DICOMweb URL on a loopback port nothing listens on (a PACS that is down)."""
    return f"http://127.0.0.1:{free_port()}/dicom-web"


@dataclass(frozen=True)
class OrthancServer:
    """A running Orthanc: REST root ``url``, DICOMweb root ``dicomweb``, basic-auth credentials."""

    url: str
    dicomweb: str
    user: str
    password: str
    dicom_port: int = 0
    aet: str = "ORTHANC"

    def settings(self, workdir: Path, **changes: object) -> PacsSettings:
        """Settings to reach this Orthanc over DICOMweb (quick retries, long timeout for a busy machine)."""
        base = PacsSettings(
            url=self.dicomweb,
            user=self.user,
            password=self.password,
            workdir=workdir,
            retries=2,
            backoff=0.05,
            timeout=60,
        )
        return replace(base, **changes)  # type: ignore[arg-type]

    def rest(self, path: str) -> object:
        """GET one Orthanc REST resource as JSON."""
        response = requests.get(self.url + path, auth=(self.user, self.password), timeout=10)
        response.raise_for_status()
        return response.json()

    def study_id(self, study_uid: str) -> str:
        """Orthanc's own ID of a study."""
        found = requests.post(self.url + "/tools/lookup", data=study_uid, auth=(self.user, self.password), timeout=10)
        found.raise_for_status()
        return next(item["ID"] for item in found.json() if item["Type"] == "Study")


def _orthanc_binary() -> str | None:
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None)
    return found if found and PLUGIN.is_file() else None


def _wait_until_up(server: OrthancServer, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited with code {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(server.url + "/system", auth=(USER, PASSWORD), timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"Orthanc did not answer /system within {timeout:g} s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """Orthanc on free loopback ports with a temporary storage folder, DICOMweb on, authentication on."""
    binary = _orthanc_binary()
    if binary is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "medanomaly-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "config.json").write_text(json.dumps(config))
    log = root / "orthanc.log"
    with log.open("w") as out:
        process = subprocess.Popen([binary, str(root / "config.json")], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    server = OrthancServer(url, url + "/dicom-web", USER, PASSWORD, dicom_port)
    try:
        _wait_until_up(server, process, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def pacs_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conv_ae (32 px, 3 epochs on 64 normal phantoms), calibrated on 16 more, with a fixed creation time."""
    images, _, _ = make_phantom_set(80, 0, size=32, seed=0)
    detector = create("conv_ae", depth=3, width=8, latent_dim=16, random_state=0)
    trainer = Trainer(TrainConfig(max_epochs=3, batch_size=16, progress=False, device="cpu", patience=None))
    detector.fit(torch.from_numpy(images[:64]), trainer=trainer)
    model = Model(
        detector,
        Preprocessing(resolution=32),
        Postprocessing(median_size=3, min_region_area=2),
        info={"created": "2026-01-01T00:00:00+00:00"},
    )
    held_out = torch.from_numpy(images[64:])
    calibrate_model(model, [Study(image.numpy(), {"kind": "png"}) for image in held_out])
    return model.save(tmp_path_factory.mktemp("pacs-model") / "conv_ae")


@pytest.fixture(scope="session")
def philips_ct() -> list[Dataset]:
    """The 28 slices of the Philips phantom CT series from ../shared/data (read-only, not copied)."""
    if not PHILIPS_CT.is_dir():
        pytest.skip(f"needs data outside the repository: {PHILIPS_CT} is not mounted here")
    return [pydicom.dcmread(path) for path in sorted(PHILIPS_CT.iterdir())]


def _dataset(sop_class: str, modality: str, study_uid: str, series_uid: str, pixels: np.ndarray) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, study_uid, series_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "PHANTOM-1", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260102", "101500", "1", "ACC1"
    ds.ReferringPhysicianName, ds.SeriesNumber, ds.Manufacturer = "", 1, "synthetic"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


@pytest.fixture(scope="session")
def make_dx() -> Callable[..., list[Dataset]]:
    """Factory: a DX study of one 80 x 64 phantom radiograph (a bright lesion when ``lesion``), as datasets."""

    def make(seed: int = 0, lesion: bool = True) -> list[Dataset]:
        image, _ = make_phantom(np.random.default_rng(seed), 96, lesion=lesion, lesion_radius=(0.1, 0.12))
        pixels = np.round(image[8:88, 16:80] * 4000).astype(np.uint16)  # 80 rows x 64 columns: padded by the model
        ds = _dataset(pydicom.uid.DigitalXRayImageStorageForPresentation, "DX", generate_uid(), generate_uid(), pixels)
        ds.PatientOrientation, ds.ImagerPixelSpacing, ds.PixelSpacing = ["L", "F"], [0.5, 0.5], [0.5, 0.5]
        ds.PresentationIntentType, ds.InstanceNumber = "FOR PRESENTATION", 1
        return [ds]

    return make


@pytest.fixture(scope="session")
def make_ct() -> Callable[..., list[Dataset]]:
    """Factory: a synthetic CT series (``n_slices`` of 48 x 48, 2.5 mm apart, lesion on the middle slices)."""

    def make(seed: int = 0, n_slices: int = 6) -> list[Dataset]:
        volume, _ = make_phantom_volume(np.random.default_rng(seed), n_slices=n_slices, size=48, lesion=True)
        study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
        slices = []
        for index in np.random.default_rng(seed).permutation(n_slices):  # stored in shuffled order
            hounsfield = volume[index] * 1500.0 - 1000.0  # the file's window (-250, 1500) gives the phantom back
            ds = _dataset(
                pydicom.uid.CTImageStorage, "CT", study_uid, series_uid, np.round(hounsfield + 1024).astype(np.uint16)
            )
            ds.FrameOfReferenceUID, ds.InstanceNumber = frame_uid, int(index) + 1
            ds.ImagePositionPatient = [-12.0, -12.0, float(index) * 2.5]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 2.5
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
            ds.WindowCenter, ds.WindowWidth = -250, 1500
            slices.append(ds)
        return slices

    return make


def _content_items(dataset: Dataset) -> list[Dataset]:
    found, stack = [], list(dataset.get("ContentSequence", []))
    while stack:
        found.append(stack.pop())
        stack += list(found[-1].get("ContentSequence", []))
    return found


@pytest.fixture(scope="session")
def sr_items() -> Callable[[Dataset], list[Dataset]]:
    """Function: every content item of an SR tree (depth first)."""
    return _content_items


@pytest.fixture(scope="session")
def make_sr() -> Callable[[str, str], Dataset]:
    """Factory: a minimal Basic Text SR instance (header only) in the given study and series."""

    def make(study_uid: str, series_uid: str) -> Dataset:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.BasicTextSRStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study_uid, series_uid, "SR"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    return make


@pytest.fixture(scope="session")
def write_series() -> Callable[[list[Dataset], Path], Path]:
    """Factory: write datasets as ``<SOPInstanceUID>.dcm`` files into a folder; returns the folder."""

    def write(datasets: list[Dataset], folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for ds in datasets:
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return folder

    return write

"""Fixtures of the workstation tests: a tiny trained model, apps on temporary data folders, phantom uploads."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_helpers import PASSWORDS, Session, add_users, login, make_settings, phantom_png  # noqa: F401

from medanomaly.data.synthetic import make_phantom, make_phantom_volume, write_phantom_dataset


@pytest.fixture(scope="session")
def service_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 32 px phantom data set (NORMAL / LESION)."""
    return write_phantom_dataset(
        tmp_path_factory.mktemp("svc-phantoms"), n_train=60, n_test_normal=4, n_test_abnormal=4, size=32, seed=0
    )


@pytest.fixture(scope="session")
def service_model_dir(service_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conv_ae trained for a few seconds on 60 normal 32 px phantoms (threshold: 95th pct of normals)."""
    from medanomaly.fitting import FitOptions, train_model
    from medanomaly.model import Postprocessing
    from medanomaly.training import TrainConfig
    from medanomaly.transforms import Preprocessing

    options = FitOptions(
        params={"depth": 3, "width": 8, "latent_dim": 16, "learning_rate": 5e-3},
        preprocessing=Preprocessing(resolution=32, normalize="minmax"),
        postprocessing=Postprocessing(median_size=3, score_from="map_topk"),
        train=TrainConfig(max_epochs=6, batch_size=8, progress=False, patience=None),
        random_state=0,
    )
    out = tmp_path_factory.mktemp("svc-model") / "chest"
    train_model(service_data, "conv_ae", out, options)
    return out


@pytest.fixture
def model_dir(service_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the model (recalibration writes new versions into it), without its recorded domain.

    The shared fixtures (CT DICOM in HU, float NIfTI volumes) are outside the domain of this model trained on 8-bit
    PNG phantoms with ``minmax`` intensities, so the tests of upload, volume and report mechanics use it as a model
    of unknown domain (scored as before); ``domain_model_dir`` keeps the domain (tests/service/test_service_domain.py).
    """
    copy = Path(shutil.copytree(service_model_dir, tmp_path / "models" / "chest"))
    config = json.loads((copy / "model.json").read_text())
    config.pop("domain", None)
    (copy / "model.json").write_text(json.dumps(config))
    return copy


@pytest.fixture
def domain_model_dir(service_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the model with the domain training recorded."""
    return Path(shutil.copytree(service_model_dir, tmp_path / "models-domain" / "chest"))


@pytest.fixture
def app_factory(tmp_path: Path, model_dir: Path) -> Callable[..., Any]:
    """``app_factory(**settings_changes)``: a fresh app with users on ``tmp_path/data``."""

    def build(**changes: Any) -> Any:
        from medanomaly.service.app import create_app

        models = changes.pop("model_dirs", (str(model_dir),))
        app = create_app(make_settings(tmp_path / "data", models, **changes))
        from sqlalchemy import func, select

        from medanomaly.service.db import User

        with app.state.session_factory() as db:
            if not db.scalar(select(func.count()).select_from(User)):
                add_users(app)
        return app

    return build


@pytest.fixture
def app(app_factory: Callable[..., Any]) -> Any:
    """An app with users and the tiny model, worker off (tests run jobs with ``app.state.jobs.run_pending()``)."""
    return app_factory()


@pytest.fixture
def rad(app: Any) -> Session:
    """Logged-in radiologist."""
    return login(app, "rad")


@pytest.fixture
def admin(app: Any) -> Session:
    """Logged-in admin."""
    return login(app, "admin")


@pytest.fixture
def lesion_png(tmp_path: Path) -> Path:
    """A 32 px phantom with a large nodule."""
    return phantom_png(tmp_path / "in" / "lesion.png", lesion=True, seed=11, radius=(0.1, 0.13))


@pytest.fixture
def normal_png(tmp_path: Path) -> Path:
    """A 32 px normal phantom."""
    return phantom_png(tmp_path / "in" / "normal.png", lesion=False, seed=12)


def ct_dataset(pixels: np.ndarray, index: int = 0, **attrs: Any):
    """A CT slice dataset (int16 HU-like values) of one series; ``attrs`` override header fields."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.PatientID, ds.PatientName = "PAT-SECRET-123", "Doe^John"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.11"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 2.0 * index]
    ds.InstanceNumber = index + 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def write_ct(path: Path, image: np.ndarray, index: int = 0) -> Path:
    """Write a phantom slice in [0, 1] as a CT DICOM file (0 -> -1024 HU ... 1 -> +476 HU)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ct_dataset(np.round(image * 1500).astype(np.int16), index).save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_file(tmp_path: Path) -> Path:
    """One CT DICOM slice whose header holds a patient ID and name."""
    image, _ = make_phantom(np.random.default_rng(3), 32, lesion=True)
    return write_ct(tmp_path / "in" / "Doe^John.dcm", image)


@pytest.fixture
def dicom_zip(tmp_path: Path) -> Path:
    """A zip holding a 5-slice CT series in a sub-folder."""
    volume, _ = make_phantom_volume(np.random.default_rng(4), n_slices=5, size=32, lesion=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, image in enumerate(volume):
            data = io.BytesIO()
            ct_dataset(np.round(image * 1500).astype(np.int16), index).save_as(data, enforce_file_format=True)
            archive.writestr(f"series/slice{index:03d}.dcm", data.getvalue())
    path = tmp_path / "in" / "series.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def nifti_volume(tmp_path: Path) -> Path:
    """A 6-slice phantom volume as NIfTI."""
    import nibabel as nib

    volume, _ = make_phantom_volume(np.random.default_rng(5), n_slices=6, size=32, lesion=True)
    path = tmp_path / "in" / "volume.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume.transpose(1, 2, 0).astype(np.float32), np.eye(4)), path)
    return path


@pytest.fixture
def studies_on_disk(app: Any) -> Callable[[], list[Path]]:
    """Lists what the app stored under ``studies/`` and ``tmp/`` (to check that rejects leave nothing)."""

    def listing() -> list[Path]:
        root = app.state.settings.data_dir
        return sorted(p for folder in ("studies", "tmp") if (root / folder).exists() for p in (root / folder).iterdir())

    return listing

"""A model knows its domain: a chest-X-ray-like phantom model refuses a head CT, a colour frame, an ultrasound-like
frame and a blank image (status out_of_domain, no decision) and still decides in-domain studies."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medanomaly.cli.main import main
from medanomaly.data.datasets import load_index
from medanomaly.data.loading import load_images
from medanomaly.data.synthetic import make_phantom, write_phantom_dataset
from medanomaly.domain import Domain, build_domain, check_study, parse_declared
from medanomaly.io import find_studies, read_study
from medanomaly.model import Model
from medanomaly.pipeline import OUT_OF_DOMAIN, SCORED, score_path, score_study
from medanomaly.transforms import Preprocessing

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEAD_CT = SHARED_DATA / "ct_dicom_dcm_qa_ct" / "dicom" / "GE_HiSpeedDual_head_tilt_varspacing"


@pytest.fixture(scope="module")
def chest_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(
        tmp_path_factory.mktemp("chest"), n_train=60, n_test_normal=8, n_test_abnormal=8, size=32, seed=5
    )


@pytest.fixture(scope="module")
def chest_model(chest_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conv_ae 'chest X-ray' phantom model trained through the CLI with a declared modality/body part."""
    out = tmp_path_factory.mktemp("model") / "chest"
    argv = [
        "train", str(chest_data), "--method", "conv_ae", "--out", str(out), "--resolution", "32", "--epochs", "1",
        "--batch-size", "16", "--no-progress", "--param", "depth=2", "--param", "width=4", "--param", "latent_dim=8",
        "--modality", "DX,CR", "--body-part", "chest",
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def _write_dicom(path: Path, pixels: np.ndarray, **attrs: object) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.PatientID = "1.2.826.0.1.3680043.8.498.77", "PAT-D"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing = [0.5, 0.5]
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _head_ct(folder: Path, n_slices: int = 3, size: int = 32) -> Path:
    """A head-like CT series in HU: air, a bright skull ring, brain; Modality CT, BodyPartExamined HEAD."""
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - size / 2, cols - size / 2)
    hu = np.where(radius < size * 0.42, 1000, -1000)
    hu = np.where(radius < size * 0.36, 35, hu).astype(np.int16)
    series = generate_uid()
    for index in range(n_slices):
        _write_dicom(
            folder / f"{index:02d}.dcm",
            hu,
            Modality="CT",
            BodyPartExamined="HEAD",
            SeriesInstanceUID=series,
            InstanceNumber=index + 1,
            ImagePositionPatient=[0, 0, 5.0 * index],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            RescaleSlope=1,
            RescaleIntercept=0,
        )
    return folder


def _ultrasound_frame(path: Path, size: int = 64) -> Path:
    """A grey ultrasound-like frame: black background, a speckled fan opening downwards."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:size, :size]
    angle = np.degrees(np.arctan2(cols - size / 2, rows + 4))
    fan = (np.abs(angle) < 35) & (np.hypot(rows + 4, cols - size / 2) < size)
    image = np.where(fan, rng.gamma(1.5, 50, (size, size)), 0).clip(0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return path


def test_training_records_the_domain(chest_model: Path) -> None:
    domain = json.loads((chest_model / "model.json").read_text())["domain"]
    assert domain["modalities"] == ["DX", "CR"] and domain["body_parts"] == ["CHEST"] and domain["declared"]
    assert domain["photometric"] == ["MONOCHROME2"] and domain["channels"] == 1 and domain["colour"] is False
    assert domain["height"] == [32, 32] and domain["width"] == [32, 32] and domain["spacing_mm"] is None
    assert domain["n_studies"] == 66  # 60 train + 6 val normals
    assert set(domain["intensity"]) == {"p1", "p50", "p99"}
    appearance = domain["appearance"]
    assert appearance["bound"] > appearance["quantiles"]["q50"] > 0 and appearance["quantiles"]["n"] == 66
    assert domain["scores"]["n"] == 6 and domain["scores"]["q99"] >= domain["scores"]["q50"]


def test_head_ct_series_is_out_of_domain(chest_model: Path, tmp_path: Path) -> None:
    result = score_path(Model.load(chest_model), _head_ct(tmp_path / "head"))
    assert result.status == OUT_OF_DOMAIN and not result.decided
    assert result.abnormal is None and result.label == "OUT OF DOMAIN" and result.findings == []
    assert result.domain_reason.startswith("CT, HEAD; this model was trained on DX/CR CHEST")
    summary = result.summary()
    assert summary["status"] == "out_of_domain" and summary["score"] is None and summary["abnormal"] is None
    json.dumps(summary, allow_nan=False)


@pytest.mark.integration
@pytest.mark.skipif(not HEAD_CT.is_dir(), reason="needs ../shared/data: data outside the repository")
def test_real_head_ct_is_out_of_domain(chest_model: Path) -> None:
    result = score_path(Model.load(chest_model), HEAD_CT)
    assert result.status == OUT_OF_DOMAIN
    assert "CT, HEAD" in result.domain_reason


def test_ultrasound_dicom_is_out_of_domain(chest_model: Path, tmp_path: Path) -> None:
    frame = (np.random.default_rng(2).random((32, 32, 3)) * 255).astype(np.uint8)
    path = _write_dicom(tmp_path / "us.dcm", frame[..., 0], Modality="US")
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frame.tobytes()
    ds.save_as(path)
    result = score_path(Model.load(chest_model), path)
    assert result.status == OUT_OF_DOMAIN
    reason = result.domain_reason
    assert "colour image" in reason and "US; this model was trained on DX/CR CHEST" in reason


@pytest.mark.parametrize("kind", ["rgb", "ultrasound", "blank", "blank_dicom"])
def test_frames_unlike_chest_xrays_are_out_of_domain(chest_model: Path, tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(1)
    if kind == "rgb":
        path = tmp_path / "frame.png"
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(path)
        expected = "colour image"
    elif kind == "ultrasound":
        path, expected = _ultrasound_frame(tmp_path / "us.png"), "image unlike the training images"
    elif kind == "blank":
        path, expected = tmp_path / "blank.png", "blank or constant image"
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    else:
        path = _write_dicom(tmp_path / "blank.dcm", np.full((32, 32), 500), Modality="DX", BodyPartExamined="CHEST")
        expected = "blank or constant image"
    result = score_path(Model.load(chest_model), path)
    assert result.status == OUT_OF_DOMAIN and result.abnormal is None
    assert expected in result.domain_reason


def test_grey_image_in_a_colour_file_is_not_colour(chest_model: Path, tmp_path: Path) -> None:
    image, _ = make_phantom(np.random.default_rng(7), 32)
    grey = np.round(image * 255).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    result = score_path(Model.load(chest_model), tmp_path / "grey_rgb.png")
    assert "colour" not in (result.domain_reason or "")


def test_in_domain_studies_are_decided(chest_model: Path, chest_data: Path, tmp_path: Path) -> None:
    model = Model.load(chest_model)
    paths = sorted((chest_data / "test").rglob("*.png"))
    image, _ = make_phantom(np.random.default_rng(9), 32)
    paths.append(_write_dicom(tmp_path / "cr.dcm", np.round(image * 4000), Modality="CR", BodyPartExamined="CHEST"))
    results = [score_path(model, path) for path in paths]
    assert all(r.status == SCORED and isinstance(r.abnormal, bool) for r in results), [r.domain_reason for r in results]
    assert all(r.domain["known"] and r.domain["in_domain"] for r in results)


def test_override_scores_out_of_domain_studies(chest_model: Path, tmp_path: Path) -> None:
    model = Model.load(chest_model)
    study = read_study(_head_ct(tmp_path / "head"))
    result = score_study(model, study, ignore_domain=True)
    assert result.status == SCORED and isinstance(result.abnormal, bool) and np.isfinite(result.score)
    assert result.domain["ignored"] and "CT, HEAD" in result.domain_reason


def test_cli_score_says_out_of_domain(chest_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    head = _head_ct(tmp_path / "head")
    assert main(["score", str(head), "--model", str(chest_model), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["model"]["domain"] == "DX/CR CHEST"
    (only,) = payload["results"]
    assert only["status"] == "out_of_domain" and only["label"] == "OUT OF DOMAIN" and only["abnormal"] is None
    assert main(["score", str(head), "--model", str(chest_model)]) == 0
    assert "OUT OF DOMAIN (no decision): CT, HEAD; this model was trained on DX/CR CHEST" in capsys.readouterr().out
    assert main(["score", str(head), "--model", str(chest_model), "--ignore-domain"]) == 0
    line = capsys.readouterr().out
    assert "check overridden" in line and ("NORMAL" in line or "ABNORMAL" in line)


def test_old_model_without_domain_loads_with_a_warning(
    chest_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    config = json.loads((chest_model / "model.json").read_text())
    del config["domain"]
    (old / "model.json").write_text(json.dumps(config))
    (old / "weights.pt").write_bytes((chest_model / "weights.pt").read_bytes())
    with caplog.at_level(logging.WARNING, logger="medanomaly.model"):
        model = Model.load(old)
    assert model.domain is None and "unknown domain" in caplog.text
    result = score_path(model, _head_ct(tmp_path / "head"))
    assert result.status == SCORED and isinstance(result.abnormal, bool)
    assert result.domain == {"known": False, "in_domain": True, "ignored": False, "reasons": []}


def test_domain_round_trips_and_parses_declarations(chest_model: Path) -> None:
    domain = Model.load(chest_model).domain
    again = Domain.from_dict(json.loads(json.dumps(domain.to_dict())))
    assert again.describe() == domain.describe() == "DX/CR CHEST"
    assert again.appearance.bound == pytest.approx(domain.appearance.bound)
    assert parse_declared(" dx , CR,") == ["DX", "CR"]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_DATA / "zhanglab_chest_xray").is_dir(), reason="needs ../shared/data: data outside the repository"
)
def test_real_chest_xrays_pass_and_ct_slices_are_refused() -> None:
    """A 64 px domain from 200 zhanglab train normals (+ 40 held out): test chest X-rays in, CT slices out."""
    preprocessing = Preprocessing(resolution=64)
    chest = load_index(SHARED_DATA / "zhanglab_chest_xray")
    normals = chest.select(split="train", label="NORMAL")
    train, held_out = (load_images(part, preprocessing, progress=False) for part in (normals[:200], normals[200:240]))
    domain = build_domain(train.facts + held_out.facts, train.images.numpy(), held_out.images.numpy(), channels=1)

    def refused(paths: list[Path]) -> int:
        studies = [read_study(path) for path in paths]
        return sum(not check_study(domain, s, preprocessing.apply(s)[0]).in_domain for s in studies)

    in_domain = [s.path for label in ("NORMAL", "PNEUMONIA") for s in chest.select(split="test", label=label)[:40]]
    assert refused(in_domain) <= 2  # measured on the full test set with 1207 training normals: 0 of 624
    assert refused(find_studies(SHARED_DATA / "covid_ct_cropped" / "test")[:40]) >= 38  # measured: 746 of 746

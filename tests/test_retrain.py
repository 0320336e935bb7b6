"""Retraining from radiologists' feedback (medanomaly.training.retrain and ``medanomaly retrain``) on tiny phantoms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medanomaly.cli.main import main
from medanomaly.data.synthetic import make_phantom, write_phantom_dataset
from medanomaly.fitting import FitOptions, train_model
from medanomaly.model import Model, Postprocessing
from medanomaly.training import TrainConfig
from medanomaly.training.retrain import RetrainOptions, read_feedback_export, retrain_model
from medanomaly.transforms import Preprocessing


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 train normals at 32 px (NORMAL / LESION)."""
    return write_phantom_dataset(
        tmp_path_factory.mktemp("rt-data"), n_train=24, n_test_normal=2, n_test_abnormal=2, size=32, seed=1
    )


def _train(data: Path, out: Path, method: str, params: dict, epochs: int = 3) -> Path:
    options = FitOptions(
        params=params,
        preprocessing=Preprocessing(resolution=32, normalize="minmax"),
        postprocessing=Postprocessing(median_size=3, score_from="map_topk"),
        train=TrainConfig(max_epochs=epochs, batch_size=8, progress=False, patience=None),
        progress=False,
    )
    train_model(data, method, out, options)
    return out


@pytest.fixture(scope="module")
def conv_ae_dir(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(
        data,
        tmp_path_factory.mktemp("rt-ae") / "m",
        "conv_ae",
        {"depth": 3, "width": 8, "latent_dim": 16, "learning_rate": 5e-3},
    )


@pytest.fixture(scope="module")
def patchcore_dir(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(
        data,
        tmp_path_factory.mktemp("rt-pc") / "m",
        "patchcore",
        {"backbone": "tiny", "coreset_ratio": 0.25, "runtime": "torch"},
    )


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A feedback export as the workstation writes it: 7 confirmed normal, 4 confirmed lesion, manifest.csv."""
    root = tmp_path_factory.mktemp("rt-feedback")
    rng = np.random.default_rng(7)
    rows = ["path,label,study,score,model,model_version,opinion_by,opinion_at"]
    for index, (label, lesion) in enumerate([("NORMAL", False)] * 7 + [("NODULE", True)] * 4):
        image, _ = make_phantom(rng, 32, lesion=lesion, lesion_radius=(0.1, 0.13))
        path = root / label / f"uid{index:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
        rows.append(f"{label}/{path.name},{label},{index + 1},0.5,chest,1,rad,2026-01-01T00:00:00")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_conv_ae_fine_tunes_from_the_served_weights(conv_ae_dir: Path, export: Path, tmp_path: Path) -> None:
    feedback = read_feedback_export(export)
    assert sum(f.abnormal for f in feedback) == 4 and len(feedback) == 11
    stages: list[str] = []
    report = retrain_model(
        conv_ae_dir,
        feedback,
        tmp_path / "v2",
        RetrainOptions(epochs=2),
        progress=lambda stage, fraction: stages.append(stage),
    )
    old, new = Model.load(conv_ae_dir), Model.load(tmp_path / "v2")
    record = new.info["retraining"]
    assert new.version == old.version + 1 and new.info["parent_version"] == old.version
    assert record["mode"].startswith("fine-tune (2 epochs")
    assert record["original_data"]["reachable"] and record["note"] is None
    assert new.info["data"] == old.info["data"]
    assert len(record["feedback"]["held_out"]) == 3  # round(0.3 * 7) normal + round(0.3 * 4) abnormal
    assert record["feedback"]["n_normal"] == 5 and record["feedback"]["n_abnormal"] == 3
    assert new.info["fingerprint"] != old.info["fingerprint"]  # the feedback is part of the training data
    assert len(new.detector.history_["epochs"]) == 2
    for point in (report.before, report.after):
        assert point["n_normal"] == 2 and point["n_abnormal"] == 1
    assert report.before["threshold"] == pytest.approx(old.threshold.value)
    assert report.after["threshold"] == pytest.approx(new.threshold.value)
    assert stages[0] == "loading the model" and stages[-1] == "done"
    assert "fine-tuning" in stages and "fine-tuning: epoch 2/2" in stages
    changed = [
        not torch.equal(a, b)
        for a, b in zip(old.detector.state_dict().values(), new.detector.state_dict().values(), strict=True)
    ]
    assert any(changed)


def test_warm_start_continues_instead_of_restarting(conv_ae_dir: Path, export: Path) -> None:
    """The first fine-tuning epoch starts near the served loss; a fresh network starts far above it."""
    served = Model.load(conv_ae_dir)
    images = torch.stack(
        [
            torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255)[None]
            for p in sorted((export / "NORMAL").glob("*.png"))
        ]
    )
    from medanomaly.training import Trainer

    config = TrainConfig(max_epochs=1, batch_size=4, progress=False, patience=None, val_fraction=0)
    served.detector.fit(images, trainer=Trainer(config), warm_start=True)
    fresh = Model.load(conv_ae_dir).detector
    fresh.fit(images, trainer=Trainer(config))
    assert served.detector.history_.epochs[0]["loss"] < 0.75 * fresh.history_.epochs[0]["loss"]


def test_patchcore_refits_on_its_data_plus_the_feedback(patchcore_dir: Path, export: Path, tmp_path: Path) -> None:
    options = RetrainOptions(calibration="youden")  # a rule that uses the confirmed abnormal studies
    report = retrain_model(patchcore_dir, read_feedback_export(export), tmp_path / "v2", options)
    old, new = Model.load(patchcore_dir), Model.load(tmp_path / "v2")
    assert report.record["mode"] == "refit" and new.version == 2
    assert new.info["n_train_normal"] == old.info["n_train_normal"] + 5
    assert report.record["feedback"]["abnormal_use"] == "threshold calibration (youden)"
    assert new.threshold.method == "youden" and new.info["calibration"]["spec"] == "youden"
    assert report.after["auroc"] is not None and 0.0 <= report.after["auroc"] <= 1.0


def test_unreachable_training_data_retrains_on_the_feedback_alone(
    conv_ae_dir: Path, export: Path, tmp_path: Path
) -> None:
    moved = Path(shutil.copytree(conv_ae_dir, tmp_path / "moved"))
    config = json.loads((moved / "model.json").read_text())
    config["info"]["data"] = str(tmp_path / "gone")
    (moved / "model.json").write_text(json.dumps(config))
    report = retrain_model(moved, read_feedback_export(export), None, RetrainOptions(epochs=1))
    assert not report.record["original_data"]["reachable"]
    assert "feedback alone" in report.record["note"]
    assert report.model.info["n_train_normal"] == 5  # the feedback normals not held out, nothing else
    assert report.record["feedback"]["abnormal_use"].startswith("not used: the threshold rule percentile:95")


def test_too_few_confirmed_normals_is_a_clear_error(conv_ae_dir: Path, export: Path) -> None:
    one = [f for f in read_feedback_export(export) if f.abnormal] + [
        next(f for f in read_feedback_export(export) if not f.abnormal)
    ]
    with pytest.raises(ValueError, match="at least 2 studies confirmed normal"):
        retrain_model(conv_ae_dir, one)


def test_cli_retrain(conv_ae_dir: Path, export: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "new"
    assert main(["retrain", str(conv_ae_dir), "--feedback", str(export), "--out", str(out), "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "v1 -> v2: fine-tune (1 epochs" in printed and "before" in printed and "after" in printed
    assert Model.load(out).info["retraining"]["feedback"]["source"] == str(export)


def test_domain_reference_of_three_training_slices() -> None:
    """A retraining on the feedback alone can have 2-3 normals: too few for folds, the bound is in-sample."""
    from medanomaly.domain_features import fit_reference

    images = np.random.default_rng(0).random((3, 1, 32, 32)).astype(np.float32)
    reference = fit_reference(images, np.zeros((0, 1, 32, 32), np.float32))
    assert reference.quantiles["n"] == 3 and reference.bound > 0


def test_export_filtered_by_model(export: Path) -> None:
    assert len(read_feedback_export(export, "chest")) == 11
    assert read_feedback_export(export / "manifest.csv", "head-ct") == []


@pytest.mark.parametrize(
    ("method", "extra", "use"),
    [("cnn_classifier", {}, "labelled abnormal"), ("anomalypro", {"mixed_from_train": 0.3}, "mixed set")],
)
def test_confirmed_abnormals_train_the_methods_that_can(
    method: str, extra: dict, use: str, data: Path, export: Path, tmp_path: Path
) -> None:
    from medanomaly.registry import detector_class

    labelled = Path(shutil.copytree(data, tmp_path / "data"))
    rng = np.random.default_rng(5)
    for index in range(6):
        image, _ = make_phantom(rng, 32, lesion=True, lesion_radius=(0.1, 0.13))
        path = labelled / "train" / "LESION" / f"train_lesion_{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    options = FitOptions(
        params=dict(detector_class(method).tiny_params),
        preprocessing=Preprocessing(resolution=32, normalize="minmax"),
        train=TrainConfig(max_epochs=1, batch_size=16, progress=False, patience=None),
        progress=False,
        **extra,
    )
    train_model(labelled, method, tmp_path / "m", options)
    before = Model.load(tmp_path / "m").info
    report = retrain_model(tmp_path / "m", read_feedback_export(export), None, RetrainOptions(epochs=1))
    assert use in report.record["feedback"]["abnormal_use"] and report.record["mode"].startswith("fine-tune")
    if method == "cnn_classifier":  # 3 of the 4 confirmed abnormal studies join the labelled abnormal images
        assert report.model.info["n_train_abnormal"] == before["n_train_abnormal"] + 3
    else:  # they join the mixed set with the other train abnormals and a share of the normals
        assert report.model.info["n_train_mixed"] > before["n_train_mixed"]

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from medanomaly.cli.main import main
from medanomaly.data.synthetic import make_phantom, make_phantom_set
from medanomaly.detectors.classifier import ClassifierNet, CnnClassifier, grad_cam
from medanomaly.detectors.classifier.augment import RandomAugment
from medanomaly.detectors.classifier.detector import _oversample
from medanomaly.detectors.classifier.validation import collapse_report, stratified_split
from medanomaly.features import FeatureExtractor
from medanomaly.model import Model
from medanomaly.registry import create, detector_class
from medanomaly.training import TrainConfig, Trainer
from medanomaly.transforms import Preprocessing

LINE = re.compile(r"^\S+  (NORMAL|LESION): \d+\.\d\d%$")


@pytest.fixture(scope="module")
def fitted() -> CnnClassifier:
    normal, _, _ = make_phantom_set(120, 0, size=32, seed=20)
    abnormal, _, _ = make_phantom_set(0, 60, size=32, seed=21)  # imbalanced 2:1 on purpose
    detector = create("cnn_classifier", **CnnClassifier.tiny_params)
    config = TrainConfig(max_epochs=10, batch_size=32, progress=False, patience=None)
    return detector.fit(torch.from_numpy(normal), abnormal=torch.from_numpy(abnormal), trainer=Trainer(config))


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    images, labels, masks = make_phantom_set(20, 20, size=32, seed=22)
    return torch.from_numpy(images), labels, masks


def test_registered_as_classification() -> None:
    cls = detector_class("cnn_classifier")
    assert cls is CnnClassifier
    assert cls.kind == "classification"
    assert cls.needs == frozenset({"normal", "abnormal"})


def test_confidence_is_a_probability(fitted, test_set) -> None:
    prediction = fitted.score(test_set[0])
    probabilities = prediction.extras["probabilities"]
    assert probabilities.shape == (40, 2)
    assert ((prediction.scores >= 0) & (prediction.scores <= 1)).all()
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(40))
    torch.testing.assert_close(prediction.scores, probabilities[:, 1])


def test_separates_lesions_and_history_has_validation(fitted, test_set) -> None:
    images, labels, _ = test_set
    assert roc_auc_score(labels, fitted.score(images).scores.numpy()) > 0.85
    history = fitted.history_.to_dict()
    assert history["monitor"] == "val_loss"
    assert all("val_loss" in epoch and "accuracy" in epoch for epoch in history["epochs"])
    assert 0 <= history["best_epoch"] < 10


def test_gradcam_map_points_at_the_lesion(fitted, test_set) -> None:
    images, labels, masks = test_set
    maps = fitted.score(images).anomaly_maps
    assert maps.shape == (40, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1
    inside, outside = [], []
    for i in np.flatnonzero(labels == 1):
        lesion = torch.from_numpy(masks[i] > 0)
        inside.append(float(maps[i][lesion].mean()))
        outside.append(float(maps[i][~lesion].mean()))
    assert np.mean(inside) > np.mean(outside)


def test_gradcam_works_under_inference_mode_without_touching_gradients() -> None:
    net = ClassifierNet(1, 2, width=4, depth=2).eval()
    with torch.inference_mode():
        features = net.features(torch.rand(3, 1, 16, 16))
        cam = grad_cam(features, net.head, target=1, size=(16, 16))
    assert cam.shape == (3, 16, 16)
    assert (cam >= 0).all()
    assert all(parameter.grad is None for parameter in net.parameters())


def test_save_load_gives_identical_scores(fitted, test_set, tmp_path) -> None:
    Model(fitted, Preprocessing(resolution=32)).save(tmp_path / "clf")
    loaded = Model.load(tmp_path / "clf", device="cpu").detector
    first, second = fitted.score(test_set[0]), loaded.score(test_set[0])
    torch.testing.assert_close(second.scores, first.scores)
    torch.testing.assert_close(second.anomaly_maps, first.anomaly_maps)


def test_augmentation_is_seeded_and_flip_is_exact() -> None:
    images = torch.rand(4, 1, 16, 16)
    augment = RandomAugment()
    first = augment(images, torch.Generator().manual_seed(3))
    second = augment(images, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, second)
    assert not torch.allclose(first, images)
    assert first.min() >= 0 and first.max() <= 1
    flip_only = RandomAugment(flip=1.0, rotation=0, shift=0, scale=0, contrast=0, brightness=0)
    torch.testing.assert_close(flip_only(images, torch.Generator()), images.flip(-1), atol=1e-5, rtol=0)


def test_stratified_split_and_oversampling_balance_classes() -> None:
    labels = torch.tensor([0] * 80 + [1] * 40)
    train, val = stratified_split(labels, 0.25, seed=0)
    assert torch.bincount(labels[val]).tolist() == [20, 10]
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == 120
    balanced = _oversample(train, labels[train], torch.Generator().manual_seed(0))
    assert torch.bincount(labels[balanced]).tolist() == [60, 60]


def test_validation_split_has_a_floor_per_class_and_is_seeded() -> None:
    labels = torch.tensor([0] * 30 + [1] * 12)
    train, val = stratified_split(labels, 0.1, seed=3, min_fraction=0.2, min_per_class=10)
    assert torch.bincount(labels[val]).tolist() == [10, 6]  # 10 each when possible, never over half a class
    torch.testing.assert_close(stratified_split(labels, 0.1, seed=3)[1], val)
    large = torch.tensor([0] * 1000 + [1] * 500)
    assert torch.bincount(large[stratified_split(large, 0.1, seed=0)[1]]).tolist() == [200, 100]  # 20 % floor
    assert len(stratified_split(torch.tensor([0] * 20 + [1]), 0.2, seed=0)[1]) == 0  # one abnormal: no split
    assert len(stratified_split(labels, 0.0, seed=0)[1]) == 0  # validation switched off


def test_collapse_report_flags_one_class_predictions() -> None:
    labels = torch.tensor([0] * 30 + [1] * 10)
    collapsed = collapse_report(torch.full((40,), 0.2), labels, "validation")
    assert collapsed["collapsed"] and collapsed["collapsed_to"] == "normal"
    assert collapsed["predicted_abnormal_share"] == 0 and collapsed["balanced_accuracy"] == 0.5
    healthy = collapse_report(labels.float() * 0.8 + 0.1, labels, "validation")
    assert not healthy["collapsed"] and healthy["auroc"] == 1.0 and healthy["accuracy"] == 1.0
    one_class = collapse_report(torch.full((20,), 0.1), torch.zeros(20, dtype=torch.long), "validation")
    assert not one_class["collapsed"] and one_class["auroc"] is None  # nothing else to predict


def test_fitted_model_reports_its_validation_check(fitted) -> None:
    report = fitted.validation_
    assert report["source"] == "validation" and report["n_per_class"] == [24, 12]
    assert not report["collapsed"] and fitted.warnings_ == []


def test_bad_balance_is_rejected() -> None:
    with pytest.raises(ValueError, match="balance"):
        create("cnn_classifier", balance="smote").fit(torch.rand(8, 1, 16, 16), abnormal=torch.rand(8, 1, 16, 16))


def _write_labelled_set(root: Path, counts: tuple[int, int] = (60, 60), lesions: bool = True, size: int = 32) -> Path:
    rng = np.random.default_rng(5)
    for split, (n_normal, n_lesion) in (("train", counts), ("test", (4, 4))):
        for label, lesion, count in (("NORMAL", False, n_normal), ("LESION", lesions, n_lesion)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                image, _ = make_phantom(rng, size, lesion=lesion)
                Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / f"{split}_{index:04d}.png")
    return root


def test_cli_prints_class_and_confidence(tmp_path, capsys) -> None:
    data = _write_labelled_set(tmp_path / "data")
    out = tmp_path / "model"
    argv = ["train", str(data), "--method", "cnn_classifier", "--out", str(out), "--resolution", "32",
            "--epochs", "3", "--no-progress", "--param", "backbone=scratch", "--param", "width=8",
            "--param", "depth=3", "--param", "learning_rate=0.003"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["score", str(data / "test"), "--model", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8
    assert all(LINE.match(line) for line in lines), lines
    assert main(["evaluate", str(data), "--model", str(out), "--json"]) == 0
    assert '"auroc"' in capsys.readouterr().out


def test_a_collapsed_model_says_so_in_the_output_and_model_json(tmp_path, capsys) -> None:
    # "abnormal" images without lesions, 3:1 imbalance, no balancing: the best a model can do is call all normal
    data = _write_labelled_set(tmp_path / "data", counts=(60, 20), lesions=False, size=16)
    out = tmp_path / "model"
    argv = ["train", str(data), "--method", "cnn_classifier", "--out", str(out), "--resolution", "16",
            "--epochs", "6", "--no-progress", "--param", "backbone=scratch", "--param", "width=4",
            "--param", "depth=2", "--param", "learning_rate=0.01", "--param", "balance=none",
            "--param", "augment=false"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "WARNING: cnn_classifier collapsed" in printed and "'normal'" in printed
    config = json.loads((out / "model.json").read_text())
    assert config["fitted"]["validation"]["collapsed"] is True
    assert config["info"]["warnings"] == config["fitted"]["warnings"] and len(config["info"]["warnings"]) == 1
    assert Model.load(out, device="cpu").detector.warnings_ == config["fitted"]["warnings"]


def test_pretrained_backbone_is_fine_tuned_and_saved(tmp_path) -> None:
    normal, _, _ = make_phantom_set(24, 0, size=32, seed=23)
    abnormal, _, _ = make_phantom_set(0, 24, size=32, seed=24)
    detector = create("cnn_classifier", backbone="tiny", backbone_layer="stage3", frozen_through="stage1")
    initial = {k: v.clone() for k, v in FeatureExtractor("tiny", runtime="torch").backbone.state_dict().items()}
    config = TrainConfig(max_epochs=2, batch_size=16, progress=False, patience=None)
    detector.fit(torch.from_numpy(normal), abnormal=torch.from_numpy(abnormal), trainer=Trainer(config))
    tuned = detector.network_.features.backbone.state_dict()
    assert any(not torch.equal(tuned[key], initial[key]) for key in initial)  # the backbone learned too ...
    for key in ("convs.0.weight", "convs.0.bias"):  # ... except its frozen first stage
        torch.testing.assert_close(tuned[key], initial[key], rtol=0, atol=0)
    images = torch.from_numpy(normal[:4])
    prediction = detector.score(images)
    assert prediction.anomaly_maps.shape == (4, 32, 32)
    Model(detector, Preprocessing(resolution=32)).save(tmp_path / "bb")
    loaded = Model.load(tmp_path / "bb", device="cpu").detector
    torch.testing.assert_close(loaded.score(images).scores, prediction.scores)


def test_efficientnet_backbone_starts_from_the_packaged_weights() -> None:
    detector = create("cnn_classifier")
    assert detector.backbone == "efficientnet_lite0" and detector.frozen_through == "blocks.4"  # the defaults
    detector._build((1, 64, 64), {})
    reference = FeatureExtractor("efficientnet_lite0", runtime="torch").backbone.state_dict()
    state = detector.network_.features.backbone.state_dict()
    torch.testing.assert_close(state["_conv_stem.weight"], reference["_conv_stem.weight"])
    logits = detector.network_(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 2)
    logits.sum().backward()
    blocks = detector.network_.features.backbone._blocks
    assert blocks[4]._depthwise_conv.weight.grad is None  # frozen through blocks.4
    assert blocks[5]._depthwise_conv.weight.grad is not None


def test_frozen_layer_must_come_before_the_output_layer() -> None:
    detector = create("cnn_classifier", backbone="tiny", backbone_layer="stage2", frozen_through="stage3")
    with pytest.raises(ValueError, match="frozen_through"):
        detector._build((1, 16, 16), {})


def test_an_interrupted_and_resumed_run_ends_with_the_uninterrupted_weights(tmp_path) -> None:
    normal, _, _ = make_phantom_set(40, 0, size=16, seed=22)
    abnormal, _, _ = make_phantom_set(0, 20, size=16, seed=23)
    data = {"normal": torch.from_numpy(normal), "abnormal": torch.from_numpy(abnormal)}
    base = dict(batch_size=16, progress=False, patience=None)

    def train(epochs: int, checkpoint: str | None) -> CnnClassifier:
        config = TrainConfig(max_epochs=epochs, checkpoint_dir=checkpoint, **base)
        detector = create("cnn_classifier", backbone="scratch", width=4, depth=2, learning_rate=3e-3)
        return detector.fit(data["normal"], abnormal=data["abnormal"], trainer=Trainer(config))

    straight = train(3, None)
    train(1, str(tmp_path))  # interrupted after one epoch ...
    resumed = train(3, str(tmp_path))  # ... and continued: augmentation draws continue too
    assert resumed.history_.resumed_from_epoch == 1
    for key, value in straight.network_.state_dict().items():
        torch.testing.assert_close(resumed.network_.state_dict()[key], value)

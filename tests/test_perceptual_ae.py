import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from medanomaly.cli.main import main
from medanomaly.data.synthetic import make_phantom_set, write_phantom_dataset
from medanomaly.detectors.perceptual_ae import (
    PerceptualAutoencoder,
    PerceptualDistance,
    ProgressiveAutoencoderNet,
    progress_at,
    tune_perceptual_ae,
)
from medanomaly.features import FeatureExtractor
from medanomaly.model import Model
from medanomaly.registry import create, detector_class
from medanomaly.training import StepContext, TrainConfig, Trainer
from medanomaly.transforms import Preprocessing

LESION = (0.09, 0.13)
TINY = {"backbone": "tiny", "width": 8, "latent_dim": 32, "stage_epochs": None}  # growth over half the epochs


@pytest.fixture(scope="module")
def normal() -> torch.Tensor:
    images, _, _ = make_phantom_set(160, 0, size=32, seed=40)
    return torch.from_numpy(images)


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, np.ndarray]:
    images, labels, _ = make_phantom_set(20, 20, size=32, seed=41, lesion_radius=LESION)
    return torch.from_numpy(images), labels


@pytest.fixture(scope="module")
def fitted(normal) -> PerceptualAutoencoder:
    config = TrainConfig(max_epochs=16, batch_size=32, progress=False, patience=None)
    return create("perceptual_ae", **TINY).fit(normal, trainer=Trainer(config))


def test_registered() -> None:
    assert detector_class("perceptual_ae") is PerceptualAutoencoder
    assert PerceptualAutoencoder.needs == frozenset({"normal"})


def test_schedule_grows_to_the_last_stage_with_alpha_ramping_up() -> None:
    trace = [progress_at(seen, stage_images=100, n_stages=4) for seen in range(0, 500, 5)]
    stages = [stage for stage, _ in trace]
    assert stages == sorted(stages) and stages[0] == 0 and stages[-1] == 3
    for stage in (1, 2, 3):
        alphas = [alpha for s, alpha in trace if s == stage]
        assert alphas[0] == 0.0 and alphas[-1] == 1.0
        assert all(a <= b for a, b in zip(alphas, alphas[1:], strict=False))  # monotone fade-in
    assert progress_at(10_000, 100, 4) == (3, 1.0)


def test_growth_follows_the_images_seen_not_the_clock(monkeypatch) -> None:
    detector = create("perceptual_ae", **TINY)
    detector._build((1, 32, 32), {"stage_images": 100.0})
    detector.network_.images_seen.fill_(250)  # 2.5 stage lengths: stage 2, fully faded in
    monkeypatch.setattr(time, "monotonic", lambda: 1e12)  # a clock far ahead (a busy machine) changes nothing
    detector.training_step([torch.rand(2, 1, 32, 32)], StepContext.for_optimizers({}))
    assert (int(detector.network_.stage), float(detector.network_.alpha)) == (2, 1.0)


def test_network_at_every_stage_and_alpha_zero_is_the_previous_stage() -> None:
    torch.manual_seed(0)
    net = ProgressiveAutoencoderNet(1, resolution=32, start_resolution=8, width=4, latent_dim=8).eval()
    assert net.n_stages == 3
    for stage, side in ((0, 8), (1, 16), (2, 32)):
        net.set_progress(stage, 1.0)
        assert net.current_resolution == side
        output = net(torch.rand(2, 1, side, side))
        assert output.shape == (2, 1, side, side) and output.min() >= 0 and output.max() <= 1
    images = torch.rand(2, 1, 16, 16)
    net.set_progress(1, 0.0)
    faded = net(images)
    net.set_progress(0, 1.0)
    previous = F.interpolate(net(F.avg_pool2d(images, 2)), scale_factor=2, mode="nearest")
    torch.testing.assert_close(faded, previous)
    with pytest.raises(ValueError, match="power of two"):
        ProgressiveAutoencoderNet(1, resolution=48, start_resolution=8)


def test_perceptual_distance_is_zero_for_identical_images_and_adds_pixel_term() -> None:
    extractor = FeatureExtractor("tiny", layers=["stage2"], runtime="torch")
    images, other = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    loss, maps = PerceptualDistance(extractor)(images, images)
    assert maps.shape == (3, 32, 32)
    torch.testing.assert_close(loss, torch.zeros(3))
    perceptual, _ = PerceptualDistance(extractor)(other, images)
    combined, _ = PerceptualDistance(extractor, pixel_weight=2.0)(other, images)
    pixel = (other - images).abs().flatten(1).mean(dim=1)
    assert (perceptual > 0).all()
    torch.testing.assert_close(combined, perceptual + 2.0 * pixel)


def test_training_reaches_the_final_resolution_with_a_fade_in(fitted) -> None:
    epochs = fitted.history_.to_dict()["epochs"]
    resolutions = [epoch["resolution"] for epoch in epochs]
    assert resolutions[0] == 8 and resolutions[-1] == 32
    assert any(0 < epoch["alpha"] < 1 for epoch in epochs)  # some epoch lies inside a fade-in
    assert (int(fitted.network_.stage), float(fitted.network_.alpha)) == (2, 1.0)


def test_ranks_lesions_and_score_is_the_loss(fitted, test_set) -> None:
    images, labels = test_set
    prediction = fitted.score(images)
    assert roc_auc_score(labels, prediction.scores.numpy()) > 0.8
    assert prediction.anomaly_maps.shape == (40, 32, 32) and (prediction.anomaly_maps >= 0).all()
    mask = prediction.extras["mask"]
    assert 0.2 < mask.mean() < 0.95 and (prediction.anomaly_maps[mask == 0] == 0).all()  # outlined phantom body
    expected = prediction.anomaly_maps.flatten(1).sum(1) / mask.flatten(1).sum(1)
    torch.testing.assert_close(prediction.scores, expected)
    with torch.no_grad():
        loss, _ = fitted.distance_(prediction.extras["reconstruction"], images)
    assert fitted.foreground_ == "outline"  # resolved once from the training phantoms' dark frames
    fitted.foreground_ = "none"
    try:
        torch.testing.assert_close(fitted.score(images).scores, loss)  # the source's rule: the loss itself
    finally:
        fitted.foreground_ = "outline"


def test_save_load_gives_identical_scores(fitted, test_set, tmp_path) -> None:
    Model(fitted, Preprocessing(resolution=32)).save(tmp_path / "pae")
    loaded = Model.load(tmp_path / "pae", device="cpu").detector
    torch.testing.assert_close(loaded.score(test_set[0]).scores, fitted.score(test_set[0]).scores)
    assert int(loaded.network_.stage) == 2 and loaded.stage_images_ == fitted.stage_images_


def test_tuning_picks_the_grid_point_with_the_best_auroc(normal, test_set) -> None:
    images, labels = test_set
    train = TrainConfig(max_epochs=10, batch_size=32, progress=False, patience=None)
    grid = {"learning_rate": [0.0, 2e-3]}  # lr 0 leaves the autoencoder untrained: a clearly worse point
    result = tune_perceptual_ae(normal[:96], images, labels, params=TINY, grid=grid, train=train)
    aurocs = [trial["auroc"] for trial in result.trials]
    assert [trial["params"] for trial in result.trials] == [{"learning_rate": 0.0}, {"learning_rate": 2e-3}]
    assert result.best_params == result.trials[int(np.argmax(aurocs))]["params"] == {"learning_rate": 2e-3}
    chosen = roc_auc_score(labels, result.detector.score(images).scores.numpy())
    assert chosen == pytest.approx(max(aurocs), abs=1e-6)
    assert result.summary()["n_abnormal"] == 20
    with pytest.raises(ValueError, match="labelled normal and abnormal"):
        tune_perceptual_ae(normal[:8], images[:4], np.zeros(4), params=TINY, grid=grid, train=train)


def test_cli_tune_with_records_the_choice(tmp_path, capsys) -> None:
    data = write_phantom_dataset(tmp_path / "data", n_train=60, n_test_normal=6, n_test_abnormal=6, size=32, seed=4)
    out = tmp_path / "model"
    argv = ["train", str(data), "--method", "perceptual_ae", "--out", str(out), "--resolution", "32",
            "--epochs", "3", "--no-progress", "--tune-with", str(data / "test"),
            "--param", "backbone=tiny", "--param", "width=8", "--param", "latent_dim=16",
            "--param", "pixel_weight=0"]  # fmt: skip
    assert main(argv) == 0
    assert "tuned on" in capsys.readouterr().out
    tuning = json.loads((out / "model.json").read_text())["info"]["tuning"]
    layers = [trial["params"] for trial in tuning["trials"]]
    assert layers == [{"perceptual_layer": "stage2"}, {"perceptual_layer": "stage3"}]
    assert tuning["chosen"] in [trial["params"] for trial in tuning["trials"]]
    assert tuning["n_normal"] == 6 and tuning["n_abnormal"] == 6
    assert main(["train", str(data), "--method", "conv_ae", "--out", str(tmp_path / "x"), "--resolution", "32",
                 "--tune-with", str(data / "test"), "--no-progress"]) == 2  # fmt: skip
    assert "no hyper-parameter search" in capsys.readouterr().err

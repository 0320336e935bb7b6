import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medanomaly.detectors.conv_ae import ConvAutoencoder, ConvAutoencoderNet
from medanomaly.errors import NotFittedError
from medanomaly.mapping import filter_map
from medanomaly.model import Model, Postprocessing
from medanomaly.registry import available, create
from medanomaly.training import TrainConfig, Trainer
from medanomaly.transforms import Preprocessing


@pytest.fixture(scope="module")
def fitted(fitted_conv_ae) -> ConvAutoencoder:
    return fitted_conv_ae


def test_registered() -> None:
    assert "conv_ae" in available()
    assert isinstance(create("conv_ae"), ConvAutoencoder)


def test_network_shapes() -> None:
    net = ConvAutoencoderNet(in_channels=3, resolution=64, depth=4, width=8, latent_dim=10)
    images = torch.rand(2, 3, 64, 64)
    assert net(images).shape == images.shape
    assert net.encode(images).shape == (2, 10)
    mlp = ConvAutoencoderNet(in_channels=1, resolution=32, depth=3, width=4, latent_dim=6, hidden_dim=20)
    small = torch.rand(3, 1, 32, 32)
    assert mlp(small).shape == small.shape and mlp.encode(small).shape == (3, 6)
    with pytest.raises(ValueError, match="divisible"):
        ConvAutoencoderNet(1, 60, depth=3)


def test_ranks_planted_lesions_above_normals(fitted, phantom_test) -> None:
    images, labels, masks = phantom_test
    prediction = fitted.score(images)
    assert roc_auc_score(labels, prediction.scores.numpy()) > 0.8  # plain MAE: lesions are ~1.5 % of the image
    model = Model(fitted, Preprocessing(resolution=32), Postprocessing(score_from="map_topk", median_size=3))
    filtered_scores = [study.score for study in model.score_images(images)]
    assert roc_auc_score(labels, filtered_scores) > 0.9
    maps = prediction.anomaly_maps.numpy()
    assert maps.shape == (len(images), 32, 32)
    peaks_inside = [masks[i].ravel()[filter_map(maps[i], 3).argmax()] > 0 for i in np.flatnonzero(labels == 1)]
    assert np.mean(peaks_inside) >= 0.8


def test_score_is_the_mean_of_the_map_inside_the_foreground(fitted, phantom_test) -> None:
    images = phantom_test[0][:4]
    assert fitted.score_rule == "topk"  # the default: mean of the top 10 % of the foreground
    fitted.score_rule = "mean"
    try:
        prediction = fitted.score(images)
    finally:
        fitted.score_rule = "topk"
    mask = prediction.extras["mask"]
    assert 0.2 < mask.mean() < 0.95  # phantoms: a body on a dark background, outlined
    assert (prediction.anomaly_maps[mask == 0] == 0).all()
    expected = prediction.anomaly_maps.flatten(1).sum(1) / mask.flatten(1).sum(1)
    torch.testing.assert_close(prediction.scores, expected)
    reconstruction = prediction.extras["reconstruction"]
    whole = ((images - reconstruction) ** 2).mean(dim=(1, 2, 3))
    assert fitted.foreground_ == "outline"  # resolved once from the training phantoms' dark frames
    fitted.foreground_, fitted.score_rule = "none", "mean"
    try:
        torch.testing.assert_close(fitted.score(images).scores, whole)  # the source's rule: the whole image
    finally:
        fitted.foreground_, fitted.score_rule = "outline", "topk"


def test_unknown_scoring_settings_fail_before_training(phantom_train) -> None:
    for params, match in (({"foreground": "kidney"}, "available"), ({"score_rule": "max"}, "score_rule")):
        with pytest.raises(ValueError, match=match):
            create("conv_ae", depth=2, width=4, latent_dim=8, **params).fit(
                phantom_train[:8], trainer=Trainer(TrainConfig(max_epochs=1, progress=False))
            )


def test_score_is_deterministic_and_does_not_mutate(fitted, phantom_test) -> None:
    images = phantom_test[0][:8]
    before = {k: v.clone() for k, v in fitted.state_dict().items()}
    first, second = fitted.score(images), fitted.score(images)
    torch.testing.assert_close(first.scores, second.scores)
    for key, value in fitted.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_save_load_gives_identical_scores(fitted, phantom_test, tmp_path) -> None:
    images = phantom_test[0]
    model = Model(fitted, Preprocessing(resolution=32))
    model.save(tmp_path / "m")
    loaded = Model.load(tmp_path / "m", device="cpu")
    assert loaded.detector.get_params() == fitted.get_params()
    torch.testing.assert_close(loaded.detector.score(images).scores, fitted.score(images).scores)


def test_score_before_fit_fails_clearly() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        create("conv_ae").score(torch.rand(1, 1, 32, 32))


def test_wrong_input_shape_is_rejected(fitted) -> None:
    with pytest.raises(ValueError, match="fitted on inputs"):
        fitted.score(torch.rand(1, 1, 64, 64))


def test_same_seed_same_model(phantom_train) -> None:
    config = TrainConfig(max_epochs=2, batch_size=32, progress=False)
    runs = [create("conv_ae", depth=2, width=4, latent_dim=8, random_state=7) for _ in range(2)]
    for run in runs:
        run.fit(phantom_train[:64], trainer=Trainer(config))
    images = phantom_train[:4]
    torch.testing.assert_close(runs[0].score(images).scores, runs[1].score(images).scores)


def test_a_model_saved_before_masks_and_the_mlp_bottleneck_scores_the_whole_image(phantom_train, tmp_path) -> None:
    old = create("conv_ae", depth=2, width=4, latent_dim=8, hidden_dim=0, foreground="none", score_rule="mean")
    old.fit(phantom_train[:32], trainer=Trainer(TrainConfig(max_epochs=1, progress=False)))
    Model(old, Preprocessing(resolution=32)).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    for key in ("hidden_dim", "foreground", "score_rule", "topk_fraction"):  # as an older medanomaly wrote it
        del config["params"][key]
    del config["fitted"]["foreground"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(config))
    loaded = Model.load(tmp_path / "m", device="cpu").detector
    assert (loaded.hidden_dim, loaded.foreground_, loaded.score_rule) == (0, "none", "mean")
    torch.testing.assert_close(loaded.score(phantom_train[:4]).scores, old.score(phantom_train[:4]).scores)

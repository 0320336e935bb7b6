import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.anomalypro import AnomalyPro, MaskGeneratorNet, PatchCriticNet
from medanomaly.detectors.anomalypro.loss import focus_loss, gradient_penalty
from medanomaly.model import Model
from medanomaly.registry import create, detector_class
from medanomaly.training import TrainConfig, Trainer
from medanomaly.transforms import Preprocessing

LESION = (0.09, 0.13)


@pytest.fixture(scope="module")
def fitted() -> AnomalyPro:
    normal, _, _ = make_phantom_set(120, 0, size=32, seed=30)
    mixed, _, _ = make_phantom_set(20, 80, size=32, seed=31, lesion_radius=LESION)  # A: unlabelled, lesion-rich
    detector = create("anomalypro", **AnomalyPro.tiny_params)
    config = TrainConfig(max_epochs=8, batch_size=16, progress=False, patience=None)
    return detector.fit(torch.from_numpy(normal), mixed=torch.from_numpy(mixed), trainer=Trainer(config))


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    images, labels, masks = make_phantom_set(20, 20, size=32, seed=32, lesion_radius=LESION)
    return torch.from_numpy(images), labels, masks


def test_registered_with_its_training_sets() -> None:
    cls = detector_class("anomalypro")
    assert cls is AnomalyPro
    assert cls.needs == frozenset({"normal", "mixed"})
    assert (cls.monitor, cls.monitor_mode) == ("pseudo_auc", "max")


def test_generator_blends_intermediate_and_input_and_starts_near_identity() -> None:
    torch.manual_seed(0)
    net = MaskGeneratorNet(1, width=4, n_down=2, n_res=1).eval()
    images = torch.rand(3, 1, 16, 16)
    translated, intermediate, mask = net(images)
    assert translated.shape == intermediate.shape == images.shape and mask.shape == (3, 1, 16, 16)
    assert mask.min() >= 0 and mask.max() <= 1
    torch.testing.assert_close(translated, mask * intermediate + (1 - mask) * images)
    assert mask.mean() < 0.1  # the mask logit starts at -3: training begins close to x' = x


def test_critic_gives_patches_and_penalty_is_one_for_a_flat_critic() -> None:
    critic = PatchCriticNet(1, width=4, n_layers=2)
    assert critic(torch.rand(2, 1, 32, 32)).shape == (2, 1, 8, 8)
    for parameter in critic.parameters():
        torch.nn.init.zeros_(parameter)  # D is constant: its gradient is 0, so (||grad|| - 1)^2 = 1
    penalty = gradient_penalty(critic, torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32), torch.Generator())
    assert float(penalty.detach()) == pytest.approx(1.0)


def test_focus_loss_prefers_binary_and_sparse_masks() -> None:
    values = {m: float(focus_loss(torch.full((1, 1, 4, 4), m), sparsity=0.5)) for m in (0.0, 0.5, 1.0)}
    assert values[0.0] == pytest.approx(0.0)
    assert values[1.0] == pytest.approx(0.5)
    assert values[0.5] == pytest.approx(0.5)  # 0.25 + 0.5 * 0.5: undecided pixels cost as much as "on"
    assert values[0.0] < values[1.0] <= values[0.5]


def test_outputs_score_map_mask_and_translation(fitted, test_set) -> None:
    images = test_set[0][:6]
    prediction = fitted.score(images)
    translation, mask = prediction.extras["translation"], prediction.extras["mask"]
    assert translation.shape == images.shape and mask.shape == (6, 32, 32)
    torch.testing.assert_close(prediction.anomaly_maps, (images - translation).abs().mean(dim=1))
    torch.testing.assert_close(prediction.scores, prediction.anomaly_maps.flatten(1).mean(dim=1))
    fitted.score_mode = "max"
    try:
        torch.testing.assert_close(fitted.score(images).scores, prediction.anomaly_maps.flatten(1).amax(dim=1))
    finally:
        fitted.score_mode = "mean"


def test_ranks_lesions_above_normals(fitted, test_set) -> None:
    images, labels, _ = test_set
    assert roc_auc_score(labels, fitted.score(images).scores.numpy()) > 0.8


def test_mask_is_near_zero_on_normals_and_covers_lesions_more_than_background(fitted, test_set) -> None:
    images, labels, masks = test_set
    mask = fitted.score(images).extras["mask"].numpy()
    assert mask[labels == 0].mean() < 0.1
    abnormal = labels == 1
    inside = mask[abnormal][masks[abnormal] > 0].mean()
    outside = mask[abnormal][masks[abnormal] == 0].mean()
    assert inside > 1.15 * outside


def test_pseudo_auc_is_recorded_and_chooses_the_checkpoint(fitted) -> None:
    history = fitted.history_.to_dict()
    assert history["monitor"] == "pseudo_auc"
    pseudo = [epoch["pseudo_auc"] for epoch in history["epochs"]]
    assert len(pseudo) == 8 and all(0.0 <= value <= 1.0 for value in pseudo)
    assert history["best_epoch"] == int(np.argmax(pseudo))
    assert history["best_metric"] == pytest.approx(max(pseudo))


def test_held_out_sets_and_too_few_images(fitted) -> None:
    normal, mixed = torch.rand(10, 1, 16, 16), torch.rand(20, 1, 16, 16)
    train, val = fitted.make_datasets(normal, mixed, None, val_fraction=0.1)
    labels = torch.stack([val[i][1] for i in range(len(val))])
    assert int((labels == 0).sum()) == 2 and int((labels == 1).sum()) == 2  # at least 2 of each, whatever the fraction
    assert len(train) == 18
    with pytest.raises(ValueError, match="at least"):
        create("anomalypro", **AnomalyPro.tiny_params).fit(torch.rand(3, 1, 16, 16), mixed=torch.rand(8, 1, 16, 16))


def test_needs_the_mixed_set_and_a_valid_score_mode() -> None:
    with pytest.raises(ValueError, match="mixed"):
        create("anomalypro").fit(torch.rand(8, 1, 16, 16))
    with pytest.raises(ValueError, match="score_mode"):
        create("anomalypro", score_mode="median").fit(torch.rand(8, 1, 16, 16), mixed=torch.rand(8, 1, 16, 16))


def test_save_load_gives_identical_scores_and_masks(fitted, test_set, tmp_path) -> None:
    Model(fitted, Preprocessing(resolution=32)).save(tmp_path / "ap")
    loaded = Model.load(tmp_path / "ap", device="cpu").detector
    first, second = fitted.score(test_set[0]), loaded.score(test_set[0])
    torch.testing.assert_close(second.scores, first.scores)
    torch.testing.assert_close(second.extras["mask"], first.extras["mask"])
    assert loaded.history_["best_epoch"] == fitted.history_.best_epoch


def test_a_resumed_run_keeps_the_critic_step_count(tmp_path) -> None:
    normal, _, _ = make_phantom_set(24, 0, size=16, seed=33)
    mixed, _, _ = make_phantom_set(8, 8, size=16, seed=34)
    params = {**AnomalyPro.tiny_params, "n_critic": 3}
    base = dict(batch_size=8, progress=False, patience=None, checkpoint_dir=str(tmp_path), val_fraction=0.25)
    first = create("anomalypro", **params)
    one_epoch = Trainer(TrainConfig(max_epochs=1, **base))
    first.fit(torch.from_numpy(normal), mixed=torch.from_numpy(mixed), trainer=one_epoch)
    steps_after_one_epoch = first.history_.steps
    assert steps_after_one_epoch > 0
    second = create("anomalypro", **params)
    trainer = Trainer(TrainConfig(max_epochs=2, **base))
    second.fit(torch.from_numpy(normal), mixed=torch.from_numpy(mixed), trainer=trainer)
    assert second.history_.resumed_from_epoch == 1
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert last["history"]["steps"] == 2 * steps_after_one_epoch  # counted on, not restarted at 0

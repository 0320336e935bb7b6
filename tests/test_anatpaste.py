"""anatpaste: organ masks, pasting inside them, the pretext task, and the density score on phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.anatpaste import (
    AnatPaste,
    AnatPasteNet,
    PasteConfig,
    available_organ_masks,
    get_organ_mask,
    organ_masks,
    paste_patches,
    register_organ_mask,
)
from medanomaly.training import TrainConfig, Trainer

SIZE = 32


@pytest.fixture(scope="module")
def phantoms() -> dict[str, torch.Tensor]:
    normal, _, _ = make_phantom_set(160, 0, size=SIZE, seed=30)
    held_out, _, _ = make_phantom_set(48, 0, size=SIZE, seed=31)
    test, labels, _ = make_phantom_set(20, 20, size=SIZE, seed=32, lesion_radius=(0.08, 0.12))
    return {"normal": torch.from_numpy(normal), "held_out": torch.from_numpy(held_out),
            "test": torch.from_numpy(test), "labels": torch.from_numpy(labels)}  # fmt: skip


@pytest.fixture(scope="module")
def fitted(phantoms) -> AnatPaste:
    detector = AnatPaste(**{**AnatPaste.tiny_params})
    config = TrainConfig(**{"progress": False, "patience": None, **AnatPaste.tiny_train, "max_epochs": 8})
    return detector.fit(phantoms["normal"], trainer=Trainer(config))


def test_lung_mask_finds_the_dark_lungs_of_a_phantom() -> None:
    images, _, _ = make_phantom_set(4, 0, size=64, seed=5)
    masks = organ_masks(images, "lung")
    assert masks.shape == (4, 64, 64)
    for image, mask in zip(images[:, 0], masks, strict=True):
        assert 0.1 < mask.mean() < 0.5
        assert image[mask].mean() < 0.35 < image[~mask & (image > 0.1)].mean()  # lungs darker than the body
        assert not mask[0].any() and not mask[:, 0].any()  # not the air around the body


def test_body_mask_and_fallback_to_the_whole_image() -> None:
    image = np.zeros((1, 1, 32, 32), np.float32)
    image[0, 0, 8:24, 6:26] = 0.7
    body = organ_masks(image, "body")[0]
    assert body[16, 16] and not body[0, 0] and body.sum() == pytest.approx(16 * 20, rel=0.2)
    assert organ_masks(np.zeros((1, 1, 32, 32), np.float32), "lung").all()  # nothing found: anywhere


def test_custom_masks_register_by_name() -> None:
    name = "test_left_half"
    if name not in available_organ_masks():
        register_organ_mask(name)(lambda image: np.arange(image.shape[1])[None, :].repeat(image.shape[0], 0) < 16)
    assert organ_masks(np.ones((2, 1, 32, 32), np.float32), name)[:, :, :16].all()
    with pytest.raises(ValueError, match="already registered"):
        register_organ_mask(name)(lambda image: image > 0)
    with pytest.raises(ValueError, match="available"):
        get_organ_mask("kidney")


def test_pasted_patches_change_only_pixels_inside_the_mask(phantoms) -> None:
    images = phantoms["normal"][:24]
    masks = torch.from_numpy(organ_masks(images.numpy(), "lung"))
    pasted, weights = paste_patches(images, masks, torch.Generator().manual_seed(0), PasteConfig(alpha=(0.8, 1.0)))
    changed = (pasted != images).any(dim=1)
    assert changed.any(dim=(1, 2)).float().mean() > 0.8  # nearly every image got a visible patch
    assert not (changed & ~masks).any(), "a pixel outside the organ mask changed"
    assert not ((weights > 0) & ~masks).any()
    assert pasted.min() >= 0 and pasted.max() <= 1


def test_pasting_is_seeded(phantoms) -> None:
    images = phantoms["normal"][:8]
    masks = torch.from_numpy(organ_masks(images.numpy(), "lung"))
    first, _ = paste_patches(images, masks, torch.Generator().manual_seed(4))
    second, _ = paste_patches(images, masks, torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, second)


def test_pretext_classifier_learns_above_chance(fitted, phantoms) -> None:
    images = phantoms["held_out"]
    masks = torch.from_numpy(organ_masks(images.numpy(), "lung"))
    pasted, _ = paste_patches(images, masks, torch.Generator().manual_seed(123), fitted.paste_config)
    with torch.no_grad():
        logits = fitted.network_(torch.cat([images, pasted]))
    labels = np.repeat([0, 1], len(images))
    assert roc_auc_score(labels, logits.numpy()) > 0.6


def test_planted_lesions_rank_above_normals_and_maps_point_at_them(fitted, phantoms) -> None:
    prediction = fitted.score(phantoms["test"])
    assert roc_auc_score(phantoms["labels"].numpy(), prediction.scores.numpy()) > 0.75
    assert prediction.anomaly_maps.shape == (40, SIZE, SIZE)
    assert torch.isfinite(prediction.anomaly_maps).all()


def test_gaussians_are_buffers_in_the_state_dict(fitted) -> None:
    state = fitted.state_dict()
    dim = fitted.network_.image_channels
    assert state["density.image_precision"].shape == (dim, dim)
    assert {"density.image_mean", "density.patch_mean", "density.patch_precision"} <= set(state)
    assert any(key.startswith("network.backbone.") for key in state)  # fine-tuned weights are saved too


def test_layers_before_trainable_from_stay_frozen() -> None:
    net = AnatPasteNet("tiny", trainable_from="stage2")
    before = net.backbone.convs[0].weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    net.train()
    F.binary_cross_entropy_with_logits(net(torch.rand(4, 1, SIZE, SIZE)), torch.ones(4)).backward()
    optimizer.step()
    torch.testing.assert_close(net.backbone.convs[0].weight, before)
    assert net.backbone.convs[1].weight.grad is not None
    assert not net.backbone.convs[0].weight.requires_grad


def test_unknown_organ_mask_fails_before_training(phantoms) -> None:
    with pytest.raises(ValueError, match="organ_mask"):
        AnatPaste(backbone="tiny", organ_mask="spleen").fit(phantoms["normal"][:8], trainer=Trainer(
            TrainConfig(max_epochs=1, progress=False)))


def test_density_layer_chooses_the_pooled_feature_behind_the_score(phantoms) -> None:
    net = AnatPasteNet("tiny", density_layer="stage2")
    local, pooled = net.features(torch.rand(2, 1, SIZE, SIZE), net.density_layer)
    assert pooled.shape == (2, net.density_channels) and net.density_channels == net.backbone.channels["stage2"]
    assert local.shape[1] == net.map_channels
    detector = AnatPaste(**{**AnatPaste.tiny_params, "density_layer": "stage2"})
    detector.fit(phantoms["normal"][:32], trainer=Trainer(TrainConfig(max_epochs=1, progress=False)))
    assert detector.state_dict()["density.image_mean"].shape == (net.density_channels,)
    assert torch.isfinite(detector.score(phantoms["test"][:4]).scores).all()


def test_onnx_scoring_runtime_matches_torch_and_is_saved(phantoms, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MEDANOMALY_CACHE", str(tmp_path / "cache"))
    detector = AnatPaste(**{**AnatPaste.tiny_params, "runtime": "onnx"})
    detector.fit(phantoms["normal"][:32], trainer=Trainer(TrainConfig(max_epochs=1, progress=False)))
    assert detector.fitted_config()["runtime"] == "onnx"
    onnx = detector.score(phantoms["test"][:6])
    assert list((tmp_path / "cache" / "onnx").glob("anatpaste-*.onnx"))  # exported once, into the cache
    detector.runtime_ = "torch"
    eager = detector.score(phantoms["test"][:6])
    torch.testing.assert_close(onnx.scores, eager.scores, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(onnx.anomaly_maps, eager.anomaly_maps, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="runtime must be one of"):
        AnatPaste(**{**AnatPaste.tiny_params, "runtime": "gpu"}).fit(phantoms["normal"][:8])

"""The shared pretrained feature extractor: backbones, weights, frozen behaviour, state dicts, ONNX fast path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.transform import resize
from torch import nn

from medanomaly.features import FeatureExtractor, available_backbones, load_backbone_weights
from medanomaly.features.backbones import build_backbone
from medanomaly.features.fast import onnxruntime_available

_CATS = {281, 282, 283, 284, 285}  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
_COFFEE = {967, 968}  # espresso, cup


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MEDANOMALY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def efficientnet() -> FeatureExtractor:
    return FeatureExtractor("efficientnet_lite0", runtime="torch")


def _photo(image: np.ndarray) -> torch.Tensor:
    array = resize(image, (224, 224), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def test_available_backbones() -> None:
    expected = {"efficientnet_lite0", "efficientnet_lite2", "resnet18", "wide_resnet50_2", "tiny"}
    assert set(available_backbones()) == expected


def test_tiny_shapes_and_grey_replication() -> None:
    extractor = FeatureExtractor("tiny", runtime="torch")
    assert extractor.layers == ("stage2", "stage3")
    grey = torch.rand(2, 1, 32, 32)
    features = extractor(grey)
    assert [tuple(f.shape) for f in features] == [(2, 32, 8, 8), (2, 48, 4, 4)]
    assert extractor.out_channels == [32, 48] and extractor.strides == [4, 8]
    for a, b in zip(features, extractor(grey.expand(-1, 3, -1, -1)), strict=True):
        torch.testing.assert_close(a, b)


def test_tiny_is_identical_across_instances() -> None:
    images = torch.rand(1, 1, 32, 32)
    first, second = FeatureExtractor("tiny", runtime="torch"), FeatureExtractor("tiny", runtime="torch")
    torch.testing.assert_close(first(images)[0], second(images)[0])
    assert first.weights_id == second.weights_id


def test_efficientnet_weights_load_strictly() -> None:
    state = load_backbone_weights("efficientnet_lite0")
    assert len(state) == 296 and "_blocks.0._depthwise_conv.weight" in state and "_fc.weight" in state
    result = build_backbone("efficientnet_lite0").load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_efficientnet_lite2_loads_strictly_and_recognises_photos() -> None:
    state = load_backbone_weights("efficientnet_lite2")
    result = build_backbone("efficientnet_lite2").load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    extractor = FeatureExtractor("efficientnet_lite2", layers=["blocks.14", "head"], runtime="torch")
    assert extractor.out_channels == [120, 1280] and extractor.strides == [16, 32]
    images = torch.cat([_photo(skdata.chelsea()), _photo(skdata.coffee())])
    with torch.no_grad():
        logits = extractor.backbone((images - extractor.mean) / extractor.std)
    assert logits.argmax(1)[0].item() in _CATS and logits.argmax(1)[1].item() in _COFFEE


def test_efficientnet_shapes(efficientnet) -> None:
    features = efficientnet(torch.rand(2, 1, 64, 64))
    assert [tuple(f.shape) for f in features] == [(2, 40, 8, 8), (2, 112, 4, 4)]
    assert efficientnet.out_channels == [40, 112] and efficientnet.strides == [8, 16]
    assert all(torch.isfinite(f).all() for f in features)


def test_efficientnet_recognises_imagenet_photos(efficientnet) -> None:
    backbone = efficientnet.backbone
    images = torch.cat([_photo(skdata.chelsea()), _photo(skdata.coffee())])
    with torch.no_grad():
        logits = backbone((images - efficientnet.mean) / efficientnet.std)
    top5 = logits.topk(5, dim=1).indices.tolist()
    assert logits.argmax(1)[0].item() in _CATS and set(top5[0]) & _CATS
    assert logits.argmax(1)[1].item() in _COFFEE


def test_efficientnet_features_differ_between_images(efficientnet) -> None:
    images = torch.cat([_photo(skdata.chelsea()), _photo(skdata.coffee())])
    with torch.no_grad():
        deep = efficientnet(images)[1]
    assert torch.isfinite(deep).all()
    difference = (deep[0] - deep[1]).abs().mean() / deep.abs().mean()
    assert difference > 0.3


def test_resnets_need_a_weights_file() -> None:
    with pytest.raises(FileNotFoundError, match="weights="):
        FeatureExtractor("resnet18")
    with pytest.raises(FileNotFoundError, match="not found"):
        FeatureExtractor("wide_resnet50_2", weights="/nonexistent/wrn.pth")


@pytest.mark.parametrize(("name", "channels"), [("resnet18", [128, 256]), ("wide_resnet50_2", [512, 1024])])
def test_resnet_shapes_without_weights(name: str, channels: list[int]) -> None:
    with torch.device("meta"):  # shapes only: no memory, no slow initialisation of 69 M parameters
        backbone = build_backbone(name)
        features = backbone.forward_features(torch.empty(1, 3, 64, 64), backbone.default_layers)
    assert backbone.default_layers == ("layer2", "layer3")
    assert [tuple(f.shape) for f in features] == [(1, channels[0], 8, 8), (1, channels[1], 4, 4)]
    assert [backbone.channels[x] for x in backbone.default_layers] == channels
    assert [backbone.strides[x] for x in backbone.default_layers] == [8, 16]


def test_resnet_loads_a_state_dict_file(tmp_path) -> None:
    reference = build_backbone("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    extractor = FeatureExtractor("resnet18", weights=path, runtime="torch")
    torch.testing.assert_close(extractor.backbone.conv1.weight, reference.conv1.weight)
    torch.save({"state_dict": build_backbone("tiny").state_dict()}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not fit"):
        FeatureExtractor("resnet18", weights=tmp_path / "wrong.pth")
    (tmp_path / "garbage.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        FeatureExtractor("resnet18", weights=tmp_path / "garbage.pth")


def test_bad_names_are_explained() -> None:
    with pytest.raises(ValueError, match="available"):
        FeatureExtractor("vgg16")
    with pytest.raises(ValueError, match="choose from"):
        FeatureExtractor("tiny", layers=["layer9"])
    with pytest.raises(ValueError, match="runtime"):
        FeatureExtractor("tiny", runtime="tensorrt")
    with pytest.raises(ValueError, match="expected images"):
        FeatureExtractor("tiny")(torch.rand(1, 2, 32, 32))


def test_backbone_weights_stay_out_of_the_state_dict() -> None:
    parent = nn.ModuleDict({"extractor": FeatureExtractor("tiny", runtime="torch"), "head": nn.Linear(2, 2)})
    state = parent.state_dict()
    assert set(state) == {"head.weight", "head.bias"}
    fresh = nn.ModuleDict({"extractor": FeatureExtractor("tiny", runtime="torch"), "head": nn.Linear(2, 2)})
    fresh.load_state_dict(state, strict=True)  # the backbone entries are filled from the extractor itself
    torch.testing.assert_close(fresh["head"].weight, parent["head"].weight)


def test_frozen_but_differentiable() -> None:
    extractor = FeatureExtractor("tiny", runtime="auto")
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.backbone.training
    images = torch.rand(1, 1, 32, 32, requires_grad=True)
    extractor(images)[1].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime/onnx not installed (extra 'fast')")
def test_onnx_runtime_matches_torch_and_caches(tmp_path) -> None:
    extractor = FeatureExtractor("efficientnet_lite0", runtime="onnx")
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        fast = extractor(images)
        extractor.runtime = "torch"
        slow = extractor(images)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and "3x64x64" in cached[0].name
    stamp = cached[0].stat().st_mtime_ns
    with torch.no_grad():
        FeatureExtractor("efficientnet_lite0", runtime="onnx")(images[:1])
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not exported again

"""The Detector contract, checked for every registered method on phantom data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medanomaly.data.synthetic import make_phantom_set, write_phantom_dataset
from medanomaly.errors import NotFittedError
from medanomaly.evaluation.evaluate import evaluate_model
from medanomaly.model import Model
from medanomaly.pipeline import score_path
from medanomaly.registry import available, detector_class
from medanomaly.thresholds import Threshold
from medanomaly.training import TrainConfig, Trainer
from medanomaly.transforms import Preprocessing

SIZE = 32
LESION = (0.09, 0.13)  # larger nodules than the default: every method, even a weak one, must see them


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    normal, _, _ = make_phantom_set(160, 0, size=SIZE, seed=10)
    mixed, _, _ = make_phantom_set(60, 60, size=SIZE, seed=11, lesion_radius=LESION)
    abnormal, _, _ = make_phantom_set(0, 120, size=SIZE, seed=12, lesion_radius=LESION)
    test, labels, _ = make_phantom_set(20, 20, size=SIZE, seed=13, lesion_radius=LESION)
    as_tensor = torch.from_numpy
    return {
        "normal": as_tensor(normal),
        "mixed": as_tensor(mixed),
        "abnormal": as_tensor(abnormal),
        "test": as_tensor(test),
        "labels": torch.from_numpy(labels),
    }


_FITTED: dict[str, object] = {}


def fitted(name: str, data: dict[str, torch.Tensor]):
    """Fit each method once per module (tiny variant), reused by the checks below."""
    if name not in _FITTED:
        cls = detector_class(name)
        detector = cls(**cls.tiny_params)
        kwargs = {key: data[key] for key in ("mixed", "abnormal") if key in cls.needs}
        train = TrainConfig(**{"progress": False, "patience": None, **cls.tiny_train})
        result = detector.fit(data["normal"], trainer=Trainer(train), **kwargs)
        assert result is detector, "fit must return the detector itself"
        _FITTED[name] = detector
    return _FITTED[name]


@pytest.mark.parametrize("name", available())
def test_score_before_fit_fails_clearly(name: str) -> None:
    cls = detector_class(name)
    with pytest.raises(NotFittedError):
        cls(**cls.tiny_params).score(torch.rand(2, 1, SIZE, SIZE))


@pytest.mark.parametrize("name", available())
def test_scores_and_maps_shapes(name: str, data) -> None:
    detector = fitted(name, data)
    prediction = detector.score(data["test"])
    assert prediction.scores.shape == (len(data["test"]),)
    assert torch.isfinite(prediction.scores).all()
    if prediction.anomaly_maps is not None:
        assert prediction.anomaly_maps.shape == (len(data["test"]), SIZE, SIZE)
        assert torch.isfinite(prediction.anomaly_maps).all()


@pytest.mark.parametrize("name", available())
def test_score_is_deterministic_and_leaves_detector_unchanged(name: str, data) -> None:
    detector = fitted(name, data)
    before = {key: value.clone() for key, value in detector.state_dict().items()}
    first = detector.score(data["test"][:8])
    second = detector.score(data["test"][:8])
    torch.testing.assert_close(first.scores, second.scores)
    after = detector.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key])


@pytest.mark.parametrize("name", available())
def test_planted_lesions_score_above_normals(name: str, data) -> None:
    detector = fitted(name, data)
    scores = detector.score(data["test"]).scores.numpy()
    assert roc_auc_score(data["labels"].numpy(), scores) > 0.75


@pytest.mark.parametrize("name", available())
def test_save_load_reproduces_scores(name: str, data, tmp_path) -> None:
    detector = fitted(name, data)
    Model(detector, Preprocessing(resolution=SIZE)).save(tmp_path / name)
    loaded = Model.load(tmp_path / name, device="cpu").detector
    np.testing.assert_allclose(
        loaded.score(data["test"]).scores.numpy(), detector.score(data["test"]).scores.numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.fixture(scope="module")
def png_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("png"), 0, 3, 3, size=SIZE, seed=14)


@pytest.mark.parametrize("name", available())
def test_evaluate_gives_the_scores_of_score(name: str, data, png_set: Path) -> None:
    """`medanomaly evaluate` (studies batched together) and `medanomaly score` (one at a time): the same numbers."""
    model = Model(fitted(name, data), Preprocessing(resolution=SIZE), threshold=Threshold(0.0, "fixed"))
    evaluated = evaluate_model(model, png_set, split="test", progress=False)
    one_by_one = [score_path(model, path).score for path in evaluated.paths]
    assert len(one_by_one) == 6
    np.testing.assert_allclose(evaluated.scores, one_by_one, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", available())
def test_training_twice_with_the_same_seed_gives_the_same_scores(name: str, data) -> None:
    first = fitted(name, data)
    cls = detector_class(name)
    kwargs = {key: data[key] for key in ("mixed", "abnormal") if key in cls.needs}
    train = TrainConfig(**{"progress": False, "patience": None, **cls.tiny_train})
    second = cls(**cls.tiny_params).fit(data["normal"], trainer=Trainer(train), **kwargs)
    torch.testing.assert_close(second.score(data["test"]).scores, first.score(data["test"]).scores, rtol=0, atol=0)


@pytest.mark.parametrize("name", available())
def test_fit_rejects_unknown_options(name: str, data) -> None:
    cls = detector_class(name)
    kwargs = {key: data[key][:8] for key in ("mixed", "abnormal") if key in cls.needs}
    with pytest.raises(TypeError, match="max_epochs"):
        cls(**cls.tiny_params).fit(data["normal"][:8], max_epochs=3, **kwargs)

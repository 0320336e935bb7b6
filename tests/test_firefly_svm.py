"""firefly_svm: texture features, the seeded Firefly search, and the pickle-free rebuilt SVM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.firefly_svm import FireflySvm, SvmNet, TextureFeatures, firefly_search
from medanomaly.io import read_study
from medanomaly.registry import create
from medanomaly.transforms import Preprocessing

SIZE = 32
LESION = (0.09, 0.13)


@pytest.fixture(scope="module")
def phantoms() -> dict[str, torch.Tensor]:
    normal, _, _ = make_phantom_set(60, 0, size=SIZE, seed=20)
    abnormal, _, _ = make_phantom_set(0, 60, size=SIZE, seed=21, lesion_radius=LESION)
    test, labels, _ = make_phantom_set(20, 20, size=SIZE, seed=22, lesion_radius=LESION)
    return {"normal": torch.from_numpy(normal), "abnormal": torch.from_numpy(abnormal),
            "test": torch.from_numpy(test), "labels": torch.from_numpy(labels)}  # fmt: skip


@pytest.fixture(scope="module")
def fitted(phantoms) -> FireflySvm:
    detector = create("firefly_svm", **FireflySvm.tiny_params)
    return detector.fit(phantoms["normal"], abnormal=phantoms["abnormal"])


def test_features_are_finite_named_and_stable(phantoms) -> None:
    extractor = TextureFeatures(image_size=SIZE, hog_cells=2)
    first = extractor(phantoms["test"][:6])
    second = extractor(phantoms["test"][:6].clone())
    assert first.shape == (6, len(extractor.names))
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first[0], first[-1]), "a normal and a lesion phantom must not share a feature vector"


def test_features_of_a_flat_image_are_finite() -> None:
    values = TextureFeatures(image_size=SIZE, hog_cells=2)(torch.full((1, 1, SIZE, SIZE), 0.5))
    assert np.isfinite(values).all()


def test_features_do_not_change_when_the_file_is_read_again(tmp_path, phantoms) -> None:
    pixels = np.round(phantoms["test"][25, 0].numpy() * 255).astype(np.uint8)
    path = tmp_path / "case.png"
    Image.fromarray(pixels).save(path)
    preprocessing, extractor = Preprocessing(resolution=SIZE), TextureFeatures(image_size=SIZE, hog_cells=2)
    reads = [extractor(torch.from_numpy(preprocessing.apply(read_study(path))[0])) for _ in range(2)]
    np.testing.assert_array_equal(reads[0], reads[1])


def test_search_is_seeded(phantoms) -> None:
    extractor = TextureFeatures(image_size=SIZE, hog_cells=2)
    features = StandardScaler().fit_transform(extractor(torch.cat([phantoms["normal"], phantoms["abnormal"]])))
    labels = np.repeat([0, 1], 60)
    runs = [firefly_search(features, labels, population_size=4, n_iterations=2, max_evaluations=10, random_state=3)
            for _ in range(2)]  # fmt: skip
    np.testing.assert_array_equal(runs[0].selected, runs[1].selected)
    assert (runs[0].C, runs[0].gamma) == (runs[1].C, runs[1].gamma)
    assert 1 <= runs[0].n_evaluations <= 10
    assert runs[0].selected.any()


def test_detector_beats_a_constant_predictor(fitted, phantoms) -> None:
    prediction = fitted.score(phantoms["test"])
    labels = phantoms["labels"].numpy()
    accuracy = float(((prediction.scores.numpy() >= 0.5) == labels).mean())
    assert accuracy > max(labels.mean(), 1 - labels.mean()) + 0.2
    assert prediction.anomaly_maps is None
    torch.testing.assert_close(prediction.extras["probabilities"].sum(dim=1), torch.ones(len(labels)))


def test_rebuilt_svm_equals_sklearn_probabilities() -> None:
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (80, 6)), rng.normal(1.2, 1, (70, 6))]) * [1, 2, 3, 4, 5, 6]
    labels = np.repeat([0, 1], [80, 70])
    selected = np.array([True, False, True, True, False, True])
    scaler = StandardScaler().fit(features)
    scaled = scaler.transform(features)[:, selected]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    svm = CalibratedClassifierCV(SVC(C=3.0, gamma=0.2), method="sigmoid", cv=folds, ensemble=False)
    svm.fit(scaled, labels)
    net = SvmNet(6, int(selected.sum()), len(svm.calibrated_classifiers_[0].estimator.support_vectors_))
    net.load_svc(scaler, selected, svm)
    decision, probability = net(torch.from_numpy(features))
    svc = svm.calibrated_classifiers_[0].estimator
    np.testing.assert_allclose(decision.numpy(), svc.decision_function(scaled), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(probability.numpy(), svm.predict_proba(scaled)[:, 1], rtol=1e-9, atol=1e-9)


def test_fitted_detector_matches_its_sklearn_model_on_training_data(phantoms) -> None:
    detector = FireflySvm(**FireflySvm.tiny_params)
    detector.fit(phantoms["normal"][:30], abnormal=phantoms["abnormal"][:30])
    images = torch.cat([phantoms["normal"][:30], phantoms["abnormal"][:30]])
    features = detector.feature_extractor(images)
    net = detector.network_
    scaled = ((features - net.scaler_mean.numpy()) / net.scaler_scale.numpy())[:, net.selected.numpy()]
    rebuilt = SvmNet(*_sizes(net))
    rebuilt.load_state_dict(net.state_dict())
    torch.testing.assert_close(rebuilt(torch.from_numpy(features))[1], net(torch.from_numpy(features))[1])
    scores = detector.score(images).scores.double().numpy()
    # the same probabilities from scratch: an sklearn SVC with the stored hyper-parameters on the stored features
    svm = CalibratedClassifierCV(SVC(C=detector.search_["C"], gamma=detector.search_["gamma"], class_weight="balanced"),
                                 method="sigmoid", cv=StratifiedKFold(5, shuffle=True, random_state=0), ensemble=False)
    svm.fit(scaled, np.repeat([0, 1], 30))
    np.testing.assert_allclose(scores, svm.predict_proba(scaled)[:, 1], atol=1e-6)


def test_fit_without_abnormal_images_fails_clearly(phantoms) -> None:
    with pytest.raises(ValueError, match="abnormal"):
        FireflySvm(**FireflySvm.tiny_params).fit(phantoms["normal"])


def test_search_records_what_it_chose(fitted) -> None:
    config = fitted.fitted_config()
    assert config["n_selected"] == len(config["search"]["selected"]) >= 1
    assert config["search"]["C"] > 0 and config["search"]["gamma"] > 0
    assert set(fitted.state_dict()) >= {"svm.support_vectors", "svm.dual_coef", "svm.platt_a", "svm.selected"}


def _sizes(net: SvmNet) -> tuple[int, int, int]:
    return len(net.selected), net.support_vectors.shape[1], len(net.support_vectors)

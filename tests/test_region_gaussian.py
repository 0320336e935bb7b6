"""Region Gaussians: region statistics against scikit-learn, ranking, jitter, standardisation, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.region_gaussian import RegionGaussian, acquisition_jitter
from medanomaly.detectors.region_gaussian.detector import _fit_gaussians
from medanomaly.model import Model
from medanomaly.registry import available, create
from medanomaly.transforms import Preprocessing

TINY = RegionGaussian.tiny_params


@pytest.fixture(scope="module")
def phantoms() -> dict[str, torch.Tensor]:
    normal, _, _ = make_phantom_set(80, 0, size=32, seed=40)
    test, labels, _ = make_phantom_set(20, 20, size=32, seed=41, lesion_radius=(0.1, 0.15))
    return {"normal": torch.from_numpy(normal), "test": torch.from_numpy(test), "labels": torch.from_numpy(labels)}


@pytest.fixture(scope="module")
def fitted(phantoms) -> RegionGaussian:
    return create("region_gaussian", **TINY).fit(phantoms["normal"])


def test_region_gaussians_match_ledoit_wolf_and_scipy() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 3, 5)) @ rng.normal(size=(5, 5)) + 2.0  # 50 images, 3 regions, 5 channels
    model = _fit_gaussians(features)
    query = rng.normal(size=(4, 3, 5)) + 2.0
    distances = model(torch.from_numpy(query).float()).numpy()
    for region in range(3):
        estimate = LedoitWolf().fit(features[:, region])
        for row in range(4):
            expected = mahalanobis(query[row, region], estimate.location_, estimate.precision_)
            assert distances[row, region] == pytest.approx(expected, rel=1e-4)


def test_registered_and_ranks_lesions_above_normals(fitted, phantoms) -> None:
    assert "region_gaussian" in available()
    prediction = fitted.score(phantoms["test"])
    assert prediction.anomaly_maps.shape == (40, 32, 32)
    assert torch.isfinite(prediction.scores).all()
    assert roc_auc_score(phantoms["labels"].numpy(), prediction.scores.numpy()) > 0.8


def test_held_out_normals_are_standardised(fitted, phantoms) -> None:
    normal, _, _ = make_phantom_set(60, 0, size=32, seed=42)
    scores = fitted.score(torch.from_numpy(normal)).scores
    assert abs(float(scores.mean())) < 1.0  # standardised: unseen normals sit near 0, not at the raw distance
    assert float(fitted.standardiser_.scale.min()) > 0


def test_jitter_is_seeded_bounded_and_changes_images(phantoms) -> None:
    images = phantoms["normal"][:8]
    first = acquisition_jitter(images, torch.Generator().manual_seed(3))
    again = acquisition_jitter(images, torch.Generator().manual_seed(3))
    other = acquisition_jitter(images, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == images.shape and float(first.min()) >= 0 and float(first.max()) <= 1
    assert float((first - images).abs().mean()) > 0.01


def test_same_seed_same_scores_and_roundtrip(tmp_path, fitted, phantoms) -> None:
    again = create("region_gaussian", **TINY).fit(phantoms["normal"])
    scores = fitted.score(phantoms["test"]).scores
    assert torch.equal(again.score(phantoms["test"]).scores, scores)
    Model(fitted, Preprocessing(resolution=32)).save(tmp_path / "rg")
    loaded = Model.load(tmp_path / "rg", device="cpu").detector
    torch.testing.assert_close(loaded.score(phantoms["test"]).scores, scores)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"augment_copies": -1}, "augment_copies"), ({"holdout": 1.0}, "holdout"), ({"regions": {"stage2": 0}}, ">= 1")],
)
def test_bad_settings_are_explained(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        create("region_gaussian", **{**TINY, **params}).fit(torch.rand(6, 1, 32, 32))

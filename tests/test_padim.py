"""PaDiM: Gaussian statistics and Mahalanobis distances against numpy/scipy, ranking, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis
from sklearn.metrics import roc_auc_score

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.padim import GaussianAccumulator, GaussianModel, Padim
from medanomaly.model import Model
from medanomaly.registry import available, create
from medanomaly.transforms import Preprocessing

TINY = {"backbone": "tiny", "runtime": "torch", "n_features": 24}


@pytest.fixture(scope="module")
def phantoms() -> dict[str, torch.Tensor]:
    normal, _, _ = make_phantom_set(120, 0, size=32, seed=30)
    test, labels, _ = make_phantom_set(20, 20, size=32, seed=31, lesion_radius=(0.08, 0.12))
    return {"normal": torch.from_numpy(normal), "test": torch.from_numpy(test), "labels": torch.from_numpy(labels)}


@pytest.fixture(scope="module")
def fitted(phantoms) -> Padim:
    return create("padim", **TINY).fit(phantoms["normal"])


def _embeddings(seed: int = 0, n: int = 60, positions: int = 3, dim: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(positions, dim, dim, generator=generator)
    noise = torch.randn(n, positions, dim, generator=generator)
    return torch.einsum("pij,npj->npi", mixing, noise) + 5.0  # correlated features, away from the origin


def test_statistics_match_numpy_over_several_batches() -> None:
    embeddings = _embeddings()
    accumulator = GaussianAccumulator(3, 4)
    for start in range(0, 60, 25):  # uneven batches
        accumulator.update(embeddings[start : start + 25])
    mean, covariance = accumulator.finalize(epsilon=0.01)
    data = embeddings.double().numpy()
    for position in range(3):
        np.testing.assert_allclose(mean[position].numpy(), data[:, position].mean(0), rtol=1e-6, atol=1e-8)
        expected = np.cov(data[:, position], rowvar=False) + 0.01 * np.eye(4)
        np.testing.assert_allclose(covariance[position].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mahalanobis_matches_scipy() -> None:
    train, test = _embeddings(seed=1), _embeddings(seed=2, n=7) * 1.3
    accumulator = GaussianAccumulator(3, 4)
    accumulator.update(train)
    mean, covariance = accumulator.finalize(epsilon=0.01)
    model = GaussianModel(3, 4)
    model.set(mean, covariance)
    distances = model(test)
    assert distances.shape == (7, 3)
    for position in range(3):
        inverse = np.linalg.inv(covariance[position].numpy())
        expected = [mahalanobis(x, mean[position].numpy(), inverse) for x in test[:, position].double().numpy()]
        np.testing.assert_allclose(distances[:, position].numpy(), expected, rtol=1e-4)


def test_too_few_images_for_a_covariance() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        GaussianAccumulator(3, 4).finalize(0.01)
    with pytest.raises(ValueError, match="at least 2"):
        create("padim", **TINY).fit(torch.rand(1, 1, 32, 32))


def test_registered() -> None:
    assert "padim" in available()
    assert isinstance(create("padim"), Padim)


def test_ranks_planted_lesions_above_normals(fitted, phantoms) -> None:
    prediction = fitted.score(phantoms["test"])
    assert roc_auc_score(phantoms["labels"].numpy(), prediction.scores.numpy()) > 0.85
    assert prediction.anomaly_maps.shape == (40, 32, 32)
    torch.testing.assert_close(prediction.scores, prediction.anomaly_maps.flatten(1).amax(1))  # topk = 1: max


def test_channel_choice_is_seeded_and_saved(fitted, phantoms) -> None:
    index = fitted.channels_.index
    assert len(index) == 24 and len(set(index.tolist())) == 24 and torch.all(index[1:] > index[:-1])
    assert int(index.max()) < 16 + 32 + 48  # tiny stage1..3 channels
    again = create("padim", **TINY).fit(phantoms["normal"][:10])
    assert torch.equal(again.channels_.index, index)
    other = create("padim", **{**TINY, "random_state": 5}).fit(phantoms["normal"][:10])
    assert not torch.equal(other.channels_.index, index)


def test_topk_score_is_a_mean_of_the_largest_pixels(fitted, phantoms) -> None:
    topk = Padim(**{**fitted.get_params(), "topk": 10})
    topk.restore(fitted.fitted_config(), fitted.state_dict())
    prediction = topk.score(phantoms["test"][:3])
    expected = prediction.anomaly_maps.flatten(1).topk(10, dim=1).values.mean(1)
    torch.testing.assert_close(prediction.scores, expected)


def test_saves_only_fitted_tensors_and_reloads(fitted, phantoms, tmp_path) -> None:
    assert set(fitted.state_dict()) == {"gaussian.mean", "gaussian.whitening", "channels.index"}
    assert fitted.gaussian_.mean.shape == (16 * 16, 24)  # stage1 grid at 32 px
    Model(fitted, Preprocessing(resolution=32)).save(tmp_path / "padim")
    loaded = Model.load(tmp_path / "padim", device="cpu").detector
    torch.testing.assert_close(loaded.score(phantoms["test"]).scores, fitted.score(phantoms["test"]).scores)

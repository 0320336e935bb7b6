"""PatchCore on phantoms with the tiny backbone: ranking, exact bounded searches, re-weighting, persistence."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from medanomaly.data.synthetic import make_phantom_set
from medanomaly.detectors.patchcore import MemoryBank, PatchCore, nearest
from medanomaly.detectors.patchcore.cells import faiss_available, train_centroids
from medanomaly.model import Model
from medanomaly.registry import available, create
from medanomaly.transforms import Preprocessing

TINY = {"backbone": "tiny", "runtime": "torch", "coreset_ratio": 0.2}
needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss (the fast extra) is not installed")


@pytest.fixture(scope="module")
def phantoms() -> dict[str, torch.Tensor]:
    normal, _, _ = make_phantom_set(120, 0, size=32, seed=20)
    test, labels, masks = make_phantom_set(20, 20, size=32, seed=21, lesion_radius=(0.08, 0.12))
    return {"normal": torch.from_numpy(normal), "test": torch.from_numpy(test), "labels": torch.from_numpy(labels)}


@pytest.fixture(scope="module")
def fitted(phantoms) -> PatchCore:
    return create("patchcore", coarse_size=64, **TINY).fit(phantoms["normal"])


def test_registered() -> None:
    assert "patchcore" in available()
    assert isinstance(create("patchcore"), PatchCore)


def test_bank_is_the_requested_fraction_of_patches(fitted, phantoms) -> None:
    n_patches = len(phantoms["normal"]) * 8 * 8  # tiny stage2 grid at 32 px
    assert fitted.memory_.bank.shape == (math.ceil(0.2 * n_patches), 32 + 48)
    assert fitted.feature_shape_ == (8, 8)


def test_ranks_planted_lesions_above_normals(fitted, phantoms) -> None:
    prediction = fitted.score(phantoms["test"])
    assert roc_auc_score(phantoms["labels"].numpy(), prediction.scores.numpy()) > 0.85
    assert prediction.anomaly_maps.shape == (40, 32, 32)


def _with_search(fitted: PatchCore, search: str) -> PatchCore:
    other = PatchCore(**{**fitted.get_params(), "search": search})
    return other.restore(fitted.fitted_config(), fitted.state_dict())


@pytest.mark.parametrize("search", ["bounded", pytest.param("cells", marks=needs_faiss)])
def test_bounded_searches_give_the_exact_scores(fitted, phantoms, search: str) -> None:
    assert _with_search(fitted, search)._search_mode(torch.device("cpu")) == search
    images = phantoms["test"]
    bounded_prediction, exact_prediction = (
        _with_search(fitted, search).score(images),
        _with_search(fitted, "exact").score(images),
    )
    torch.testing.assert_close(bounded_prediction.scores, exact_prediction.scores)
    assert (bounded_prediction.anomaly_maps >= exact_prediction.anomaly_maps - 1e-4).all()  # upper bounds elsewhere


def test_bounded_search_is_exact_at_each_image_maximum() -> None:
    generator = torch.Generator().manual_seed(0)
    bank = MemoryBank(500, 6)
    bank.bank.copy_(torch.randn(500, 6, generator=generator))
    patches = torch.randn(4, 30, 6, generator=generator) * 1.5
    bounded, exact = bank.search_bounded(patches, n_coarse=20), bank.search_exact(patches)
    torch.testing.assert_close(bounded.distances.amax(1), exact.distances.amax(1))
    assert (bounded.distances >= exact.distances - 1e-5).all()
    rows = torch.arange(4)
    top = bounded.max_patch()
    torch.testing.assert_close(bounded.indices[rows, top], exact.indices[rows, top])
    assert bounded.exact.sum() < bounded.exact.numel()  # it did skip work


@needs_faiss
def test_cell_search_is_tight_and_exact_at_each_image_maximum() -> None:
    generator = torch.Generator().manual_seed(2)
    bank = MemoryBank(2000, 8, n_cells=32)
    bank.bank.copy_(torch.randn(2000, 8, generator=generator))
    bank.centroids.copy_(train_centroids(bank.bank, 32, seed=0))
    patches = torch.randn(4, 50, 8, generator=generator) * 1.5
    cells, exact = bank.search_cells(patches, n_probe=4), bank.search_exact(patches)
    torch.testing.assert_close(cells.distances.amax(1), exact.distances.amax(1))
    assert (cells.distances >= exact.distances - 1e-4).all()
    coarse = bank.search_bounded(patches, n_coarse=32)  # as many rows as cells: the cells' bounds are tighter
    assert (cells.distances - exact.distances).mean() < (coarse.distances - exact.distances).mean()
    assert cells.exact.sum() < cells.exact.numel()


def test_a_bank_without_cells_refuses_the_cell_search() -> None:
    with pytest.raises(RuntimeError, match="no IVF cells"):
        MemoryBank(10, 3).search_cells(torch.zeros(1, 2, 3), n_probe=1)


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_matches_cdist(k: int) -> None:
    generator = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(50, 7, generator=generator), torch.randn(300, 7, generator=generator)
    distances, indices = nearest(queries, keys, k=k)
    expected = torch.cdist(queries.double(), keys.double()).topk(k, dim=1, largest=False)
    torch.testing.assert_close(distances.double(), expected.values, rtol=1e-4, atol=1e-4)
    assert torch.equal(indices, expected.indices)


def test_without_reweighting_the_score_is_the_largest_patch_distance(fitted, phantoms) -> None:
    plain = PatchCore(**{**fitted.get_params(), "num_neighbors": 1, "sigma": 0.0})
    plain.restore(fitted.fitted_config(), fitted.state_dict())
    images = phantoms["test"][:6]
    patches, _ = plain._embed(images)
    exact = plain.memory_.search_exact(patches).distances.amax(dim=1)
    torch.testing.assert_close(plain.score(images).scores, exact)
    reweighted = fitted.score(images).scores
    assert (reweighted <= exact + 1e-6).all() and (reweighted > 0).all()  # Eq. 7's weight lies in (0, 1]


@needs_faiss  # the IVF cells are part of the fitted state only when faiss trained them
def test_saves_only_fitted_tensors_and_reloads(fitted, phantoms, tmp_path) -> None:
    state = fitted.state_dict()
    assert set(state) == {"memory.bank", "projection.matrix", "memory.centroids"}
    Model(fitted, Preprocessing(resolution=32)).save(tmp_path / "pc")
    loaded = Model.load(tmp_path / "pc", device="cpu").detector
    torch.testing.assert_close(loaded.score(phantoms["test"]).scores, fitted.score(phantoms["test"]).scores)


@needs_faiss
def test_the_saved_model_keeps_the_search_and_runtime_it_was_fitted_with(fitted, phantoms, tmp_path, monkeypatch):
    Model(fitted, Preprocessing(resolution=32)).save(tmp_path / "pc")
    assert (fitted.search_mode_, fitted.fitted_config()["runtime"]) == ("cells", "torch")
    expected = fitted.score(phantoms["test"]).scores
    import medanomaly.detectors.patchcore.detector as module

    monkeypatch.setattr(module, "faiss_available", lambda: False)  # scored where faiss is missing: no silent switch
    loaded = Model.load(tmp_path / "pc", device="cpu").detector
    with pytest.raises(ValueError, match="faiss"):
        loaded.score(phantoms["test"][:2])
    loaded.search = "bounded"  # an explicit choice: the same image scores, looser maps
    torch.testing.assert_close(loaded.score(phantoms["test"]).scores, expected)


def test_changed_backbone_weights_are_refused(fitted) -> None:
    config = {**fitted.fitted_config(), "backbone_weights": "tiny:0000000000000000"}
    with pytest.raises(ValueError, match="backbone weights differ"):
        PatchCore(**fitted.get_params()).restore(config, fitted.state_dict())


def test_embedding_projection_and_full_bank(phantoms) -> None:
    detector = create("patchcore", **{**TINY, "coreset_ratio": 1.0, "embedding_dim": 16}).fit(phantoms["normal"][:20])
    assert detector.memory_.bank.shape == (20 * 64, 16)
    assert detector.projection_.matrix.shape == (80, 16)
    assert torch.isfinite(detector.score(phantoms["test"][:4]).scores).all()


@pytest.mark.parametrize(
    ("param", "value"), [("coreset_ratio", 0.0), ("search", "approximate"), ("sigma", -1.0), ("n_probe", 0)]
)
def test_bad_hyper_parameters_fail_at_fit(param: str, value, phantoms) -> None:
    detector = create("patchcore", **{**TINY, param: value})  # __init__ does not validate
    with pytest.raises(ValueError, match=param):
        detector.fit(phantoms["normal"][:4])

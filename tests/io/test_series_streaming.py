"""A long series is read into one compact array and scored in chunks, with the same scores as in one piece (#11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medanomaly.io import read_study, validate
from medanomaly.model import Model, Postprocessing
from medanomaly.pipeline import score_study
from medanomaly.registry import create
from medanomaly.thresholds import Threshold
from medanomaly.training import TrainConfig, Trainer
from medanomaly.transforms import Preprocessing
from medanomaly.transforms import preprocessing as preprocessing_module
from medanomaly.types import Study


@pytest.fixture(scope="module")
def model() -> Model:
    torch.manual_seed(0)
    detector = create("conv_ae", depth=2, width=4, latent_dim=8)
    detector.fit(torch.rand(8, 1, 16, 16), trainer=Trainer(TrainConfig(max_epochs=1, batch_size=4, progress=False)))
    return Model(detector, Preprocessing(resolution=16, window="-200,800"), Postprocessing(median_size=3),
                 Threshold(0.5, "fixed"))


def _same(a, b) -> None:
    assert a.score == b.score
    np.testing.assert_array_equal(a.slice_scores, b.slice_scores)
    np.testing.assert_array_equal(a.anomaly_maps, b.anomaly_maps)
    np.testing.assert_array_equal(a.images, b.images)
    assert [f.to_dict() for f in a.findings] == [f.to_dict() for f in b.findings]


def test_chunked_scoring_equals_scoring_in_one_piece(ct_series, model, monkeypatch):
    study = read_study(ct_series.folder)
    whole = score_study(model, study)
    monkeypatch.setattr(preprocessing_module, "CHUNK", 2)  # 5 slices: chunks of 2, 2, 1
    chunked = score_study(model, study)
    _same(whole, chunked)
    assert chunked.images.shape == (5, 1, 16, 16)


def test_compact_int16_volume_scores_as_its_float32_copy(ct_series, model):
    study = read_study(ct_series.folder)
    assert study.pixels.dtype == np.int16
    as_float = Study(study.pixels.astype(np.float32), dict(study.meta))
    _same(score_study(model, study), score_study(model, as_float))


def test_series_outside_int16_becomes_float32_once(tmp_path, write_dicom):
    """A slice whose HU do not fit int16 turns the volume float32, with every value exact."""
    folder = tmp_path / "series"
    values = [np.full((4, 4), 100, np.uint16), np.full((4, 4), 40000, np.uint16), np.full((4, 4), 7, np.uint16)]
    for index, stored in enumerate(values):
        write_dicom(folder / f"{index}.dcm", stored, InstanceNumber=index + 1, RescaleIntercept=-1024,
                    RescaleSlope=1, ImagePositionPatient=[0, 0, index], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    study = read_study(folder)
    assert study.pixels.dtype == np.float32
    np.testing.assert_array_equal(study.pixels[:, 0, 0], [100 - 1024, 40000 - 1024, 7 - 1024])


def test_voxel_limit_counts_a_compact_series_at_two_bytes(ct_series, monkeypatch):
    """5x16x16 = 1,280 values: refused at a float32 limit of 500 values, read at 640 (1,280 int16 values)."""
    monkeypatch.setenv(validate.MAX_VOXELS_ENV, "500")
    with pytest.raises(validate.InputError, match="above the limit of 1,000"):
        read_study(ct_series.folder)
    monkeypatch.setenv(validate.MAX_VOXELS_ENV, "640")
    assert read_study(ct_series.folder).pixels.shape == (5, 16, 16)

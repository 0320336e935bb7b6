import json
import shutil

import pytest

from medanomaly.errors import ModelError
from medanomaly.model import Model
from medanomaly.thresholds import Threshold


@pytest.fixture
def model_copy(trained_model_dir, tmp_path):
    return shutil.copytree(trained_model_dir, tmp_path / "model")


def test_load_restores_threshold_and_postprocessing(model_copy) -> None:
    model = Model.load(model_copy, device="cpu")
    assert model.method == "conv_ae"
    assert model.threshold is not None and model.threshold.n_normal > 0
    assert model.postprocessing.region_threshold is not None
    assert model.version == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "weights.pt").unlink(), "not a model directory"),
        (lambda d: (d / "model.json").write_text("{broken"), "corrupt model config"),
        (lambda d: (d / "weights.pt").write_bytes(b"garbage"), "cannot load the weights"),
    ],
)
def test_damaged_model_directories_fail_clearly(model_copy, damage, message) -> None:
    damage(model_copy)
    with pytest.raises(ModelError, match=message):
        Model.load(model_copy)


def test_unknown_method_and_newer_format(model_copy) -> None:
    config = json.loads((model_copy / "model.json").read_text())
    (model_copy / "model.json").write_text(json.dumps({**config, "method": "magic"}))
    with pytest.raises(ModelError, match="unknown method 'magic'"):
        Model.load(model_copy)
    (model_copy / "model.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ModelError, match="newer medanomaly"):
        Model.load(model_copy)


def test_new_threshold_is_a_new_version(model_copy, tmp_path) -> None:
    model = Model.load(model_copy)
    newer = model.with_threshold(Threshold(0.5, "fixed", {"target": 0.5}))
    assert newer.version == 2 and newer.info["parent_version"] == 1
    newer.save(tmp_path / "v2")
    assert Model.load(tmp_path / "v2").threshold.value == 0.5
    assert Model.load(model_copy).version == 1

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medanomaly.data import fingerprint, load_images, load_index
from medanomaly.errors import InputError
from medanomaly.fitting import FitOptions, plan_training
from medanomaly.transforms import Preprocessing


def _png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12), value, np.uint8)).save(path)
    return path


def test_split_label_layout(tmp_path: Path) -> None:
    for split, label, n in (("train", "Normal", 3), ("test", "Normal", 2), ("test", "TB", 2)):
        for i in range(n):
            _png(tmp_path / split / label / f"{i}.png")
    index = load_index(tmp_path)
    assert index.normal_label == "Normal"
    assert index.splits == ["test", "train"]
    assert len(index.select(split="test", normal=False)) == 2
    assert index.class_names() == ["Normal", "TB"]


def test_label_only_layout_and_explicit_normal_label(tmp_path: Path) -> None:
    _png(tmp_path / "healthy" / "a.png")
    _png(tmp_path / "sick" / "b.png")
    index = load_index(tmp_path, normal_label="healthy")
    assert index.splits == []
    assert [s.label for s in index.samples] == ["healthy", "sick"]
    with pytest.raises(InputError, match="--normal-label"):
        load_index(tmp_path)


def test_manifest_csv(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png")
    (tmp_path / "list.csv").write_text("path,label,split\nimgs/a.png,NORMAL,train\nimgs/b.png,CANCER,test\n")
    index = load_index(tmp_path / "list.csv")
    assert index.layout == "manifest"
    assert index.select(split="test")[0].label == "CANCER"
    (tmp_path / "bad.csv").write_text("file,class\nimgs/a.png,NORMAL\n")
    with pytest.raises(InputError, match="lacks column"):
        load_index(tmp_path / "bad.csv")


def test_load_images_skips_and_reports_bad_files(tmp_path: Path) -> None:
    _png(tmp_path / "NORMAL" / "a.png")
    (tmp_path / "NORMAL" / "b.png").write_bytes(b"not a png")
    index = load_index(tmp_path)
    loaded = load_images(index.samples, Preprocessing(resolution=16), progress=False)
    assert loaded.images.shape == (1, 1, 16, 16)
    assert [Path(f.path).name for f in loaded.failures] == ["b.png"]


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    path = _png(tmp_path / "NORMAL" / "a.png")
    before = fingerprint(load_index(tmp_path).samples)
    assert before == fingerprint(load_index(tmp_path).samples)
    _png(path, value=101)
    assert fingerprint(load_index(tmp_path).samples) != before


def test_plan_holds_out_calibration_normals_and_builds_mixed_set(tmp_path: Path) -> None:
    for i in range(20):
        _png(tmp_path / "train" / "NORMAL" / f"n{i}.png")
    for i in range(6):
        _png(tmp_path / "train" / "SICK" / f"s{i}.png")
    index = load_index(tmp_path)
    plan = plan_training(index, frozenset({"normal"}), FitOptions(calibration_fraction=0.1))
    assert len(plan.normal) == 18 and len(plan.calibration_normal) == 2
    assert not set(plan.normal) & set(plan.calibration_normal)
    mixed = plan_training(index, frozenset({"normal", "mixed"}), FitOptions(mixed_from_train=0.5))
    assert len(mixed.mixed) == 9 + 6
    assert all(sample.label == "unlabelled" for sample in mixed.mixed)
    assert not {s.path for s in mixed.normal} & {s.path for s in mixed.mixed}


def test_one_class_plan_offers_train_abnormals_for_labelled_calibration(tmp_path: Path) -> None:
    for i in range(10):
        _png(tmp_path / "train" / "NORMAL" / f"n{i}.png")
    for i in range(4):
        _png(tmp_path / "train" / "SICK" / f"s{i}.png")
    plan = plan_training(load_index(tmp_path), frozenset({"normal"}), FitOptions())
    assert len(plan.calibration_abnormal) == 4
    assert all(s.label == "SICK" for s in plan.calibration_abnormal)

"""Every CLI command end to end on a tiny phantom set."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medanomaly.cli.main import main

LINE = re.compile(r"^(\S+)  (NORMAL|ABNORMAL)  score ([0-9.e+-]+) (>|<=) threshold ([0-9.e+-]+)")


def test_train_writes_a_self_describing_model(trained_model_dir: Path) -> None:
    config = json.loads((trained_model_dir / "model.json").read_text())
    assert config["method"] == "conv_ae"
    assert config["preprocessing"]["resolution"] == 32
    assert config["threshold"]["method"] == "percentile"
    assert len(config["info"]["fingerprint"]) == 64
    assert config["info"]["class_names"] == ["NORMAL", "LESION"]
    assert config["medanomaly_version"]
    assert (trained_model_dir / "weights.pt").stat().st_size > 1000


def test_score_prints_one_line_per_image(trained_model_dir, phantom_dataset, capsys) -> None:
    paths = sorted((phantom_dataset / "test" / "LESION").glob("*.png"))[:3]
    assert main(["score", *map(str, paths), "--model", str(trained_model_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, paths, strict=True):
        match = LINE.match(line)
        assert match, line
        assert match.group(1) == path.name
        above = float(match.group(3)) > float(match.group(5))
        assert (match.group(2) == "ABNORMAL") == above


def test_score_json_and_maps(trained_model_dir, phantom_dataset, tmp_path, capsys) -> None:
    path = sorted((phantom_dataset / "test" / "LESION").glob("*.png"))[0]
    code = main(["score", str(path), "--model", str(trained_model_dir), "--json", "--maps", str(tmp_path / "maps")])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    result = payload["results"][0]
    assert result["path"] == str(path)
    assert result["label"] in ("NORMAL", "ABNORMAL")
    assert payload["model"]["method"] == "conv_ae"
    assert payload["failures"] == []
    overlay = tmp_path / "maps" / f"{path.stem}_overlay.png"
    copy = tmp_path / "maps" / f"{path.stem}_input.png"
    assert overlay.exists() and copy.exists()
    assert Image.open(copy).size == (32, 32)


def test_score_skips_bad_files_and_reports_them(trained_model_dir, phantom_dataset, tmp_path, capsys) -> None:
    good = sorted((phantom_dataset / "test" / "NORMAL").glob("*.png"))[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    code = main(["score", str(good), str(bad), str(text), "--model", str(trained_model_dir), "--json"])
    assert code == 1
    payload = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in payload["results"]] == [str(good)]
    failed = {Path(f["path"]).name: f["error"] for f in payload["failures"]}
    assert set(failed) == {"broken.png", "notes.txt"}
    assert all(str(tmp_path) in message for message in failed.values())


def test_missing_model_is_one_clear_line(tmp_path, capsys) -> None:
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert main(["score", str(image), "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "nope" in err and "model directory not found" in err


def test_evaluate_json_has_the_documented_keys(trained_model_dir, phantom_dataset, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["evaluate", str(phantom_dataset), "--model", str(trained_model_dir), "--json", "--out", str(out)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in (
        "auroc",
        "auroc_ci95",
        "auprc",
        "accuracy",
        "balanced_accuracy",
        "precision",
        "sensitivity",
        "specificity",
        "f1",
        "threshold",
        "n_normal",
        "n_abnormal",
    ):
        assert key in metrics, key
    assert metrics["n_normal"] == 12 and metrics["n_abnormal"] == 12
    assert 0.0 <= metrics["auroc"] <= 1.0
    for name in ("roc.png", "confusion_matrix.png", "metrics.json", "scores.csv"):
        assert (out / name).stat().st_size > 0


def test_evaluate_unknown_split_fails_clearly(trained_model_dir, phantom_dataset, capsys) -> None:
    assert main(["evaluate", str(phantom_dataset), "--model", str(trained_model_dir), "--split", "nope"]) == 2
    assert "no split 'nope'" in capsys.readouterr().err


def test_train_on_empty_folder_fails_clearly(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "no images found" in err
    assert not (tmp_path / "m").exists()


def test_train_with_unknown_normal_label(phantom_dataset, tmp_path, capsys) -> None:
    assert main(["train", str(phantom_dataset), "--normal-label", "HEALTHY", "--out", str(tmp_path / "m")]) == 2
    assert "HEALTHY" in capsys.readouterr().err


def test_inspect_png(phantom_dataset, capsys) -> None:
    path = sorted((phantom_dataset / "train" / "NORMAL").glob("*.png"))[0]
    assert main(["inspect", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "png"
    assert list(summary["shape"])[-2:] == [32, 32]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--size", "32", "--n-train", "60", "--epochs", "3"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "test AUROC" in text
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["n_abnormal"] == 40 and "pixel" in metrics
    assert (out / "report" / "roc.png").exists()
    assert len(list((out / "overlays").glob("*_overlay.png"))) == 6
    assert (out / "model" / "model.json").exists()


def test_train_with_youden_calibration_uses_labelled_cases(phantom_dataset, tmp_path, capsys) -> None:
    common = [
        "--resolution",
        "32",
        "--epochs",
        "2",
        "--no-progress",
        "--calibrate",
        "youden",
        "--param",
        "depth=2",
        "--param",
        "width=4",
    ]
    assert main(["train", str(phantom_dataset), "--out", str(tmp_path / "none"), *common]) == 2
    assert "needs labelled abnormal studies" in capsys.readouterr().err
    data = tmp_path / "data"
    shutil.copytree(phantom_dataset / "train", data / "train")
    shutil.copytree(phantom_dataset / "test" / "LESION", data / "train" / "LESION")
    assert main(["train", str(data), "--out", str(tmp_path / "m"), *common]) == 0
    threshold = json.loads((tmp_path / "m" / "model.json").read_text())["threshold"]
    assert threshold["method"] == "youden"
    assert threshold["n_abnormal"] == 12
    assert 0 < threshold["params"]["sensitivity"] <= 1

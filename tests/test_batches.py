"""Issue 13: batches report every input, write atomically, and lose nothing late (CLI end to end)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medanomaly.cli import overlays
from medanomaly.cli.main import main
from medanomaly.errors import ModelError
from medanomaly.model import Model


def _pngs(phantom_dataset: Path, n: int = 2) -> list[Path]:
    return sorted((phantom_dataset / "test" / "NORMAL").glob("*.png"))[:n]


def test_overlays_unique_per_study_and_scores_first(trained_model_dir, phantom_dataset, tmp_path, capsys) -> None:
    first, second = _pngs(phantom_dataset)
    for folder, source in (("A", first), ("B", second)):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "img.png")
    maps = tmp_path / "maps"
    code = main(["score", str(tmp_path / "A" / "img.png"), str(tmp_path / "B" / "img.png"), "--model",
                 str(trained_model_dir), "--maps", str(maps)])
    assert code == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert sorted(p.name for p in maps.glob("*_overlay.png")) == ["A_img_overlay.png", "B_img_overlay.png"]
    assert not list(maps.glob(".*"))  # no temporary file left


def test_disk_full_while_writing_maps_keeps_scores(trained_model_dir, phantom_dataset, tmp_path, monkeypatch,
                                                    capsys) -> None:
    def full(image, anomaly_map, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(overlays, "save_overlay_png", full)
    paths = _pngs(phantom_dataset)
    code = main(["score", *map(str, paths), "--model", str(trained_model_dir), "--maps", str(tmp_path / "maps")])
    out = capsys.readouterr().out
    assert code == 1
    assert all(p.name in out for p in paths) and "score" in out
    assert out.index("score") < out.index("No space left on device")
    assert not list((tmp_path / "maps").glob("*overlay*")) and not list((tmp_path / "maps").glob(".*"))


_KILLER = """
import os, signal, sys
from pathlib import Path
from medanomaly.cli import overlays
from medanomaly.cli.main import main
calls = []
real = overlays.save_overlay_png
def dying(image, anomaly_map, path, **kwargs):
    calls.append(path)
    if len(calls) == 2:  # half-way through the second overlay: kill -9
        Path(path).write_bytes(b"\\x89PNG half")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(image, anomaly_map, path, **kwargs)
overlays.save_overlay_png = dying
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_maps_leaves_no_partial_file(trained_model_dir, phantom_dataset, tmp_path) -> None:
    paths = _pngs(phantom_dataset, 3)
    maps = tmp_path / "maps"
    argv = ["score", *map(str, paths), "--model", str(trained_model_dir), "--maps", str(maps)]
    done = subprocess.run([sys.executable, "-c", _KILLER, *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == -9
    assert len(done.stdout.strip().splitlines()) == 3  # every score was printed before the maps
    visible = sorted(p for p in maps.glob("*.png") if not p.name.startswith("."))
    assert [p.name for p in visible if "overlay" in p.name] == [f"{paths[0].stem}_overlay.png"]
    for png in visible:
        Image.open(png).verify()  # complete files only
    leftovers = list(maps.glob(".*.partial.png"))
    assert leftovers  # the hidden temporary of the killed write; no reader takes it for an overlay
    assert main(argv) == 0 and not list(maps.glob(".*.partial.png"))  # the next run sweeps it


def test_inspect_lists_a_bad_file_and_goes_on(phantom_dataset, tmp_path, capsys) -> None:
    good = _pngs(phantom_dataset, 1)[0]
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x08\x00" + b"\xff" * 30)
    volume = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.eye(4)), volume)
    assert main(["inspect", str(good), str(bad), str(volume)]) == 1
    out = capsys.readouterr().out
    assert str(good) in out and str(volume) in out and "bad.dcm" in out
    assert main(["inspect", str(good), str(bad), str(volume), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["results"]) == 2 and [Path(f["path"]).name for f in payload["failures"]] == ["bad.dcm"]


def test_score_lists_what_a_folder_scan_cannot_read(trained_model_dir, phantom_dataset, tmp_path, capsys) -> None:
    shutil.copy(_pngs(phantom_dataset, 1)[0], tmp_path / "ok.png")
    (tmp_path / "broken.dcm").write_bytes(b"\x08\x00" + b"\xff" * 30)
    assert main(["score", str(tmp_path), "--model", str(trained_model_dir), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in payload["results"]] == ["ok.png"]
    assert [Path(f["path"]).name for f in payload["failures"]] == ["broken.dcm"]


def test_evaluate_exit_code_counts_skipped_files(trained_model_dir, phantom_dataset, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantom_dataset / "test", data / "test")
    (data / "test" / "LESION" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    assert main(["evaluate", str(data), "--model", str(trained_model_dir), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert [Path(f["path"]).name for f in payload["failures"]] == ["corrupt.png"]
    assert main(["evaluate", str(data), "--model", str(trained_model_dir)]) == 1
    assert "corrupt.png" in capsys.readouterr().out


def _model_copy(trained_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(trained_model_dir, copy)
    return copy


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: [c], "expected a JSON object, found a list"),
        (lambda c: {**c, "params": "depth=3"}, "field 'params' should be an object, found a string"),
        (lambda c: {**c, "extra": 1}, "field 'extra' is not a model.json field"),
        (lambda c: {k: v for k, v in c.items() if k != "method"}, "field 'method' is missing"),
        (lambda c: {**c, "postprocessing": {**c["postprocessing"], "median_size": "5"}},
         "field 'postprocessing.median_size' should be a number, found a string"),
        (lambda c: {**c, "preprocessing": {**c["preprocessing"], "resolution": None, "bogus": 1}},
         "field 'preprocessing' is invalid"),
        (lambda c: {**c, "threshold": {"value": 1.0}}, "field 'threshold' is invalid"),
    ],
)
def test_edited_model_json_names_the_field(trained_model_dir, tmp_path, edit, match) -> None:
    model_dir = _model_copy(trained_model_dir, tmp_path)
    config = json.loads((model_dir / "model.json").read_text())
    (model_dir / "model.json").write_text(json.dumps(edit(config)))
    with pytest.raises(ModelError, match=match):
        Model.load(model_dir)


def test_empty_weights_is_a_clear_error(trained_model_dir, tmp_path, capsys) -> None:
    model_dir = _model_copy(trained_model_dir, tmp_path)
    (model_dir / "weights.pt").write_bytes(b"")
    assert main(["score", str(tmp_path / "x.png"), "--model", str(model_dir)]) == 2
    assert "weights.pt: the file is empty (0 bytes)" in capsys.readouterr().err


def test_disk_full_when_saving_a_model(trained_model_dir, tmp_path, monkeypatch) -> None:
    model = Model.load(trained_model_dir)

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ModelError, match="cannot write the model .No space left on device"):
        model.save(tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())  # no half-written model directory content


def test_nan_image_named_before_training_and_non_utf8_name(tmp_path, capsys, caplog) -> None:
    data = tmp_path / "data" / "normal"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(10):
        Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(data / f"n{k}.png")
    odd = os.fsdecode(b"caf\xe9.png")
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(data / odd)
    nan = np.ones((16, 16, 1), np.float32)
    nan[8, 8, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), data / "nan_inside.nii")
    argv = ["train", str(tmp_path / "data"), "--out", str(tmp_path / "model"), "--resolution", "16", "--epochs", "1",
            "--no-progress", "--param", "depth=2", "--param", "width=4", "--param", "latent_dim=8"]
    assert main(argv) == 1  # trained and saved, but one input was skipped
    captured = capsys.readouterr()
    out = captured.out
    assert "nan_inside.nii" in caplog.text  # logged when the inputs are read, before any epoch
    assert "nan_inside.nii" in out and "NaN" in out
    assert out.index("nan_inside.nii") > out.index("saved")
    config = json.loads((tmp_path / "model" / "model.json").read_text())
    assert len(config["info"]["fingerprint"]) == 64


def test_disk_full_while_writing_the_evaluation_report(trained_model_dir, phantom_dataset, tmp_path, monkeypatch,
                                                       capsys) -> None:
    from medanomaly.cli import evaluate

    real = evaluate.write_report

    def full(result, out):
        real(result, out)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluate, "write_report", full)
    out = tmp_path / "report"
    assert main(["evaluate", str(phantom_dataset), "--model", str(trained_model_dir), "--out", str(out)]) == 2
    assert "cannot write the report (No space left on device)" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing partial, no staging folder left

"""Issue 13: manifests and labels are checked before anything is read or trained."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medanomaly.data.datasets import Sample, fingerprint, load_index
from medanomaly.errors import InputError


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / name)


def _manifest(tmp_path: Path, rows: list[str], bom: bool = False) -> Path:
    _images(tmp_path, ["a.png", "b.png", "c.png"])
    text = "\n".join(["path,label,split", *rows]) + "\n"
    path = tmp_path / "manifest.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_manifest_with_utf8_bom(tmp_path) -> None:
    index = load_index(_manifest(tmp_path, ["a.png,normal,train", "b.png,pneumonia,test"], bom=True))
    assert index.labels == ["normal", "pneumonia"] and index.splits == ["test", "train"]


def test_unknown_split_is_an_error_naming_the_line(tmp_path) -> None:
    with pytest.raises(InputError, match="line 3: unknown split 'training'"):
        load_index(_manifest(tmp_path, ["a.png,normal,test", "b.png,normal,training"]))


def test_rows_kept_out_of_every_split_are_not_loaded(tmp_path) -> None:
    index = load_index(_manifest(tmp_path, ["a.png,normal,train", "b.png,lesion,test", "c.png,lesion,unassigned"]))
    assert sorted(s.path.name for s in index.samples) == ["a.png", "b.png"]
    assert index.splits == ["test", "train"]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (["a.png,normal,test", "b.png,???,test"], "label '\\?\\?\\?' is not a label"),
        (["a.png,normal,test", "b.png,,test"], "line 3 has an empty label"),
        (["a.png,normal,test", "b.png,NORMAL,test", "c.png,lesion,test"], "only in case"),
    ],
)
def test_labels_that_would_count_as_abnormal_are_refused(tmp_path, rows, match) -> None:
    with pytest.raises(InputError, match=match):
        load_index(_manifest(tmp_path, rows))


def test_fingerprint_of_a_non_utf8_file_name(tmp_path) -> None:
    name = os.fsdecode(b"caf\xe9.png")
    _images(tmp_path, [name])
    digest = fingerprint([Sample(tmp_path / name, "normal", "train")])
    assert len(digest) == 64


def test_folder_layout_keeps_unreadable_dicom_as_a_sample(tmp_path) -> None:
    _images(tmp_path / "normal", ["a.png"])
    (tmp_path / "normal" / "x.dcm").write_bytes(b"\x08\x00" + b"\xff" * 30)
    index = load_index(tmp_path)
    assert sorted(s.path.name for s in index.samples) == ["a.png", "x.dcm"]  # loading lists x.dcm as a failure

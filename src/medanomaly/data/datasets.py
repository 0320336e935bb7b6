"""Indexing a data set: ``<split>/<label>/`` folders, ``<label>/`` folders, or a manifest CSV (``path,label[,split]``).

A data set is an index of samples (a path, a label, a split); nothing is read until
:func:`medanomaly.data.loading.load_images` prepares them.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from medanomaly.errors import InputError, printable
from medanomaly.io import scan_studies

SPLIT_NAMES = ("train", "val", "validation", "test")
EXCLUDED_SPLITS = ("unassigned", "unused", "excluded")  # manifest rows a data set keeps out of every split
_MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class Sample:
    """One study of a data set: an image file, a NIfTI file or a DICOM series folder."""

    path: Path
    label: str
    split: str | None = None


@dataclass
class DatasetIndex:
    """Samples of a data set with its normal label.

    Attributes:
        root: The folder (or manifest file) the index came from.
        samples: All samples, in a deterministic order.
        normal_label: The label that means healthy.
    """

    root: Path
    samples: list[Sample]
    normal_label: str
    layout: str = "folders"
    warnings: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Distinct labels, sorted."""
        return sorted({sample.label for sample in self.samples})

    @property
    def splits(self) -> list[str]:
        """Distinct split names (empty when the data set has none)."""
        return sorted({sample.split for sample in self.samples if sample.split})

    def select(self, split: str | None = None, label: str | None = None, normal: bool | None = None) -> list[Sample]:
        """Samples of a split and/or label; ``normal=True/False`` selects by the normal label."""
        chosen = self.samples
        if split is not None:
            chosen = [s for s in chosen if _same_split(s.split, split)]
        if label is not None:
            chosen = [s for s in chosen if s.label == label]
        if normal is not None:
            chosen = [s for s in chosen if (s.label == self.normal_label) == normal]
        return chosen

    def is_normal(self, sample: Sample) -> bool:
        """True when the sample carries the normal label."""
        return sample.label == self.normal_label

    def class_names(self) -> list[str]:
        """Labels with the normal label first."""
        return [self.normal_label] + [label for label in self.labels if label != self.normal_label]


def load_index(path: str | Path, normal_label: str | None = None) -> DatasetIndex:
    """Index a data set folder or manifest.

    Args:
        path: A folder laid out ``<split>/<label>/...`` or ``<label>/...``, a folder holding ``manifest.csv``, or a
            CSV file with columns ``path,label[,split]`` (paths relative to the CSV's folder).
        normal_label: The label meaning healthy; default: a label named ``normal`` (any case).
    """
    root = Path(path)
    if not root.exists():
        raise InputError(root, "data set not found", "give a folder of images or a manifest CSV")
    if root.is_file():
        samples, layout = _read_manifest(root), "manifest"
    elif (root / _MANIFEST).is_file():
        samples, layout = _read_manifest(root / _MANIFEST), "manifest"
    else:
        samples, layout = _scan_folders(root), "folders"
    if not samples:
        raise InputError(root, "no images found", "expected <split>/<label>/ or <label>/ folders of images, or a CSV")
    labels = sorted({sample.label for sample in samples})
    normal = _resolve_normal_label(root, labels, normal_label)
    _check_labels(root, labels, normal)
    return DatasetIndex(root, samples, normal, layout)


def _scan_folders(root: Path) -> list[Sample]:
    children = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    has_splits = any(child.name.lower() in SPLIT_NAMES for child in children)
    samples = []
    for child in children:
        if has_splits and child.name.lower() in SPLIT_NAMES:
            for label_dir in sorted(d for d in child.iterdir() if d.is_dir() and not d.name.startswith(".")):
                samples += [Sample(p, label_dir.name, child.name.lower()) for p in study_paths(label_dir)]
        elif not has_splits:
            samples += [Sample(p, child.name, None) for p in study_paths(child)]
    return samples


def study_paths(folder: Path) -> list[Path]:
    """The studies of a label folder, plus what cannot be one (an unreadable DICOM file, a folder mixing series).

    Those stay samples so that loading them lists them as failures with the reason: nothing found is dropped.
    """
    studies, failures = scan_studies(folder)
    failed = {Path(error.path) for error in failures}
    return sorted(set(studies) | failed)


def _read_manifest(manifest: Path) -> list[Sample]:
    """Rows of a manifest CSV (UTF-8, with or without a byte-order mark); unknown splits and empty cells refused."""
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = fields
            missing = {"path", "label"} - set(fields)
            if missing:
                raise InputError(manifest, f"manifest lacks column(s) {sorted(missing)} (has {fields})",
                                 "columns: path,label[,split]")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(manifest, f"not a readable UTF-8 CSV ({err})", "save the manifest as UTF-8 CSV") from err
    samples = [_manifest_sample(manifest, number, row) for number, row in enumerate(rows, start=2)]
    return [sample for sample in samples if sample.split not in EXCLUDED_SPLITS]


def _manifest_sample(manifest: Path, line: int, row: dict[str, str | None]) -> Sample:
    """One manifest row as a Sample; ``line`` is its line number in the file, for the message."""
    path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
    split = (row.get("split") or "").strip().lower() or None
    if not path or not label:
        raise InputError(manifest, f"line {line} has an empty {'path' if not path else 'label'}",
                         "every row needs a path and a label")
    if split is not None and split not in SPLIT_NAMES + EXCLUDED_SPLITS:
        raise InputError(manifest, f"line {line}: unknown split {row.get('split')!r}",
                         f"use one of {', '.join(SPLIT_NAMES)}, leave the split empty, or keep the row out of every "
                         f"split with {', '.join(EXCLUDED_SPLITS)}")
    return Sample(manifest.parent / path, label, split)


def _resolve_normal_label(root: Path, labels: list[str], given: str | None) -> str:
    if given is not None:
        if given not in labels:
            raise InputError(root, f"normal label {given!r} not among the labels {labels}", "check --normal-label")
        return given
    for label in labels:
        if label.lower() == "normal":
            return label
    raise InputError(root, f"no label named 'normal' among {labels}", "name the healthy label with --normal-label")


def _check_labels(root: Path, labels: list[str], normal_label: str) -> None:
    """Refuse labels that would silently count as abnormal, and labels that are not valid UTF-8.

    Refused: no letter or digit (``???``), the normal label in another case (``NORMAL`` beside ``normal``), an
    undecodable folder name.
    """
    for label in labels:
        if label != normal_label and label.casefold() == normal_label.casefold():
            raise InputError(root, f"label {label!r} differs from the normal label {normal_label!r} only in case",
                             "spell the healthy label one way (rename the folder or fix the manifest)")
        if not any(ch.isalnum() for ch in label):
            raise InputError(root, f"label {label!r} is not a label (no letter or digit)",
                             "fix or remove those rows/folders: they would count as abnormal")
        try:
            label.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(root, f"label folder {printable(label)!r} is not valid UTF-8",
                             "rename the folder with a UTF-8 name") from None


def _same_split(actual: str | None, wanted: str) -> bool:
    aliases = {"val": "validation"}
    return actual is not None and aliases.get(actual, actual) == aliases.get(wanted, wanted)


def fingerprint(samples: list[Sample]) -> str:
    """SHA-256 over the samples' labels, names, sizes and contents: identifies the exact training data."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: str(s.path)):
        digest.update(f"{sample.label}|{sample.split}|".encode() + os.fsencode(sample.path.name) + b"|")
        files = sorted(sample.path.rglob("*")) if sample.path.is_dir() else [sample.path]
        for file in files:
            if file.is_file():
                digest.update(hashlib.sha1(file.read_bytes()).digest())
    return digest.hexdigest()

"""Indexing a data set: ``<split>/<label>/`` folders, ``<label>/`` folders, or a manifest CSV (``path,label[,split]``).

A data set is an index of samples (a path, a label, a split); nothing is read until
:func:`medanomaly.data.loading.load_images` prepares them.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.io import find_studies

SPLIT_NAMES = ("train", "val", "validation", "test")
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
    return DatasetIndex(root, samples, _resolve_normal_label(root, labels, normal_label), layout)


def _scan_folders(root: Path) -> list[Sample]:
    children = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    has_splits = any(child.name.lower() in SPLIT_NAMES for child in children)
    samples = []
    for child in children:
        if has_splits and child.name.lower() in SPLIT_NAMES:
            for label_dir in sorted(d for d in child.iterdir() if d.is_dir() and not d.name.startswith(".")):
                samples += [Sample(p, label_dir.name, child.name.lower()) for p in find_studies(label_dir)]
        elif not has_splits:
            samples += [Sample(p, child.name, None) for p in find_studies(child)]
    return samples


def _read_manifest(manifest: Path) -> list[Sample]:
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(manifest, f"manifest lacks column(s) {sorted(missing)}", "columns: path,label[,split]")
        rows = list(reader)
    base = manifest.parent
    return [Sample(base / row["path"], row["label"], (row.get("split") or "").lower() or None) for row in rows]


def _resolve_normal_label(root: Path, labels: list[str], given: str | None) -> str:
    if given is not None:
        if given not in labels:
            raise InputError(root, f"normal label {given!r} not among the labels {labels}", "check --normal-label")
        return given
    for label in labels:
        if label.lower() == "normal":
            return label
    raise InputError(root, f"no label named 'normal' among {labels}", "name the healthy label with --normal-label")


def _same_split(actual: str | None, wanted: str) -> bool:
    aliases = {"val": "validation"}
    return actual is not None and aliases.get(actual, actual) == aliases.get(wanted, wanted)


def fingerprint(samples: list[Sample]) -> str:
    """SHA-256 over the samples' labels, names, sizes and contents: identifies the exact training data."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: str(s.path)):
        digest.update(f"{sample.label}|{sample.split}|{sample.path.name}|".encode())
        files = sorted(sample.path.rglob("*")) if sample.path.is_dir() else [sample.path]
        for file in files:
            if file.is_file():
                digest.update(hashlib.sha1(file.read_bytes()).digest())
    return digest.hexdigest()

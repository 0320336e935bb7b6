"""The studies of an archive: a folder scanned like ``medanomaly score`` scans one, or a manifest CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.io import scan_studies


@dataclass
class Source:
    """What to score: study paths (absolute, as strings), their manifest labels, and what cannot be a study."""

    paths: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> why it cannot be a study


def open_source(source: str | Path) -> Source:
    """A folder (every study inside it, recursively) or a manifest CSV (``path[,label]``, optional header row).

    Raises:
        InputError: ``source`` is neither a folder nor a CSV file, or the manifest is empty.
    """
    root = Path(source).absolute()
    if root.is_dir():
        studies, failed = scan_studies(root)
        return Source([str(p) for p in studies], unreadable={str(e.path): str(e) for e in failed})
    if root.is_file() and root.suffix.lower() == ".csv":
        return _manifest(root)
    raise InputError(root, "neither a folder nor a manifest CSV", "pass a folder of studies or a CSV of path[,label]")


def _manifest(path: Path) -> Source:
    """Rows ``path[,label]``; relative paths are relative to the manifest's folder; duplicates are listed once."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and row[0].strip()]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    if not rows:
        raise InputError(path, "the manifest lists no studies", "one line per study: path[,label]")
    found = Source([])
    for row in rows:
        study = str((path.parent / row[0].strip()).absolute())
        if study in found.labels or study in found.paths:
            continue
        found.paths.append(study)
        if len(row) > 1 and row[1].strip():
            found.labels[study] = row[1].strip()
    return found

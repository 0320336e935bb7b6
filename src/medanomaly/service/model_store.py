"""The models a running service scores with, and their versions.

Version layout (documented in docs/workstation.md): a served model is a model directory ``MODEL_DIR`` (its own
``model.json`` holds its version, usually 1). Each recalibration writes a complete new model directory
``MODEL_DIR/versions/v<N>/`` (``Model.with_threshold`` + ``Model.save``), so every version stays loadable with
``medanomaly score --model MODEL_DIR/versions/v<N>``. New versions start inactive; an admin activates one
(:mod:`medanomaly.service.versions`). The active version scores new studies and rescoring, and each result records
the version that produced it. A model without an active version (first start) gets its highest version activated.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from medanomaly.errors import ModelError
from medanomaly.model import Model, training_record
from medanomaly.service.db import ModelVersion, utcnow
from medanomaly.service.settings import parse_model_spec

logger = logging.getLogger(__name__)
VERSIONS_DIR = "versions"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def version_dirs(base: Path) -> list[Path]:
    """``base`` and its ``versions/v<N>`` folders that hold a model.json, in version order."""
    found = [base] if (base / "model.json").is_file() else []
    folder = base / VERSIONS_DIR
    if folder.is_dir():
        numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _VERSION_DIR.match(p.name))]
        found += [p for _, p in sorted(numbered) if (p / "model.json").is_file()]
    return found


def _describe(path: Path) -> dict:
    """Version, method and threshold from a model.json (the weights are only read when the model is used)."""
    try:
        config = json.loads((path / "model.json").read_text())
        threshold = config.get("threshold") or {}
        return {
            "version": int(config.get("info", {}).get("version", 1)),
            "method": str(config["method"]),
            "threshold": threshold.get("value"),
            "threshold_method": threshold.get("method"),
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        msg = f"{path}/model.json: unreadable ({error}); retrain or restore the model directory"
        raise ModelError(msg) from None


def training_of(path: str | Path) -> dict | None:
    """``{"converged", "stopped_because"}`` of the model directory ``path`` (None when unreadable)."""
    try:
        return training_record(json.loads((Path(path) / "model.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def register_version(db: Session, name: str, path: Path, created_by: str | None = None) -> ModelVersion:
    """The ``ModelVersion`` row of the model directory ``path`` under ``name`` (added, flushed, when new)."""
    facts = _describe(path)
    row = db.scalar(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == facts["version"]))
    if row is None:
        row = ModelVersion(
            name=name,
            version=facts["version"],
            path=str(path.resolve()),
            method=facts["method"],
            threshold=facts["threshold"],
            threshold_method=facts["threshold_method"],
            created_by=created_by,
        )
        db.add(row)
        db.flush()
    elif row.path != str(path.resolve()):
        row.path = str(path.resolve())
    return row


class ModelStore:
    """Served models by name; loaded versions are cached.

    Args:
        specs: ``DIR`` or ``NAME=DIR`` strings; the first model is the default.
        device: Torch device to load onto.
    """

    def __init__(self, specs: Sequence[str], device: str = "cpu") -> None:
        self.models: dict[str, Path] = {}
        for spec in specs:
            name, path = parse_model_spec(spec)
            self.models[name] = path
        self.device = device
        self.errors: dict[str, str] = {}
        self._loaded: dict[int, Model] = {}
        self._lock = threading.Lock()

    @property
    def default_name(self) -> str | None:
        """Name of the first model, or None when none was given."""
        return next(iter(self.models), None)

    def base_dir(self, name: str) -> Path:
        """The model directory of ``name``; KeyError when no such model is served."""
        if name not in self.models:
            msg = f"no model named {name!r} is served (served: {', '.join(self.models) or 'none'})"
            raise KeyError(msg)
        return self.models[name]

    def sync(self, db: Session) -> None:
        """Register every version on disk in the database; unusable models are listed in ``errors``."""
        for name, base in self.models.items():
            try:
                if not base.is_dir():
                    msg = f"{base}: model directory not found; train one with 'medanomaly train' or fix --model"
                    raise ModelError(msg)
                paths = version_dirs(base)
                if not paths:
                    raise ModelError(f"{base}: not a model directory (no model.json); was training interrupted?")
                rows = [self._register(db, name, path) for path in paths]
                if not any(row.active for row in db.scalars(select(ModelVersion).where(ModelVersion.name == name))):
                    newest = max(rows, key=lambda row: row.version)
                    newest.active, newest.activated_at, newest.activated_by = True, utcnow(), "start-up"
                    logger.info("model %s: no active version, v%d activated", name, newest.version)
                self.errors.pop(name, None)
            except ModelError as error:
                self.errors[name] = str(error)
                logger.error("model %s unusable: %s", name, error)
        db.commit()

    def _register(self, db: Session, name: str, path: Path) -> ModelVersion:
        return register_version(db, name, path)

    def register(self, db: Session, name: str, path: Path) -> ModelVersion:
        """Register one model directory (a new version) under ``name``."""
        return register_version(db, name, path)

    def active(self, db: Session, name: str | None = None) -> ModelVersion | None:
        """The active version of ``name`` (default model when None); None (reason in ``errors``) if its folder went."""
        name = name or self.default_name
        if name is None or name not in self.models:
            return None
        row = db.scalar(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.active.is_(True)))
        if row is not None and not (Path(row.path) / "model.json").is_file():
            self.errors[name] = f"the folder of the active version v{row.version} is gone: activate another version"
            return None
        return row

    def load(self, version: ModelVersion) -> Model:
        """The :class:`Model` of a registered version (cached); ModelError when it cannot be loaded."""
        with self._lock:
            if version.id not in self._loaded:
                model = Model.load(version.path, device=self.device)
                model.info["path"] = version.path
                self._loaded[version.id] = model
            return self._loaded[version.id]

    def training(self, name: str) -> dict | None:
        """Whether ``name``'s training converged and why it stopped (None when its model.json is unreadable)."""
        return training_of(self.models[name])

    def next_version_dir(self, name: str, version: int) -> Path:
        """Where version ``version`` of ``name`` is saved: ``MODEL_DIR/versions/v<version>``."""
        return self.base_dir(name) / VERSIONS_DIR / f"v{version}"

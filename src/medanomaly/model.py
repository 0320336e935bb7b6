"""A trained model: detector + preprocessing + post-processing + threshold, saved as one self-describing directory.

Directory layout (no pickles)::

    MODEL_DIR/model.json   method, hyper-parameters, fitted config, preprocessing, post-processing, threshold,
                           training-data fingerprint, package version, metrics, model version
    MODEL_DIR/weights.pt   state_dict of every fitted tensor (loaded with ``weights_only=True``)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pickle  # only for the exception type torch.load raises on a corrupt file
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medanomaly import __version__
from medanomaly.detectors.base import BaseDetector
from medanomaly.domain import Domain
from medanomaly.errors import ModelError
from medanomaly.mapping import aggregate_slices, filter_map, topk_mean
from medanomaly.model_schema import section_error, validate_config
from medanomaly.registry import create
from medanomaly.thresholds import Threshold
from medanomaly.training.device import select_device
from medanomaly.training.engine import training_status
from medanomaly.transforms import Preprocessing

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
_CONFIG, _WEIGHTS = "model.json", "weights.pt"


@dataclass(frozen=True)
class Postprocessing:
    """What happens between the detector's raw output and a decision.

    Attributes:
        median_size: Median filter size of the anomaly map (2D, and across slices for a volume); 1 disables.
        score_from: ``detector`` (the method's own image score, e.g. MAE) or ``map_topk`` (mean of the top
            ``map_topk_fraction`` of the filtered map).
        map_topk_fraction: Fraction of pixels averaged by ``map_topk``.
        slice_aggregation: How a volume's slice scores become its score: ``topk`` (mean of the top ``slice_topk``),
            ``max`` or ``mean``.
        slice_topk: Fraction (float) or count (int) of slices averaged by ``topk``.
        region_threshold: Map value above which pixels form findings (calibrated on normals); None = no findings.
        min_region_area: Smallest finding, in model-grid pixels.
    """

    median_size: int = 5
    score_from: str = "detector"
    map_topk_fraction: float = 0.01
    slice_aggregation: str = "topk"
    slice_topk: float = 0.1
    region_threshold: float | None = None
    min_region_area: int = 8


@dataclass
class StudyScore:
    """A study's score and maps, in model space.

    Attributes:
        score: The study's anomaly score (volume: aggregated over slices).
        slice_scores: (S,) per-slice scores.
        anomaly_maps: (S, R, R) filtered anomaly maps.
        extras: Per-slice extra outputs of the detector, e.g. ``reconstruction`` (S, C, R, R).
    """

    score: float
    slice_scores: np.ndarray
    anomaly_maps: np.ndarray | None
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class Model:
    """A fitted detector with everything needed to score a new study the way it was validated."""

    def __init__(
        self,
        detector: BaseDetector,
        preprocessing: Preprocessing,
        postprocessing: Postprocessing | None = None,
        threshold: Threshold | None = None,
        info: dict[str, Any] | None = None,
        domain: Domain | None = None,
    ) -> None:
        self.detector = detector
        self.preprocessing = preprocessing
        self.postprocessing = postprocessing or Postprocessing()
        self.threshold = threshold
        self.domain = domain  # what it was trained on; None = unknown (trained before domains were recorded)
        self.info = dict(info or {})
        self.info.setdefault("version", 1)
        self.info.setdefault("created", _now())

    @property
    def method(self) -> str:
        """Registered name of the detector."""
        return self.detector.name

    @property
    def version(self) -> int:
        """Model version, incremented by each recalibration or retraining saved over it."""
        return int(self.info["version"])

    @property
    def training(self) -> dict[str, Any]:
        """``{"converged", "stopped_because"}``: ``info["training"]``, or for older models read from the history."""
        return self.info.get("training") or training_status(getattr(self.detector, "history_", None))

    @property
    def class_names(self) -> list[str]:
        """[normal label, abnormal label(s)] as in the training data."""
        return list(self.info.get("class_names") or ["NORMAL", "ABNORMAL"])

    # --- scoring ----------------------------------------------------------------------------------------------
    def score_images(
        self,
        images: Tensor,
        owners: np.ndarray | None = None,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[StudyScore]:
        """Score preprocessed slices and group them into studies.

        Args:
            images: (N, C, R, R) float32 in [0, 1].
            owners: (N,) study index of each row (rows of one study contiguous); None = every row is its own study.
            batch_size: Images per forward pass.
            progress: Called with (slices done, total) after each batch.
        """
        owners = np.arange(len(images)) if owners is None else np.asarray(owners)
        prediction = self.detector.score(images, batch_size=batch_size, progress=progress)
        raw_scores = prediction.scores.numpy()
        raw_maps = None if prediction.anomaly_maps is None else prediction.anomaly_maps.numpy()
        results = []
        for owner in _unique_in_order(owners):
            index = np.flatnonzero(owners == owner)
            contiguous = index[-1] - index[0] + 1 == len(index)  # then views, not copies, of a long series' maps
            rows: np.ndarray | slice = slice(int(index[0]), int(index[-1]) + 1) if contiguous else index
            extras = {key: value[rows].numpy() for key, value in prediction.extras.items()}
            results.append(self._postprocess(raw_scores[rows], None if raw_maps is None else raw_maps[rows], extras))
        return results

    def _postprocess(self, scores: np.ndarray, maps: np.ndarray | None, extras: dict[str, np.ndarray]) -> StudyScore:
        post = self.postprocessing
        if maps is not None:
            maps = filter_map(maps, post.median_size, volume=len(maps) > 1)
        if post.score_from == "map_topk" and maps is not None:
            scores = np.array([topk_mean(m, post.map_topk_fraction) for m in maps], dtype=np.float32)
        slice_topk = post.slice_topk if post.slice_topk < 1 else int(post.slice_topk)
        score = float(scores[0]) if len(scores) == 1 else aggregate_slices(scores, post.slice_aggregation, slice_topk)
        return StudyScore(score, scores.astype(np.float32), maps, extras)

    def decide(self, score: float) -> bool:
        """True = abnormal (score above the calibrated threshold); ModelError when no threshold is set."""
        if self.threshold is None:
            raise ModelError("this model has no calibrated threshold: run 'medanomaly recalibrate' or retrain")
        return bool(self.threshold.decide(score))

    # --- persistence ------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The JSON written to ``model.json``."""
        return {
            "format_version": FORMAT_VERSION,
            "medanomaly_version": __version__,
            "method": self.method,
            "kind": self.detector.kind,
            "params": _jsonable(self.detector.get_params()),
            "fitted": _jsonable(self.detector.fitted_config()),
            "preprocessing": self.preprocessing.to_dict(),
            "postprocessing": asdict(self.postprocessing),
            "threshold": None if self.threshold is None else self.threshold.to_dict(),
            "domain": None if self.domain is None else _jsonable(self.domain.to_dict()),
            "info": _jsonable(self.info),
        }

    def save(self, directory: str | Path) -> Path:
        """Write the model directory: weights, then config, each written aside and renamed into place.

        Each file is replaced atomically, the pair is not: a crash between the two renames leaves the new weights
        beside the old config; save again.
        """
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                torch.save(self.detector.state_dict(), Path(tmp) / _WEIGHTS)
                (Path(tmp) / _CONFIG).write_text(json.dumps(self.config(), indent=2))
                for name in (_WEIGHTS, _CONFIG):
                    os.replace(Path(tmp) / name, directory / name)
        except (OSError, RuntimeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            msg = (f"{directory}: cannot write the model ({reason}); free disk space, fix the permissions or pass "
                   "another --out")
            raise ModelError(msg) from error
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> Model:
        """Read a model directory written by :meth:`save`; ModelError with what to do if it is unusable."""
        directory = Path(directory)
        config = _read_config(directory)
        try:
            detector = create(config["method"], **config["params"])
        except (KeyError, TypeError, ValueError) as error:
            raise section_error(directory / _CONFIG, "method/params", error) from None
        if (directory / _WEIGHTS).stat().st_size == 0:
            raise ModelError(f"{directory}/{_WEIGHTS}: the file is empty (0 bytes); retrain or restore the model")
        try:
            state = torch.load(directory / _WEIGHTS, map_location="cpu", weights_only=True)
            detector.restore(config["fitted"], state)
        except KeyError as error:
            msg = f"{directory}: {error.args[0] if error.args else error}"
            raise ModelError(msg) from None
        except (RuntimeError, OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
            msg = f"{directory}/{_WEIGHTS}: cannot load the weights ({error}); retrain or restore the model directory"
            raise ModelError(msg) from None
        detector.to(select_device(device))
        threshold = _section(directory, "threshold", Threshold.from_dict, config.get("threshold"))
        domain = _section(directory, "domain", Domain.from_dict, config.get("domain"))
        if domain is None:
            logger.warning("%s: unknown domain (trained before domains were recorded): studies of any modality or "
                           "body part will be scored; retrain to have out-of-domain studies refused", directory)
        return cls(
            detector,
            _section(directory, "preprocessing", Preprocessing.from_dict, config["preprocessing"]),
            Postprocessing(**config.get("postprocessing") or {}),
            threshold,
            config.get("info", {}),
            domain,
        )

    def with_threshold(self, threshold: Threshold, **info: Any) -> Model:
        """A new model version sharing the detector, with another threshold."""
        new_info = {**self.info, **info, "version": self.version + 1, "created": _now(), "parent_version": self.version}
        return Model(self.detector, self.preprocessing, self.postprocessing, threshold, new_info, self.domain)

    def with_postprocessing(self, **changes: Any) -> Model:
        """The same model with some post-processing settings changed (not a new version: nothing is re-fitted)."""
        return Model(
            self.detector, self.preprocessing, replace(self.postprocessing, **changes), self.threshold, self.info,
            self.domain,
        )


def training_record(config: dict[str, Any]) -> dict[str, Any]:
    """:attr:`Model.training` from a ``model.json``'s content, without loading the weights."""
    info = config.get("info") or {}
    return info.get("training") or training_status((config.get("fitted") or {}).get("history"))


def _read_config(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        msg = f"{directory}: model directory not found; train one with 'medanomaly train' or check the path"
        raise ModelError(msg)
    config_path = directory / _CONFIG
    if not config_path.is_file() or not (directory / _WEIGHTS).is_file():
        msg = f"{directory}: not a model directory (needs {_CONFIG} and {_WEIGHTS}); was training interrupted?"
        raise ModelError(msg)
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        msg = f"{config_path}: corrupt model config ({error.msg} at line {error.lineno}); retrain the model"
        raise ModelError(msg) from None
    validate_config(config_path, config)
    if config.get("format_version", 0) > FORMAT_VERSION:
        msg = f"{config_path}: written by a newer medanomaly ({config.get('medanomaly_version')}); upgrade to read it"
        raise ModelError(msg)
    return config


def _section(directory: Path, name: str, parse: Callable[[Any], Any], value: Any) -> Any:
    """``parse(value)`` of one ``model.json`` section (None when absent); ModelError naming the section."""
    if not value:
        return None
    try:
        return parse(value)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise section_error(directory / _CONFIG, name, error) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray, Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def _unique_in_order(values: np.ndarray) -> list[int]:
    _, first = np.unique(values, return_index=True)
    return [int(values[i]) for i in sorted(first)]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

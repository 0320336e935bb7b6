"""One benchmark cell, run in its own process: ``python -m medanomaly.evaluation.bench_cell CELL_DIR``.

Reads ``CELL_DIR/cell.json`` (written by :mod:`medanomaly.evaluation.benchmark`), trains and calibrates with
:func:`medanomaly.fitting.train_model` into ``CELL_DIR/model``, reloads that model directory and scores the test
split with :func:`medanomaly.evaluation.evaluate.evaluate_model` (the numbers ``medanomaly evaluate`` prints), then
writes ``metrics.json`` and ``scores.csv`` in the format of ``medanomaly evaluate --out`` (without its plots),
``examples.npz`` (the heat-map examples, no pickles) and ``result.json`` (timings, memory, training facts). On a
Python error it writes ``error.json`` with a one-line reason and exits with code 1; the traceback is in ``cell.log``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medanomaly.evaluation.evaluate import EvaluationResult, evaluate_model
from medanomaly.fitting import FitOptions, train_model
from medanomaly.model import Model, Postprocessing, training_record
from medanomaly.pipeline import score_path
from medanomaly.training import TrainConfig
from medanomaly.transforms import Preprocessing

logger = logging.getLogger(__name__)
EXAMPLES = "examples.npz"
_LATENCY_STUDIES = 8


def run_cell(directory: Path) -> dict[str, Any]:
    """Train, test and describe one cell; returns what goes into ``metrics.json["bench"]``."""
    spec = json.loads((directory / "cell.json").read_text())
    load_start, started_at = _loadavg(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    report = train_model(spec["data"], spec["method"], directory / "model", _fit_options(spec), spec["normal_label"])
    fit_seconds = time.monotonic() - started
    shutil.rmtree(spec["train"]["checkpoint_dir"], ignore_errors=True)  # training is over; the model is saved
    n_calibration = len(report.plan.calibration_normal) or len(report.plan.normal)
    del report
    model = Model.load(directory / "model", device=spec["train"]["device"])
    started = time.perf_counter()
    result = evaluate_model(model, spec["data"], split="test", normal_label=spec["normal_label"], progress=False)
    end_to_end = time.perf_counter() - started
    write_scores(result, directory)
    save_examples(model, spec["examples"], result, directory / EXAMPLES)
    fitted = json.loads((directory / "model" / "model.json").read_text())
    return {
        **_training_facts(fitted, model, spec["needs"]),
        "method": spec["method"],
        "name": spec["name"],
        "dataset": spec["dataset"],
        "seed": spec["seed"],
        "n_calibration_normal": n_calibration,
        "fit_seconds": round(fit_seconds, 2),
        "e2e_images_per_second": round(len(result.paths) / max(end_to_end, 1e-9), 2),
        "latency_ms": _latency_ms(model, result.paths[:_LATENCY_STUDIES]),
        "peak_rss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "started": started_at,
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
    }


def _fit_options(spec: dict[str, Any]) -> FitOptions:
    return FitOptions(
        params=spec["params"],
        preprocessing=Preprocessing.from_dict(spec["preprocessing"]),
        postprocessing=Postprocessing(**spec["postprocessing"]),
        train=TrainConfig(**spec["train"]),
        calibration=spec["calibration"],
        mixed_from_train=spec["mixed_from_train"],
        random_state=int(spec["seed"]),
        progress=False,
    )


def _training_facts(config: dict[str, Any], model: Model, needs: list[str]) -> dict[str, Any]:
    """Hyper-parameters, threshold rule, training-set sizes the method actually used, and its training history."""
    fitted = config.get("fitted") or {}
    history = fitted.get("history") or {}
    info = model.info
    return {
        "params": config.get("params", {}),
        "threshold_rule": (info.get("calibration") or {}).get("spec"),
        "n_train_normal": info.get("n_train_normal"),
        "n_train_abnormal": info.get("n_train_abnormal") if "abnormal" in needs else 0,
        "n_train_mixed": info.get("n_train_mixed") if "mixed" in needs else 0,
        "train_seconds": round(float(history["seconds"]), 2) if "seconds" in history else None,
        "epochs": len(history.get("epochs") or []) or None,
        "best_epoch": history.get("best_epoch"),
        "stopped_because": history.get("stopped_because"),
        "converged": training_record(config)["converged"],
        "pseudo_auc": find_pseudo_auc(fitted),
    }


def find_pseudo_auc(fitted: dict[str, Any]) -> float | None:
    """A pseudo-AUC the detector recorded: a ``pseudo_auc``/``pseudo_auroc`` entry, else its monitored AUC metric."""
    for key in ("pseudo_auc", "pseudo_auroc"):
        if isinstance(fitted.get(key), (int, float)):
            return float(fitted[key])
    history = fitted.get("history") or {}
    monitor = str(history.get("monitor", "")).lower()
    best = history.get("best_metric")
    if "auc" in monitor and isinstance(best, (int, float)) and np.isfinite(best):
        return float(best)
    return None


def write_scores(result: EvaluationResult, directory: Path) -> None:
    """``metrics.json`` and ``scores.csv`` as :func:`medanomaly.evaluation.evaluate.write_report` writes them."""
    payload = {**result.metrics, "failures": [failure.to_dict() for failure in result.failures]}
    (directory / "metrics.json").write_text(json.dumps(payload, indent=2))
    threshold = result.metrics["threshold"]
    with (directory / "scores.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "score", "predicted"])
        for path, label, score in zip(result.paths, result.labels, result.scores, strict=True):
            writer.writerow([path, int(label), f"{score:.6g}", int(score > threshold)])


def save_examples(model: Model, paths: list[str], result: EvaluationResult, out: Path) -> Path:
    """Inputs and filtered anomaly maps of the heat-map examples (a volume: its most anomalous slice).

    Writes ``images`` (K, C, R, R) float32 in [0, 1], ``maps`` (K, R, R) float32 (absent when the method makes
    none), ``scores`` (K,), ``labels`` (K,) 0/1 and ``paths`` (K,) strings.
    """
    labels = dict(zip(result.paths, result.labels.tolist(), strict=True))
    images, maps, scores, kept = [], [], [], []
    for path in paths:
        if path not in labels:  # unreadable at test time: listed in the failures already
            continue
        study = score_path(model, path, ignore_domain=True)  # as evaluate_model scored it
        best = int(np.argmax(study.slice_scores))
        images.append(study.images[best])
        if study.anomaly_maps is not None:
            maps.append(study.anomaly_maps[best])
        scores.append(study.score)
        kept.append(path)
    arrays: dict[str, np.ndarray] = {
        "images": np.asarray(images, dtype=np.float32),
        "scores": np.asarray(scores, dtype=np.float64),
        "labels": np.asarray([labels[p] for p in kept], dtype=np.int64),
        "paths": np.asarray(kept, dtype=str),
    }
    if maps and len(maps) == len(kept):
        arrays["maps"] = np.asarray(maps, dtype=np.float32)
    np.savez_compressed(out, **arrays)
    return out


def _latency_ms(model: Model, paths: list[str]) -> float | None:
    """Median milliseconds to read, preprocess, score and post-process one study through the service's path."""
    times = []
    for path in paths:
        started = time.perf_counter()
        score_path(model, path, ignore_domain=True)  # the full path, even for a study the domain check would refuse
        times.append(time.perf_counter() - started)
    return round(1000.0 * statistics.median(times), 2) if times else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux: ``VmHWM`` of ``/proc/self/status``. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there: when the
    parent starts this process with vfork (Python's ``subprocess`` does), the kernel carries the parent's
    high-water mark over the exec, so a large parent would inflate every cell's number (measured on this project).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(usage / (1024.0 * 1024.0) if sys.platform == "darwin" else usage / 1024.0, 1)


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the cell process: 0 = done, 1 = the cell failed (reason in ``error.json``)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m medanomaly.evaluation.bench_cell CELL_DIR", file=sys.stderr)
        return 2
    directory = Path(args[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = run_cell(directory)
    except Exception as error:  # the process boundary: any failure becomes the cell's one-line reason
        logger.exception("cell failed")
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        (directory / "error.json").write_text(json.dumps({"error": reason.rstrip(": ")}, indent=2))
        return 1
    (directory / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

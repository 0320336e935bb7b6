"""The benchmark's outputs: results table, summary tables, ROC curves and heat-map sheets.

``results.csv`` has one row per cell; ``summary.csv`` / ``summary.md`` one per method and data set (mean ± standard
deviation over seeds); ``roc_<dataset>.png`` and ``heatmaps_<dataset>.png`` compare the methods on one picture.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.evaluation.bench_env import ENVIRONMENT
from medanomaly.evaluation.bench_runner import FAILED, METRICS

if TYPE_CHECKING:
    from medanomaly.evaluation.benchmark import BenchConfig, Cell

logger = logging.getLogger(__name__)

_METRICS = ("auroc", "auprc", "accuracy", "balanced_accuracy", "precision", "sensitivity", "specificity", "f1")
_BENCH = (
    "fit_seconds", "train_seconds", "epochs", "best_epoch", "stopped_because", "converged", "e2e_images_per_second",
    "latency_ms",
    "peak_rss_mb", "pseudo_auc", "n_train_normal", "n_train_abnormal", "n_train_mixed", "n_calibration_normal",
    "threshold_rule", "wall_seconds", "started", "loadavg_start",
)  # fmt: skip
RESULT_COLUMNS = (
    "dataset", "method", "base_method", "trains_on", "resolution", "seed", "status", "error", "auroc", "auroc_ci_low",
    "auroc_ci_high", *_METRICS[1:], "acc_normal_class", "acc_abnormal_class", "threshold", "n_normal", "n_abnormal",
    "n_failed", "normal_label", "images_per_second", *_BENCH, "params", "config_hash", "cell_dir",
)  # fmt: skip
_MEANS = (
    "auroc_ci_low", "auroc_ci_high", *_METRICS[1:], "acc_normal_class", "acc_abnormal_class", "fit_seconds",
    "train_seconds", "epochs", "images_per_second", "e2e_images_per_second", "latency_ms", "peak_rss_mb", "pseudo_auc",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "dataset", "method", "base_method", "trains_on", "resolution", "seeds", "seeds_ok", "seeds_budget_cut", "status",
    "error", "auroc_mean", "auroc_std", *_MEANS, "n_normal", "n_abnormal",
)  # fmt: skip


def cell_row(cell: Cell, out: Path) -> dict[str, Any]:
    """One ``results.csv`` row from a cell folder (its ``metrics.json``, or ``failed.json``)."""
    row: dict[str, Any] = {
        "dataset": cell.dataset.name, "method": cell.method.name, "base_method": cell.method.method,
        "seed": cell.seed, "config_hash": cell.key, "cell_dir": str(cell.directory.relative_to(out)),
        "normal_label": cell.dataset.normal_label, "trains_on": "+".join(cell.spec.get("needs", ["normal"])),
        "resolution": cell.spec.get("preprocessing", {}).get("resolution"),
    }  # fmt: skip
    if cell.status not in ("done", "cached"):
        record = _read(cell.directory / FAILED)
        error = cell.error or record.get("error") or "not run"
        return {**row, "status": "FAILED", "error": error, "wall_seconds": cell.seconds}
    metrics = _read(cell.directory / METRICS)
    bench = metrics.get("bench", {})
    low, high = metrics.get("auroc_ci95") or (None, None)
    per_class = metrics.get("per_class_accuracy") or {}
    row.update(status="ok", error="", auroc=metrics.get("auroc"), auroc_ci_low=low, auroc_ci_high=high)
    row.update({key: metrics.get(key) for key in (*_METRICS[1:], "threshold", "n_normal", "n_abnormal", "n_failed")})
    row.update(acc_normal_class=per_class.get("normal"), acc_abnormal_class=per_class.get("abnormal"))
    row.update({key: bench.get(key) for key in _BENCH}, images_per_second=metrics.get("images_per_second"))
    row["params"] = json.dumps(bench.get("params", {}), sort_keys=True)
    return row


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (data set, method), in the order of ``rows``: AUROC mean ± sample std over seeds, other metrics' means."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    summary = []
    for (dataset, method), group in groups.items():
        ok = [row for row in group if row["status"] == "ok"]
        failures = [row for row in group if row["status"] != "ok"]
        status = "ok" if not failures else ("FAILED" if not ok else f"{len(failures)} seed(s) failed")
        aurocs = [row["auroc"] for row in ok if _number(row["auroc"])]
        entry = {
            "dataset": dataset, "method": method, "base_method": group[0]["base_method"],
            "trains_on": group[0].get("trains_on", "normal"), "resolution": group[0].get("resolution"),
            "seeds": len(group),
            "seeds_ok": len(ok), "seeds_budget_cut": sum(1 for row in ok if row.get("converged") is False),
            "status": status, "error": failures[0]["error"] if failures else "",
            "auroc_mean": statistics.fmean(aurocs) if aurocs else None,
            "auroc_std": statistics.stdev(aurocs) if len(aurocs) > 1 else None,
            "n_normal": ok[0].get("n_normal") if ok else None, "n_abnormal": ok[0].get("n_abnormal") if ok else None,
        }  # fmt: skip
        for key in _MEANS:
            values = [float(row[key]) for row in ok if _number(row.get(key))]
            entry[key] = statistics.fmean(values) if values else None
        summary.append(entry)
    return summary


def write_csv(rows: Iterable[dict[str, Any]], columns: tuple[str, ...], path: Path) -> Path:
    """Rows as CSV with a fixed column order (floats to 6 significant digits, None as empty)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell_text(row.get(key)) for key in columns})
    return path


def write_all(cells: list[Cell], config: BenchConfig, out: Path) -> list[Path]:
    """Write every output file of the run; returns their paths."""
    from medanomaly.evaluation.bench_markdown import summary_markdown

    rows = [cell_row(cell, out) for cell in cells]
    summary = summarize(rows)
    written = [write_csv(rows, RESULT_COLUMNS, out / "results.csv")]
    written.append(write_csv(summary, SUMMARY_COLUMNS, out / "summary.csv"))
    loads = [float(row["loadavg_start"]) for row in rows if _number(row.get("loadavg_start"))]
    (out / "summary.md").write_text(summary_markdown(summary, config, _read(out / ENVIRONMENT), loads))
    written.append(out / "summary.md")
    for dataset in dict.fromkeys(cell.dataset.name for cell in cells):
        chosen = _first_ok_seed([cell for cell in cells if cell.dataset.name == dataset])
        for writer in (write_roc, write_heatmaps):
            try:
                path = writer(chosen, dataset, out)
            except (ValueError, OSError, KeyError) as error:
                logger.warning("%s for %s not drawn: %s", writer.__name__, dataset, error)
                continue
            if path is not None:
                written.append(path)
    return written


def _first_ok_seed(cells: list[Cell]) -> list[Cell]:
    """Per method, the successful cell with the lowest seed."""
    chosen: dict[str, Cell] = {}
    for cell in sorted(cells, key=lambda c: c.seed):
        if cell.status in ("done", "cached") and cell.method.name not in chosen:
            chosen[cell.method.name] = cell
    return [chosen[name] for name in dict.fromkeys(cell.method.name for cell in cells) if name in chosen]


def write_roc(cells: list[Cell], dataset: str, out: Path) -> Path | None:
    """All methods' ROC curves on one plot (each method's first successful seed)."""
    from medanomaly.evaluation.plots import plot_roc

    curves = {}
    for cell in cells:
        with (cell.directory / "scores.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        curves[f"{cell.method.name} s{cell.seed}"] = (
            np.array([int(r["label"]) for r in rows]),
            np.array([float(r["score"]) for r in rows]),
        )
    if not curves:
        return None
    return plot_roc(curves, out / f"roc_{dataset}.png", title=f"{dataset}: test split")


def write_heatmaps(cells: list[Cell], dataset: str, out: Path) -> Path | None:
    """The same test images with every method's anomaly map side by side (first successful seed)."""
    from medanomaly.evaluation.plots import plot_heatmap_sheet

    examples = {}
    for cell in cells:
        with np.load(cell.directory / "examples.npz", allow_pickle=False) as data:
            if "maps" in data.files:
                examples[cell.method.name] = {key: data[key] for key in data.files}
            else:
                logger.info("%s makes no anomaly maps: left out of the heat-map sheet", cell.method.name)
    if not examples:
        return None
    common = [str(p) for p in next(iter(examples.values()))["paths"]]
    for data in examples.values():
        common = [p for p in common if p in set(data["paths"].tolist())]
    if not common:
        return None
    first = next(iter(examples.values()))
    position = {str(p): i for i, p in enumerate(first["paths"])}
    rows = [(_row_name(p, int(first["labels"][position[p]])), first["images"][position[p]]) for p in common]
    columns = {}
    for name, data in examples.items():
        where = {str(p): i for i, p in enumerate(data["paths"])}
        columns[name] = [data["maps"][where[p]] for p in common]
    return plot_heatmap_sheet(rows, columns, out / f"heatmaps_{dataset}.png")


def _row_name(path: str, label: int) -> str:
    stem = Path(path).stem
    return f"{'abnormal' if label else 'normal'}\n{stem[:16]}{'…' if len(stem) > 16 else ''}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}

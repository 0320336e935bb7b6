"""``summary.md``: the protocol, the machine and one table per data set, ready to paste into a paper or a README."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medanomaly.evaluation.benchmark import BenchConfig
    from medanomaly.training import TrainConfig

_HEADER = (
    "| Method | Res. | AUROC (mean ± sd) | 95 % CI | AUPRC | Acc. | Bal. acc. | Sens. | Spec. | F1 | Pseudo-AUC "
    "| Fit s | img/s score | img/s e2e | Peak MB | Seeds |"
)
_RULE = "|---" * _HEADER.count(" | ") + "|---|"
_BUSY_LOAD = 0.5  # 1-minute load average above which the machine counts as shared


def summary_markdown(
    summary: list[dict[str, Any]], config: BenchConfig, environment: dict[str, Any], cell_loads: Sequence[float] = ()
) -> str:
    """The whole ``summary.md`` text; ``cell_loads`` are the 1-minute load averages at each cell's start."""
    lines = ["# Benchmark summary", "", *_protocol(config), "", *_machine(environment, list(cell_loads)), ""]
    for dataset in dict.fromkeys(entry["dataset"] for entry in summary):
        entries = [entry for entry in summary if entry["dataset"] == dataset]
        lines += [f"## {dataset}", "", _test_line(entries, config), "", *summary_table(entries)]
        failures = [entry for entry in entries if entry["error"]]
        if failures:
            lines += ["", "Failures:"]
            lines += [f"- {entry['method']}: {entry['error']}" for entry in failures]
        lines.append("")
    lines += _legend()
    return "\n".join(lines) + "\n"


def summary_table(entries: list[dict[str, Any]]) -> list[str]:
    """The Markdown table (header, rule, one row per summary entry) of one data set."""
    return [_HEADER, _RULE, *(_table_row(entry) for entry in entries)]


def _protocol(config: BenchConfig) -> list[str]:
    pre = config.preprocessing
    limits = _schedules(config)
    tiny = " **Tiny smoke-run settings (`--tiny`): not comparable to published numbers.**" if config.tiny else ""
    return [
        "Protocol: one-class methods train on the train split's normal images only; methods that learn from a "
        f"mixed unlabelled set get {config.mixed_fraction:g} of the train normals plus all train abnormals "
        "(labels withheld); "
        "supervised methods get the labelled train abnormals. The threshold is calibrated on held-out normals "
        f"({_rule(config)}; the val split's normals when there is one, else 10 % of the "
        "train normals), then the official test split is scored once. "
        f"Input side: the Res. column; {pre.channels} channel(s), normalisation `{pre.normalize}`; "
        f"{limits}; {'seed 0' if config.seeds == 1 else f'seeds 0–{config.seeds - 1}'}.{tiny}",
    ]


def _schedules(config: BenchConfig) -> str:
    """Each method's training schedule in words (one phrase when all methods share it)."""
    from medanomaly.evaluation.benchmark import method_schedule  # deferred: benchmark imports this module

    texts = {spec.name: _schedule_text(method_schedule(config, spec)) for spec in config.methods}
    if len(set(texts.values())) <= 1:
        return next(iter(texts.values()), _schedule_text(config.train))
    return "training schedules: " + "; ".join(f"{name} {text}" for name, text in texts.items())


def _schedule_text(train: TrainConfig) -> str:
    text = f"at most {train.max_steps} steps" if train.max_steps else f"at most {train.max_epochs} epochs"
    if train.patience:
        by = f" by more than {train.min_delta:.1%}" if train.min_delta else ""
        text += f", early stopping after {train.patience} epochs without improvement{by}"
    if train.max_minutes:
        text += f" and {train.max_minutes:g} min of training per cell"
    return text


def _rule(config: BenchConfig) -> str:
    if config.calibration:
        return f"`{config.calibration}`"
    return "`percentile:95` of their scores for anomaly detectors, probability 0.5 for classifiers"


def _machine(environment: dict[str, Any], cell_loads: list[float]) -> list[str]:
    if not environment:
        return []
    machine, packages = environment.get("machine", {}), environment.get("packages", {})
    computing = [run for run in environment.get("runs", []) if run.get("cells_computed")]
    lines = [
        f"Machine: {machine.get('cpu', '?')}, {machine.get('usable_cores', '?')} cores, "
        f"{machine.get('ram_gb', '?')} GB RAM, {machine.get('os', '?')}; Python {environment.get('python', '?')}, "
        f"torch {packages.get('torch', '?')}, medanomaly {environment.get('medanomaly', '?')}.",
        "",
        f"Command: `{environment.get('command', '?')}`",
        "",
        *_computed(computing),
    ]
    loads = [run["loadavg_start"][0] for run in computing if run.get("loadavg_start")] + cell_loads
    if loads and max(loads) > _BUSY_LOAD:
        lines += [
            "",
            f"Note: the machine was busy (1-min load average up to {max(loads):.1f} when a run or a cell "
            "started, the benchmark's own work included); speeds and fit times are pessimistic. Each cell's load "
            "average is in results.csv.",
        ]
    return lines


def _computed(runs: list[dict[str, Any]]) -> list[str]:
    """When the cells were computed: one line per invocation that computed any."""
    lines = []
    for run in runs:
        if not run.get("cells_computed"):
            continue
        git = run.get("git") or {}
        commit = f"commit `{git['commit'][:12]}`{' + uncommitted changes' if git.get('dirty') else ''}" if git else ""
        when = f"{run.get('started', '?')} to {run.get('finished', '?')}"
        lines.append(f"- {run['cells_computed']} cell(s) computed {when}{', ' + commit if commit else ''}")
    return ["Cells computed (UTC):", *lines] if lines else []


def _test_line(entries: list[dict[str, Any]], config: BenchConfig) -> str:
    counted = next((entry for entry in entries if entry.get("n_normal") is not None), None)
    label = next((d.normal_label for d in config.data if (d.name or d.path.name) == entries[0]["dataset"]), None)
    if counted is None:
        return "Test split: no successful cell."
    normal = f"{counted['n_normal']} normal" + (f" ({label})" if label else "")
    return f"Test split: {normal} / {counted['n_abnormal']} abnormal studies."


def _table_row(entry: dict[str, Any]) -> str:
    if entry["seeds_ok"] == 0:
        reason = entry["error"].replace("|", "\\|")
        start = f"| {_name(entry)} | {_fmt(entry.get('resolution'), 0)} | FAILED: {reason} |"
        return start + "  |" * 12 + f" 0/{entry['seeds']} |"
    auroc = _fmt(entry["auroc_mean"])
    if entry["auroc_std"] is not None:
        auroc += f" ± {entry['auroc_std']:.3f}"
    ci = f"{_fmt(entry['auroc_ci_low'])}–{_fmt(entry['auroc_ci_high'])}"
    cells = [
        _name(entry), _fmt(entry.get("resolution"), 0), auroc, ci, _fmt(entry["auprc"]), _fmt(entry["accuracy"]),
        _fmt(entry["balanced_accuracy"]), _fmt(entry["sensitivity"]), _fmt(entry["specificity"]), _fmt(entry["f1"]),
        _fmt(entry.get("pseudo_auc")), _fmt(entry["fit_seconds"], 0),
        _fmt(entry["images_per_second"], 0), _fmt(entry["e2e_images_per_second"], 0), _fmt(entry["peak_rss_mb"], 0),
        f"{entry['seeds_ok']}/{entry['seeds']}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _name(entry: dict[str, Any]) -> str:
    """The method's name, marked: † trains on labelled abnormal images, ‡ on an unlabelled mixed set.

    § when the time budget stopped the training of any seed before it converged.
    """
    trains_on = str(entry.get("trains_on") or "")
    marks = (" †" if "abnormal" in trains_on else "") + (" ‡" if "mixed" in trains_on else "")
    return entry["method"] + marks + (" §" if entry.get("seeds_budget_cut") else "")


def _legend() -> list[str]:
    return [
        "† supervised: trained on labelled abnormal images too (an upper reference, not an unsupervised result). "
        "‡ learns from an unlabelled mixed set (train abnormals with their labels withheld). "
        "§ the time budget stopped training before it converged (in at least one seed; column converged in "
        "results.csv): the row understates the method.",
        "",
        "AUROC: mean over seeds ± sample standard deviation; 95 % CI: mean of the per-seed stratified bootstrap "
        "intervals (1,000 resamples). Accuracy, balanced accuracy, sensitivity, specificity and F1 are at the "
        "calibrated threshold, means over seeds. Res.: the method's input side in pixels. Pseudo-AUC: the label-free "
        "model-selection number a method records (anomalypro: held-out healthy vs held-out mixed images). "
        "Fit s: training + calibration wall time (reading images included). "
        "img/s score: batched scoring of preprocessed test images; img/s e2e: the whole test split read, "
        "preprocessed, scored and post-processed. Peak MB: peak resident memory of the cell's process. Per-seed "
        "values, per-class accuracies, latency per study and hyper-parameters are in results.csv.",
    ]


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"

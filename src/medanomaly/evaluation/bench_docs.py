"""The documentation's benchmark tables, generated from the committed run folders under ``bench/results/``.

A document marks each generated table with an HTML comment pair; everything between the pair is replaced, the prose
around it is kept:

- ``<!-- table:summary run=RUN dataset=DATASET -->`` … ``<!-- /table -->``: the summary table of one data set of the
  run folder ``bench/results/RUN`` (its ``summary.csv``), the same rows ``summary.md`` shows.
- ``<!-- table:reproduction -->`` … ``<!-- /table -->``: one row per line of ``bench/published.csv``: the paper's
  number and protocol, ours from the named run under the same protocol, and the gap.

``python bench/make_tables.py`` rewrites every marked table of ``docs/benchmarks.md`` and ``docs/reproduction.md``;
``--check`` only reports whether they are current (for CI).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medanomaly.evaluation.bench_markdown import summary_table

GAP_TOLERANCE = 0.03  # issue #15: a method more than this below its paper on the same protocol is a defect
_MARKER = re.compile(r"(<!-- table:(\w+)([^>]*?) -->\n)(.*?)(<!-- /table -->)", re.DOTALL)
_INTEGERS = ("seeds", "seeds_ok", "seeds_budget_cut", "n_normal", "n_abnormal", "resolution")
_TEXT = ("dataset", "method", "base_method", "trains_on", "status", "error")


@dataclass(frozen=True)
class Published:
    """One published result we hold a method against (a line of ``bench/published.csv``)."""

    method: str
    dataset: str
    auroc: float | None
    protocol: str
    citation: str
    run: str


def read_summary(run_dir: Path) -> list[dict[str, Any]]:
    """``summary.csv`` of a run folder with numbers parsed (empty cells → None)."""
    path = run_dir / "summary.csv"
    if not path.is_file():
        msg = f"{path}: no summary.csv; run `medanomaly bench --out {run_dir}` (or commit its results) first"
        raise FileNotFoundError(msg)
    with path.open(newline="") as handle:
        return [_parse_row(row) for row in csv.DictReader(handle)]


def _parse_row(row: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, text in row.items():
        if key in _TEXT:
            parsed[key] = text
        elif text == "":
            parsed[key] = None
        else:
            parsed[key] = int(float(text)) if key in _INTEGERS else float(text)
    return parsed


def read_published(path: Path) -> list[Published]:
    """The rows of ``bench/published.csv`` (columns method, dataset, auroc, protocol, citation, run)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            Published(
                method=row["method"], dataset=row["dataset"], auroc=float(row["auroc"]) if row["auroc"] else None,
                protocol=row["protocol"], citation=row["citation"], run=row["run"],
            )  # fmt: skip
            for row in csv.DictReader(handle)
        ]


def reproduction_table(published: list[Published], results: Path) -> list[str]:
    """Markdown rows: paper vs ours on the same protocol, the gap, and whether it is within tolerance."""
    lines = [
        "| Method | Data set | Paper AUROC | Paper protocol (source) | Ours AUROC (mean ± sd) | 95 % CI | Seeds "
        "| Gap | Verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in published:
        ours = _our_entry(entry, results)
        lines.append(_reproduction_row(entry, ours))
    return lines


def _our_entry(entry: Published, results: Path) -> dict[str, Any] | None:
    if not entry.run or not (results / entry.run / "summary.csv").is_file():
        return None
    rows = read_summary(results / entry.run)
    return next((row for row in rows if row["method"] == entry.method and row["dataset"] == entry.dataset), None)


def _reproduction_row(entry: Published, ours: dict[str, Any] | None) -> str:
    paper = f"{entry.auroc:.3f}" if entry.auroc is not None else "–"
    source = f"{entry.protocol} ({entry.citation})"
    if ours is None or ours.get("auroc_mean") is None:
        verdict = "no run on this protocol yet" if entry.auroc is not None else "no published number to compare"
        return f"| {entry.method} | {entry.dataset} | {paper} | {source} | – | – | – | – | {verdict} |"
    mean, std = ours["auroc_mean"], ours.get("auroc_std")
    auroc = f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    ci = f"{ours['auroc_ci_low']:.3f}–{ours['auroc_ci_high']:.3f}" if ours.get("auroc_ci_low") is not None else "–"
    seeds = f"{ours['seeds_ok']}/{ours['seeds']}"
    if entry.auroc is None:
        gap, verdict = "–", "no published number to compare"
    else:
        delta = mean - entry.auroc
        gap = f"{delta:+.3f}"
        verdict = "within 0.03 or above" if delta >= -GAP_TOLERANCE else "**below by more than 0.03** (see notes)"
    return f"| {entry.method} | {entry.dataset} | {paper} | {source} | {auroc} | {ci} | {seeds} | {gap} | {verdict} |"


def render(text: str, results: Path, published: Path) -> str:
    """``text`` with every marked table regenerated from ``results`` (run folders) and ``published``."""

    def replace(match: re.Match[str]) -> str:
        kind, arguments = match.group(2), _arguments(match.group(3))
        if kind == "summary":
            rows = [row for row in read_summary(results / arguments["run"]) if row["dataset"] == arguments["dataset"]]
            if not rows:
                msg = f"run {arguments['run']!r} has no rows for data set {arguments['dataset']!r}"
                raise ValueError(msg)
            body = summary_table(rows)
        elif kind == "reproduction":
            body = reproduction_table(read_published(published), results)
        else:
            msg = f"unknown generated table kind {kind!r} (known: summary, reproduction)"
            raise ValueError(msg)
        return match.group(1) + "\n".join(body) + "\n" + match.group(5)

    return _MARKER.sub(replace, text)


def _arguments(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split())


def update_documents(documents: list[Path], results: Path, published: Path, check: bool = False) -> list[Path]:
    """Regenerate the marked tables of ``documents``; returns those that changed (or would, with ``check``)."""
    changed = []
    for document in documents:
        old = document.read_text(encoding="utf-8")
        new = render(old, results, published)
        if new != old:
            changed.append(document)
            if not check:
                document.write_text(new, encoding="utf-8")
    return changed

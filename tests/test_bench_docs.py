from pathlib import Path

import pytest

from medanomaly.evaluation.bench_docs import render, update_documents
from medanomaly.evaluation.bench_report import SUMMARY_COLUMNS, write_csv


def _summary_row(method: str, auroc: float, std: float | None) -> dict:
    return {
        "dataset": "chest", "method": method, "base_method": method, "trains_on": "normal", "resolution": 64,
        "seeds": 3, "seeds_ok": 3, "status": "ok", "error": "", "auroc_mean": auroc, "auroc_std": std,
        "auroc_ci_low": auroc - 0.02, "auroc_ci_high": auroc + 0.02, "auprc": 0.8, "accuracy": 0.7,
        "balanced_accuracy": 0.7, "sensitivity": 0.6, "specificity": 0.9, "f1": 0.7, "fit_seconds": 12.0,
        "images_per_second": 100.0, "e2e_images_per_second": 80.0, "peak_rss_mb": 900.0, "n_normal": 10,
        "n_abnormal": 12,
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    run = tmp_path / "results" / "run1"
    run.mkdir(parents=True)
    write_csv([_summary_row("good", 0.91, 0.01), _summary_row("weak", 0.70, 0.02)], SUMMARY_COLUMNS,
              run / "summary.csv")
    (tmp_path / "published.csv").write_text(
        "method,dataset,auroc,protocol,citation,run\n"
        "good,chest,0.92,one-class,Paper A,run1\n"
        "weak,chest,0.80,one-class,Paper B,run1\n"
        "other,chest,,MVTec only,Paper C,\n"
        "later,chest,0.85,one-class,Paper D,run9\n"
    )
    return tmp_path


def test_summary_table_is_generated_between_markers(results: Path) -> None:
    text = "intro\n<!-- table:summary run=run1 dataset=chest -->\nold table\n<!-- /table -->\noutro\n"
    out = render(text, results / "results", results / "published.csv")
    assert out.startswith("intro\n<!-- table:summary run=run1 dataset=chest -->\n| Method |")
    assert "old table" not in out
    assert "| good | 64 | 0.910 ± 0.010 | 0.890–0.930 |" in out
    assert out.endswith("<!-- /table -->\noutro\n")


def test_reproduction_verdicts(results: Path) -> None:
    text = "<!-- table:reproduction -->\n<!-- /table -->\n"
    out = render(text, results / "results", results / "published.csv")
    good, weak, other, later = (line for line in out.splitlines() if "(Paper " in line)
    assert "-0.010" in good and "within 0.03" in good
    assert "-0.100" in weak and "below by more than 0.03" in weak
    assert "no published number to compare" in other
    assert "no run on this protocol yet" in later


def test_unknown_dataset_and_check_mode(results: Path) -> None:
    bad = "<!-- table:summary run=run1 dataset=brain -->\n<!-- /table -->\n"
    with pytest.raises(ValueError, match="brain"):
        render(bad, results / "results", results / "published.csv")
    document = results / "doc.md"
    document.write_text("<!-- table:summary run=run1 dataset=chest -->\n<!-- /table -->\n")
    assert update_documents([document], results / "results", results / "published.csv", check=True) == [document]
    assert "| good |" not in document.read_text()
    update_documents([document], results / "results", results / "published.csv")
    assert update_documents([document], results / "results", results / "published.csv", check=True) == []

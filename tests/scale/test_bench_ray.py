"""``medanomaly bench --engine ray``: cells as Ray tasks on the 2-node cluster give the local engine's results.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medanomaly.cli.main import main
from medanomaly.data.synthetic import write_phantom_dataset

FAST = ["--tiny", "--epochs", "2", "--resolution", "32", "--batch-size", "16"]
#: Columns that measure the run (time, memory, machine load), not its results.
MEASURED = {"images_per_second", "fit_seconds", "train_seconds", "wall_seconds", "e2e_images_per_second",
            "latency_ms", "peak_rss_mb", "loadavg_start", "loadavg_end", "started", "torch_threads"}  # fmt: skip


def _bench(data: Path, out: Path, seeds: int, *engine: str) -> int:
    argv = ["bench", "--data", str(data), "--methods", "conv_ae", "--out", str(out), "--seeds", str(seeds), *FAST]
    return main([*argv, *engine])


def _results(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if k not in MEASURED} for row in rows]


def _scores(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted((out / "cells").rglob("scores.csv"))}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_cells_give_the_local_results_and_resume(tmp_path, ray_cluster, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # local cells on one thread, as Ray gives a 1-CPU task: same arithmetic
    data = write_phantom_dataset(tmp_path / "phantoms", n_train=30, n_test_normal=5, n_test_abnormal=5, size=32, seed=5)
    assert _bench(data, tmp_path / "local", 2) == 0
    ray = ("--engine", "ray", "--cell-cpus", "1", "--cell-memory-gb", "1")
    assert _bench(data, tmp_path / "ray", 1, *ray) == 0  # a run that stopped after its first cell
    seed0 = tmp_path / "ray" / "cells" / data.name / "conv_ae" / "seed0" / "metrics.json"
    before = seed0.stat().st_mtime_ns
    capsys.readouterr()
    assert _bench(data, tmp_path / "ray", 2, *ray) == 0
    printed = capsys.readouterr().out
    assert "seed 0  reused from an earlier run" in printed and "seed 1  done in" in printed
    assert seed0.stat().st_mtime_ns == before  # not run again
    local, on_ray = _results(tmp_path / "local"), _results(tmp_path / "ray")
    assert [(r["method"], r["seed"], r["status"]) for r in on_ray] == [("conv_ae", "0", "ok"), ("conv_ae", "1", "ok")]
    assert on_ray == local  # AUROC, thresholds, counts, training facts: every result column
    assert _scores(tmp_path / "ray") == _scores(tmp_path / "local") != {}  # every test image's score, to 6 digits

"""``medanomaly bench``: cells in subprocesses, resuming, failures in the table, outputs; plus the pure helpers."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medanomaly.cli.main import main
from medanomaly.data.datasets import load_index
from medanomaly.data.synthetic import write_phantom_dataset
from medanomaly.evaluation.bench_progress import Progress, format_duration
from medanomaly.evaluation.bench_report import summarize
from medanomaly.evaluation.benchmark import (
    BenchConfig,
    Cell,
    DataSpec,
    cell_state,
    parse_data_spec,
    parse_methods,
    pick_examples,
    plan_cells,
)

FAST = ["--tiny", "--epochs", "2", "--resolution", "32", "--batch-size", "16"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread_per_cell() -> Iterator[None]:
    """Cell processes inherit the environment: one thread each keeps tiny cells fast on a shared 2-core machine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px phantom set: 30 train + 4 val normals, 5 + 5 test."""
    root = tmp_path_factory.mktemp("bench_data") / "phantoms"
    return write_phantom_dataset(root, n_train=30, n_test_normal=5, n_test_abnormal=5, size=32, seed=5)


@pytest.fixture(scope="module")
def first_run(bench_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """conv_ae with 2 seeds through the CLI."""
    out = tmp_path_factory.mktemp("bench") / "out"
    code = main(["bench", "--data", str(bench_data), "--methods", "conv_ae", "--seeds", "2", "--out", str(out), *FAST])
    return out, code


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_bench_writes_every_output(first_run: tuple[Path, int]) -> None:
    out, code = first_run
    assert code == 0
    rows = _rows(out / "results.csv")
    assert [(r["method"], r["seed"], r["status"]) for r in rows] == [("conv_ae", "0", "ok"), ("conv_ae", "1", "ok")]
    for row in rows:
        assert 0.0 <= float(row["auroc"]) <= 1.0
        assert float(row["auroc_ci_low"]) <= float(row["auroc"]) <= float(row["auroc_ci_high"])
        assert int(row["n_normal"]) == 5 and int(row["n_abnormal"]) == 5
        assert float(row["peak_rss_mb"]) > 50  # a Python process with torch loaded
        assert float(row["fit_seconds"]) > 0 and float(row["e2e_images_per_second"]) > 0
        assert json.loads(row["params"])["width"] == 16  # conv_ae's tiny_params
        assert row["epochs"] == "2"  # --epochs wins over tiny_train
    summary = _rows(out / "summary.csv")
    assert len(summary) == 1 and summary[0]["seeds_ok"] == "2"
    aurocs = [float(r["auroc"]) for r in rows]
    assert float(summary[0]["auroc_mean"]) == pytest.approx(np.mean(aurocs), abs=1e-5)
    assert float(summary[0]["auroc_std"]) == pytest.approx(np.std(aurocs, ddof=1), abs=1e-5)
    markdown = (out / "summary.md").read_text()
    assert "| conv_ae | 32 | " in markdown and "2/2" in markdown and "--tiny" in markdown  # with its resolution
    header = next(line for line in markdown.splitlines() if line.startswith("| Method"))
    lines = markdown.splitlines()
    rule, row = lines[lines.index(header) + 1], lines[lines.index(header) + 2]
    assert "Pseudo-AUC" in header and header.count("|") == rule.count("|") == row.count("|")
    for name in ("roc_phantoms.png", "heatmaps_phantoms.png"):
        assert Image.open(out / name).size[0] > 200
    environment = json.loads((out / "environment.json").read_text())
    assert environment["machine"]["logical_cores"] >= 1 and environment["packages"]["torch"]
    assert environment["settings"]["seeds"] == 2 and len(environment["runs"]) == 1


def test_cell_folder_holds_model_metrics_scores_examples(first_run: tuple[Path, int]) -> None:
    out, _ = first_run
    cell = out / "cells" / "phantoms" / "conv_ae" / "seed1"
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["method"] == "conv_ae" and len(metrics["bench"]["config_hash"]) == 16
    assert (cell / "model" / "model.json").is_file() and (cell / "model" / "weights.pt").is_file()
    assert not (cell / "checkpoint").exists()  # removed once training is over
    assert len(_rows(cell / "scores.csv")) == 10
    with np.load(cell / "examples.npz", allow_pickle=False) as examples:
        assert examples["labels"].tolist() == [1, 1, 1, 0]  # 3 abnormal + 1 normal, the same for every method
        assert examples["maps"].shape == (4, 32, 32) and examples["images"].shape == (4, 1, 32, 32)


def test_resume_reuses_cells_and_a_failing_method_does_not_stop_the_others(
    first_run: tuple[Path, int], bench_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = first_run
    reused = out / "cells" / "phantoms" / "conv_ae" / "seed0" / "metrics.json"
    before = reused.stat().st_mtime_ns
    argv = ["bench", "--data", str(bench_data), "--out", str(out), "--seeds", "1", *FAST]
    argv += ["--methods", "broken=conv_ae,conv_ae_l2=conv_ae,conv_ae", "--param", "broken.loss=bogus"]
    argv += ["--param", "conv_ae_l2.loss=l2"]
    assert main(argv) == 1  # a cell failed
    printed = capsys.readouterr().out
    assert "reused from an earlier run" in printed and "FAILED" in printed
    assert reused.stat().st_mtime_ns == before
    rows = {r["method"]: r for r in _rows(out / "results.csv")}
    assert rows["broken"]["status"] == "FAILED" and "loss must be" in rows["broken"]["error"]
    assert rows["conv_ae_l2"]["status"] == "ok" and json.loads(rows["conv_ae_l2"]["params"])["loss"] == "l2"
    assert rows["conv_ae"]["status"] == "ok"
    markdown = (out / "summary.md").read_text()
    failed = next(line for line in markdown.splitlines() if "FAILED: ValueError: loss must be" in line)
    assert failed.count("|") == markdown.splitlines()[markdown.splitlines().index(failed) - 1].count("|")
    assert len(json.loads((out / "environment.json").read_text())["runs"]) == 2


def test_unknown_method_fails_fast(bench_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--data", str(bench_data), "--methods", "conv_ae,no_such_method", "--out", str(tmp_path / "o")]
    code = main(argv)
    assert code == 2
    error = capsys.readouterr().err
    assert "unknown method 'no_such_method'" in error and "conv_ae" in error
    assert not (tmp_path / "o").exists()


def test_bad_parameter_and_data_fail_fast(bench_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no hyper-parameter latent_size"):
        parse_methods("conv_ae", ["conv_ae.latent_size=3"])
    with pytest.raises(ValueError, match="METHOD.KEY=VALUE"):
        parse_methods("conv_ae", ["patchcore.k=3"])
    flat = tmp_path / "flat" / "NORMAL"
    flat.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "a.png")
    config = BenchConfig(data=[DataSpec(tmp_path / "flat")], methods=parse_methods("conv_ae"))
    with pytest.raises(ValueError, match="no 'test' split"):
        plan_cells(config, tmp_path / "out")


def test_per_method_preprocessing_and_training(bench_data: Path, tmp_path: Path) -> None:
    items = ["big.preprocessing.resolution=64", "big.train.batch_size=8", "big.width=8"]
    methods = parse_methods("conv_ae,big=conv_ae", items)
    config = BenchConfig(data=[DataSpec(bench_data)], methods=methods, seeds=1, train_overrides={"batch_size": 4})
    plain, big = plan_cells(config, tmp_path)
    assert plain.spec["preprocessing"]["resolution"] == 128 and big.spec["preprocessing"]["resolution"] == 64
    assert plain.spec["train"]["batch_size"] == 4 and big.spec["train"]["batch_size"] == 8
    assert big.spec["params"] == {"width": 8} and plain.spec["params"] == {}
    with pytest.raises(ValueError, match="no hyper-parameter resolutoin"):
        parse_methods("conv_ae", ["conv_ae.preprocessing.resolutoin=64"])


def test_each_method_gets_its_own_default_resolution_unless_given(bench_data: Path, tmp_path: Path) -> None:
    from medanomaly.cli.bench import config_from
    from medanomaly.cli.main import build_parser

    def resolutions(*extra: str) -> dict[str, int]:
        args = build_parser().parse_args(["bench", "--data", str(bench_data), "--out", str(tmp_path), *extra])
        cells = plan_cells(config_from(args), tmp_path)
        return {cell.spec["name"]: cell.spec["preprocessing"]["resolution"] for cell in cells}

    assert resolutions("--methods", "region_gaussian,firefly_svm,ganomaly,fanogan", "--seeds", "1") == {
        "region_gaussian": 224,  # its default_resolution, as `medanomaly train` would use
        "firefly_svm": 128,
        "ganomaly": 64,  # the GAN baselines' CPU size
        "fanogan": 64,
    }
    assert set(resolutions("--methods", "region_gaussian", "--seeds", "1", "--resolution", "64").values()) == {64}


def test_each_method_gets_its_own_schedule_unless_given(bench_data: Path, tmp_path: Path) -> None:
    from medanomaly.cli.bench import config_from
    from medanomaly.cli.main import build_parser
    from medanomaly.registry import detector_class

    def train_of(*extra: str) -> dict[str, object]:
        argv = ["bench", "--data", str(bench_data), "--out", str(tmp_path), "--methods", "anatpaste", "--seeds", "1"]
        (cell,) = plan_cells(config_from(build_parser().parse_args([*argv, *extra])), tmp_path)
        return cell.spec["train"]

    own = detector_class("anatpaste").default_train
    assert {key: train_of()[key] for key in own} == own
    assert train_of("--epochs", "2")["max_epochs"] == 2


def test_data_spec_parsing(tmp_path: Path) -> None:
    spec = parse_data_spec("../shared/data/covid_ct_cropped:CT_NonCOVID")
    assert spec.path == Path("../shared/data/covid_ct_cropped") and spec.normal_label == "CT_NonCOVID"
    assert spec.name == "covid_ct_cropped"
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert parse_data_spec(str(odd)) == DataSpec(odd, None, "a:b")


def test_config_hash_tracks_the_configuration(bench_data: Path, tmp_path: Path) -> None:
    def plan(**changes: object) -> list[Cell]:
        base = {"data": [DataSpec(bench_data)], "methods": parse_methods("conv_ae"), "seeds": 2, "tiny": True}
        return plan_cells(BenchConfig(**{**base, **changes}), tmp_path)

    cells = plan()
    assert [c.seed for c in cells] == [0, 1] and cells[0].key != cells[1].key
    assert [c.key for c in plan()] == [c.key for c in cells]  # stable
    assert plan(methods=parse_methods("conv_ae", ["conv_ae.width=8"]))[0].key != cells[0].key
    assert plan(tiny=False)[0].key != cells[0].key
    # a metrics.json without this configuration's hash (e.g. written before an interruption) is redone
    cell = cells[0]
    cell.directory.mkdir(parents=True)
    (cell.directory / "metrics.json").write_text(json.dumps({"auroc": 0.5}))
    assert cell_state(cell)[0] == "todo"
    (cell.directory / "metrics.json").write_text(json.dumps({"auroc": 0.5, "bench": {"config_hash": cell.key}}))
    assert cell_state(cell)[0] == "done"


def test_a_relative_data_path_plans_like_an_absolute_one(
    bench_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    methods = parse_methods("conv_ae")
    (absolute,) = plan_cells(BenchConfig(data=[DataSpec(bench_data)], methods=methods, seeds=1), tmp_path)
    monkeypatch.chdir(bench_data.parent)
    (relative,) = plan_cells(BenchConfig(data=[parse_data_spec(bench_data.name)], methods=methods, seeds=1), tmp_path)
    assert relative.key == absolute.key
    assert relative.spec["examples"] == absolute.spec["examples"]  # as the cell process will see them
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in relative.spec["examples"])


def test_examples_are_fixed_and_balanced(bench_data: Path) -> None:
    index = load_index(bench_data)
    chosen = pick_examples(index, 3, 1)
    assert chosen == pick_examples(index, 3, 1)
    assert [index.is_normal(s) for p in chosen for s in index.samples if s.path == p] == [False, False, False, True]


def test_summary_statistics_and_failures() -> None:
    def row(method: str, seed: int, auroc: float | None, status: str = "ok") -> dict:
        error = "" if status == "ok" else "boom"
        base = {"dataset": "d", "method": method, "base_method": method, "seed": seed, "status": status}
        return {**base, "error": error, "auroc": auroc, "fit_seconds": 10.0 * (seed + 1)}

    summary = summarize([row("a", 0, 0.7), row("a", 1, 0.8), row("b", 0, None, "FAILED"), row("c", 0, 0.6)])
    a, b, c = summary
    assert a["auroc_mean"] == pytest.approx(0.75) and a["auroc_std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert a["fit_seconds"] == pytest.approx(15.0) and a["status"] == "ok"
    assert b["status"] == "FAILED" and b["error"] == "boom" and b["auroc_mean"] is None
    assert c["auroc_std"] is None  # one seed: no spread


def test_summary_markdown_marks_supervised_rows_and_failures() -> None:
    from medanomaly.evaluation.bench_markdown import summary_markdown

    base = {"dataset": "d", "seeds": 1, "error": "", "n_normal": 5, "n_abnormal": 4}
    metrics = dict.fromkeys(("auroc_ci_low", "auroc_ci_high", "auprc", "accuracy", "balanced_accuracy"), 0.5)
    metrics |= dict.fromkeys(("sensitivity", "specificity", "f1", "fit_seconds", "images_per_second"), 0.5)
    metrics |= {"e2e_images_per_second": 1.0, "peak_rss_mb": 100.0, "auroc_mean": 0.9, "auroc_std": None}
    ok = {**base, **metrics, "method": "clf", "trains_on": "abnormal+normal", "seeds_ok": 1, "resolution": 128}
    failed = {**base, "method": "bad", "trains_on": "normal", "seeds_ok": 0, "error": "ValueError: x|y"}
    text = summary_markdown([ok, failed], BenchConfig(data=[], methods=[], seeds=1), {})
    assert "| clf † | 128 | 0.900 | 0.500–0.500 |" in text and "seed 0." in text
    assert "| bad | – | FAILED: ValueError: x\\|y |" in text  # a pipe in the reason must not break the table
    assert "Test split: 5 normal / 4 abnormal studies." in text


def test_summary_markdown_states_each_methods_own_schedule(bench_data: Path, tmp_path: Path) -> None:
    from medanomaly.cli.bench import config_from
    from medanomaly.cli.main import build_parser
    from medanomaly.evaluation.bench_markdown import summary_markdown

    argv = ["bench", "--data", str(bench_data), "--out", str(tmp_path), "--methods", "alocc,padim", "--seeds", "1"]
    text = summary_markdown([], config_from(build_parser().parse_args(argv)), {})
    assert "alocc at most 150 epochs, early stopping after 10 epochs without improvement by more than 0.1%" in text
    assert "padim at most 50 epochs, early stopping after 8 epochs without improvement;" in text
    same = summary_markdown([], config_from(build_parser().parse_args([*argv, "--epochs", "3", "--patience", "0"])), {})
    assert "; at most 3 epochs; seed 0." in same  # one schedule for all: said once


class _FakeCell:
    def __init__(self, method: str, dataset: str = "d") -> None:
        self.method = type("M", (), {"name": method})()
        self.dataset = type("D", (), {"name": dataset})()
        self.label, self.status, self.error, self.seconds = f"{dataset}/{method}", "done", "", None


def test_progress_estimates_time_left_from_finished_cells() -> None:
    now = [0.0]
    lines: list[str] = []
    cells = [_FakeCell("a"), _FakeCell("a"), _FakeCell("b"), _FakeCell("a")]
    progress = Progress(cells, [True, True, True, False], lines.append, clock=lambda: now[0])
    assert progress.estimate_left(0) is None  # nothing finished yet
    cells[0].seconds, now[0] = 100.0, 100.0
    progress.finished(1, cells[0], cached=False, auroc=0.7)
    assert progress.estimate_left(1) == pytest.approx(200.0)  # cell 2 (same method) + cell 3 (any), cell 4 reused
    assert lines[-1].startswith("[1/4] d/a  done in 1m40s  AUROC 0.700") and "~3m20s left" in lines[-1]
    assert format_duration(7260) == "2h01m" and format_duration(None) == "?"

"""The benchmark: every (method, data set, seed) cell trained, calibrated and tested the same way, one table out.

Each cell runs in a fresh Python process (:mod:`medanomaly.evaluation.bench_cell`) so that its peak memory is its
own and a crash (an exception, the kernel's OOM killer, a hard timeout) ends that cell only. A finished cell keeps
``metrics.json`` with the hash of its configuration; a run over the same output folder reuses every cell whose hash
still matches, so an interrupted benchmark continues where it stopped. Torch methods also checkpoint each epoch
into the cell folder and resume mid-training.

Protocol (the one of SQUID, Xiang et al., CVPR 2023, https://arxiv.org/abs/2111.13495, on the ZhangLab chest X-rays):
one-class methods train on the train split's normals only; methods that need a mixed unlabelled set get a share of
the train normals plus all train abnormals with their labels withheld (:attr:`BenchConfig.mixed_fraction`);
supervised methods get the labelled train abnormals. The threshold is calibrated on held-out normals exactly as
``medanomaly train`` does, and the test split is scored by :func:`medanomaly.evaluation.evaluate.evaluate_model`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medanomaly.data.datasets import DatasetIndex, load_index
from medanomaly.evaluation import bench_env, bench_report
from medanomaly.evaluation.bench_progress import Progress
from medanomaly.evaluation.bench_runner import CELL_SPEC, FAILED, METRICS, Outcome, run_in_subprocess
from medanomaly.evaluation.bench_spec import DataSpec, MethodSpec, parse_data_spec, parse_methods
from medanomaly.model import Postprocessing
from medanomaly.registry import detector_class
from medanomaly.training import TrainConfig
from medanomaly.transforms import Preprocessing

logger = logging.getLogger(__name__)
__all__ = [
    "BenchConfig", "Cell", "DataSpec", "MethodSpec", "cell_state", "config_hash", "parse_data_spec", "parse_methods",
    "pick_examples", "plan_cells", "run_benchmark",
]  # fmt: skip

# Paths that depend on where things live, not on what is computed (the data set's identity is ``data_id``).
_HASH_IGNORED = ("checkpoint_dir", "progress", "examples", "resume", "data")


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run needs besides the output folder.

    Attributes:
        data: Data sets.
        methods: Methods (columns).
        seeds: Seeds 0 .. seeds-1 per (method, data set).
        preprocessing: Shared preprocessing (resolution etc.).
        postprocessing: Shared map post-processing and score aggregation.
        train: Base training-loop settings; ``max_minutes`` bounds each cell's training.
        train_overrides: Training settings given explicitly; they win over a method's ``tiny_train``.
        tiny: Use each method's ``tiny_params`` / ``tiny_train`` (smoke run).
        calibration: Threshold rule (None = the method's default, as ``medanomaly train``).
        mixed_fraction: Share of train normals put into the mixed set A of methods that need one.
        cell_timeout_minutes: Hard limit on a cell's whole process (training + testing); None = none.
        retry_failed: Run failed cells again (True) or keep their recorded failure (False).
        n_examples: (abnormal, normal) test images shown in the heat-map sheet.
    """

    data: list[DataSpec]
    methods: list[MethodSpec]
    seeds: int = 3
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False
    calibration: str | None = None
    mixed_fraction: float = 0.5
    cell_timeout_minutes: float | None = None
    retry_failed: bool = True
    n_examples: tuple[int, int] = (3, 1)


@dataclass
class Cell:
    """One (data set, method, seed) run.

    Attributes:
        dataset: Its data set.
        method: Its method.
        seed: Its seed.
        directory: ``OUT/cells/<dataset>/<method>/seed<k>``.
        spec: The JSON the cell process reads (``cell.json``).
        key: Hash of the configuration (``spec`` without run-local paths).
        status: ``pending``, ``done``, ``cached``, ``failed``.
        error: One-line reason when failed.
        seconds: Wall time of the cell process.
    """

    dataset: DataSpec
    method: MethodSpec
    seed: int
    directory: Path
    spec: dict[str, Any]
    key: str
    status: str = "pending"
    error: str = ""
    seconds: float | None = None

    @property
    def label(self) -> str:
        """``dataset / method / seed k`` for progress lines."""
        return f"{self.dataset.name} / {self.method.name} / seed {self.seed}"


def plan_cells(config: BenchConfig, out: Path) -> list[Cell]:
    """All cells of the run, data set by data set, method by method, seed by seed; data checked first."""
    if config.seeds < 1:
        msg = f"--seeds must be at least 1, got {config.seeds}"
        raise ValueError(msg)
    if not 0.0 < config.mixed_fraction < 1.0:
        msg = f"--mixed-fraction must be in (0, 1), got {config.mixed_fraction}"
        raise ValueError(msg)
    datasets = _unique_names(config.data)
    cells = []
    for dataset in datasets:
        dataset = replace(dataset, path=dataset.path.resolve())  # the cell process may run elsewhere
        index = load_index(dataset.path, dataset.normal_label)
        _check_test_split(index)
        dataset = replace(dataset, normal_label=index.normal_label)
        common: dict[str, Any] = {"data": str(dataset.path), "normal_label": index.normal_label}
        common["data_id"] = data_id(index)
        common["examples"] = [str(path) for path in pick_examples(index, *config.n_examples)]
        for method in config.methods:
            for seed in range(config.seeds):
                directory = out / "cells" / dataset.name / method.name / f"seed{seed}"
                spec = {**common, **_method_spec(config, method, seed, directory), "dataset": dataset.name}
                cells.append(Cell(dataset, method, seed, directory, spec, config_hash(spec)))
    return cells


def _unique_names(data: list[DataSpec]) -> list[DataSpec]:
    if not data:
        msg = "give at least one --data DIR[:NORMAL_LABEL]"
        raise ValueError(msg)
    seen: dict[str, int] = {}
    unique = []
    for spec in data:
        name = spec.name or spec.path.name
        seen[name] = seen.get(name, 0) + 1
        unique.append(replace(spec, name=name if seen[name] == 1 else f"{name}_{seen[name]}"))
    return unique


def _check_test_split(index: DatasetIndex) -> None:
    test = index.select(split="test")
    if not test:
        msg = f"{index.root}: no 'test' split; the benchmark scores the official test split (<test>/<label>/ folders)"
        raise ValueError(msg)
    if all(index.is_normal(s) for s in test) or not any(index.is_normal(s) for s in test):
        msg = f"{index.root}: the test split needs both normal ({index.normal_label}) and abnormal studies"
        raise ValueError(msg)


def method_schedule(config: BenchConfig, method: MethodSpec) -> TrainConfig:
    """The training settings ``method``'s cells use: the run's, then tiny ones, explicit ones and the method's own."""
    tiny_train = detector_class(method.method).tiny_train if config.tiny else {}
    return replace(config.train, **{**tiny_train, **config.train_overrides, **method.train})


def _method_spec(config: BenchConfig, method: MethodSpec, seed: int, directory: Path) -> dict[str, Any]:
    cls = detector_class(method.method)
    params = {**(cls.tiny_params if config.tiny else {}), **method.params}
    train = method_schedule(config, method)
    train = replace(train, checkpoint_dir=str(directory / "checkpoint"), resume=True, progress=False)
    preprocessing = Preprocessing.from_dict({**config.preprocessing.to_dict(), **method.preprocessing})
    return {
        "name": method.name,
        "method": method.method,
        "needs": sorted(cls.needs),
        "params": params,
        "train": train.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "postprocessing": asdict(config.postprocessing),
        "calibration": config.calibration,
        "mixed_from_train": config.mixed_fraction if "mixed" in cls.needs else None,
        "seed": seed,
        "tiny": config.tiny,
    }


def settings_dict(config: BenchConfig) -> dict[str, Any]:
    """The resolved configuration as JSON (recorded in ``environment.json``)."""
    settings = asdict(config)
    settings["data"] = [{**asdict(d), "path": str(d.path)} for d in config.data]
    return json.loads(json.dumps(settings, default=str))


def config_hash(spec: dict[str, Any]) -> str:
    """SHA-256 (16 hex digits) of a cell's configuration, ignoring paths local to this output folder."""
    stable = {key: value for key, value in spec.items() if key not in _HASH_IGNORED}
    stable["train"] = {key: value for key, value in spec["train"].items() if key not in _HASH_IGNORED}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_id(index: DatasetIndex) -> str:
    """Cheap identity of a data set: every sample's path inside it, label, split and size (no file is read)."""
    digest = hashlib.sha256()
    base = index.root if index.root.is_dir() else index.root.parent
    for sample in sorted(index.samples, key=lambda s: str(s.path)):
        path = sample.path
        size = len(list(path.iterdir())) if path.is_dir() else path.stat().st_size
        inside = path.relative_to(base) if path.is_relative_to(base) else path
        digest.update(f"{inside}|{sample.label}|{sample.split}|{size}\n".encode())
    return digest.hexdigest()[:16]


def pick_examples(index: DatasetIndex, n_abnormal: int = 3, n_normal: int = 1) -> list[Path]:
    """The same few test studies for every method's heat map: abnormal ones first, chosen with a fixed seed."""
    rng = np.random.default_rng(0)
    chosen = []
    for normal, count in ((False, n_abnormal), (True, n_normal)):
        pool = sorted(index.select(split="test", normal=normal), key=lambda s: str(s.path))
        picks = sorted(rng.choice(len(pool), size=min(count, len(pool)), replace=False).tolist()) if pool else []
        chosen += [pool[i].path for i in picks]
    return chosen


def cell_state(cell: Cell) -> tuple[str, dict[str, Any] | None]:
    """``("done", metrics)`` for a finished cell of this configuration, ``("failed", record)`` or ``("todo", None)``.

    Only a record stamped with the cell's configuration hash counts; anything else is redone.
    """
    for name, state in ((METRICS, "done"), (FAILED, "failed")):
        path = cell.directory / name
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            if record.get("bench", {}).get("config_hash") == cell.key:
                return state, record
    return "todo", None


def run_benchmark(
    config: BenchConfig,
    out: str | Path,
    *,
    echo: Callable[[str], None] | None = None,
    live: Callable[[str], None] | None = None,
    dry_run: bool = False,
    command: str | None = None,
    engine: CellEngine | None = None,
) -> list[Cell]:
    """Run (or reuse) every cell, then write the results, summary, plots and environment into ``out``.

    Args:
        config: What to run.
        out: Output folder (created; reused to resume).
        echo: Prints a progress line (the CLI passes ``print``); None = the logger.
        live: Rewrites a status line in place while a cell runs (a terminal); None = occasional lines.
        dry_run: Only list which cells would run and which are reused.
        command: The command line for ``environment.json`` (default: ``sys.argv``).
        engine: Runs the cells (default :class:`LocalCells`: one after another on this machine; see
            :func:`medanomaly.evaluation.bench_ray.ray_cells` for a Ray cluster).

    Returns:
        The cells with their status: ``cached``, ``done``, ``failed`` (``pending`` in a dry run).
    """
    out, echo = Path(out), echo or logger.info
    cells = plan_cells(config, out)
    states = [cell_state(cell) for cell in cells]
    to_run = [state != "done" and (state != "failed" or config.retry_failed) for state, _ in states]
    progress = Progress(cells, to_run, echo, live)
    if dry_run:
        return _list_plan(cells, to_run, states, progress)
    out.mkdir(parents=True, exist_ok=True)
    environment = bench_env.start_run(out, command, settings_dict(config))
    runner = (engine or LocalCells)(config, progress)
    for i, (cell, runs, (state, record)) in enumerate(zip(cells, to_run, states, strict=True), 1):
        if runs:
            runner.submit(i, cell)
        else:
            _reuse_cell(cell, state, record or {}, progress, i)
    runner.wait()
    bench_env.finish_run(out, environment, computed=sum(to_run))
    written = bench_report.write_all(cells, config, out)
    echo(f"wrote {', '.join(path.name for path in written)} in {out}")
    return cells


def _list_plan(cells: list[Cell], to_run: list[bool], states: list[tuple[str, Any]], progress: Progress) -> list[Cell]:
    for i, (cell, runs, (state, _)) in enumerate(zip(cells, to_run, states, strict=True), 1):
        progress.line(i, cell, "to run" if runs else f"reuse ({state})")
    return cells


def _reuse_cell(cell: Cell, state: str, record: dict[str, Any], progress: Progress, i: int) -> None:
    cell.status = "cached" if state == "done" else "failed"
    cell.error = record.get("error", "")
    cell.seconds = record.get("bench", {}).get("wall_seconds")
    progress.finished(i, cell, cached=True, auroc=record.get("auroc"))


class CellRunner(Protocol):
    """Runs the cells handed to :meth:`submit` (at once or later); :meth:`wait` returns when all have ended."""

    def submit(self, i: int, cell: Cell) -> None: ...
    def wait(self) -> None: ...


#: Makes the runner of one benchmark run.
CellEngine = Callable[[BenchConfig, Progress], CellRunner]


class LocalCells:
    """The local engine: each cell runs when submitted, in its own process on this machine."""

    def __init__(self, config: BenchConfig, progress: Progress) -> None:
        self.config, self.progress = config, progress

    def submit(self, i: int, cell: Cell) -> None:
        """Run the ``i``-th cell now."""
        start_cell(cell, self.progress, i)
        outcome = run_in_subprocess(cell.directory, cell.key, cell_timeout(self.config), self.progress.heartbeat)
        finish_cell(cell, outcome, self.progress, i)

    def wait(self) -> None:
        """Nothing is left running."""


def cell_timeout(config: BenchConfig) -> float | None:
    """Seconds after which a cell's process is killed (None: no limit)."""
    return config.cell_timeout_minutes * 60.0 if config.cell_timeout_minutes else None


def start_cell(cell: Cell, progress: Progress, i: int) -> None:
    """Prepare the cell's folder (``cell.json``) and say it starts."""
    _prepare_directory(cell)
    progress.started_cell(i, cell)


def finish_cell(cell: Cell, outcome: Outcome, progress: Progress, i: int) -> None:
    """Record how the cell's process ended and print its line."""
    cell.status, cell.error, cell.seconds = outcome.status, outcome.error, outcome.seconds
    progress.finished(i, cell, cached=False, auroc=outcome.auroc)


def _prepare_directory(cell: Cell) -> None:
    """Keep a checkpoint only when it belongs to the same configuration; then write ``cell.json``."""
    spec_path = cell.directory / CELL_SPEC
    if spec_path.is_file():
        try:
            same = json.loads(spec_path.read_text()).get("config_hash") == cell.key
        except json.JSONDecodeError:
            same = False
        if not same:
            shutil.rmtree(cell.directory)
    cell.directory.mkdir(parents=True, exist_ok=True)
    for name in (METRICS, FAILED):
        (cell.directory / name).unlink(missing_ok=True)
    spec_path.write_text(json.dumps({**cell.spec, "config_hash": cell.key}, indent=2))

"""``medanomaly bench --data DIR[:NORMAL_LABEL] --methods A,B --out DIR``: methods × data sets × seeds, one table."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace

from medanomaly.cli.options import (
    add_postprocessing_arguments,
    add_preprocessing_arguments,
    postprocessing_from,
    preprocessing_from,
)
from medanomaly.evaluation.benchmark import BenchConfig, CellEngine, parse_data_spec, parse_methods, run_benchmark
from medanomaly.registry import detector_class
from medanomaly.training import TrainConfig

_DESCRIPTION = """\
Train, calibrate and test every method on every data set with every seed, each cell in its own process,
and write results.csv, summary.md/csv, roc_<data>.png, heatmaps_<data>.png and environment.json into --out.
Running again over the same --out reuses finished cells (an interrupted run continues where it stopped).
Exit code 0 when every cell succeeded, 1 when a cell failed (it is listed in summary.md), 2 on a usage error."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser(
        "bench", help="benchmark methods on data sets (one table)", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="DIR[:NORMAL_LABEL]",
        help="data set with a test split (repeatable); normal label after the colon, else 'normal'",
    )
    parser.add_argument("--methods", required=True, help="comma-separated methods; NAME=METHOD adds a variant")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method and data set (default 3)")
    parser.add_argument("--param", action="append", metavar="METHOD.KEY=VALUE", help="hyper-parameter (repeatable)")
    parser.add_argument("--tiny", action="store_true", help="each method's tiny variant: a quick smoke run")
    parser.add_argument("--out", required=True, help="output folder (reused to resume)")
    parser.add_argument("--calibrate", default=None, help="threshold rule (default: as 'medanomaly train')")
    parser.add_argument(
        "--mixed-fraction",
        type=float,
        default=0.5,
        help="share of train normals in the mixed set of methods that need one (default 0.5)",
    )
    parser.add_argument("--cell-timeout-minutes", type=float, default=None, help="kill a cell's process after this")
    parser.add_argument("--skip-failed", action="store_true", help="keep recorded failures instead of retrying them")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and which would run, then stop")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: cells one after another here; ray: cells as Ray tasks (the 'scale' extra)")
    parser.add_argument("--address", default=None, help="Ray cluster address (e.g. 'auto'); default: a local Ray")
    parser.add_argument("--cell-cpus", type=float, default=1.0, help="CPUs each cell declares to Ray (default 1)")
    parser.add_argument("--cell-memory-gb", type=float, default=2.0, help="memory each cell declares to Ray (GB)")
    group = parser.add_argument_group("training (per cell)")
    group.add_argument("--max-minutes", type=float, default=None, help="training budget of each cell")
    group.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 50, or the tiny setting)")
    group.add_argument("--batch-size", type=int, default=None, help="default 32, or the tiny setting")
    group.add_argument("--patience", type=int, default=None, help="early-stopping patience (default 8; 0 disables)")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N, mps")
    add_preprocessing_arguments(parser)
    add_postprocessing_arguments(parser)
    parser.set_defaults(run=run)


def config_from(args: argparse.Namespace) -> BenchConfig:
    """BenchConfig from the parsed arguments (unknown methods and hyper-parameters fail here)."""
    overrides = {"max_epochs": args.epochs, "batch_size": args.batch_size}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.patience is not None:
        overrides["patience"] = args.patience or None
    methods = parse_methods(args.methods, args.param)
    for spec in methods:  # as `medanomaly train`: each method's own input side and schedule unless given
        cls = detector_class(spec.method)
        if args.resolution is None and cls.default_resolution is not None:
            spec.preprocessing.setdefault("resolution", cls.default_resolution)
        if not args.tiny:
            for key, value in cls.default_train.items():
                if key not in overrides:
                    spec.train.setdefault(key, value)
    return BenchConfig(
        data=[parse_data_spec(text) for text in args.data],
        methods=methods,
        seeds=args.seeds,
        preprocessing=preprocessing_from(args),
        postprocessing=postprocessing_from(args),
        train=replace(TrainConfig(), max_minutes=args.max_minutes, device=args.device),
        train_overrides=overrides,
        tiny=args.tiny,
        calibration=args.calibrate,
        mixed_fraction=args.mixed_fraction,
        cell_timeout_minutes=args.cell_timeout_minutes,
        retry_failed=not args.skip_failed,
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print where the table is."""
    config = config_from(args)
    command = shlex.join(["medanomaly", *sys.argv[1:]]) if "bench" in sys.argv[1:] else None
    live = _live if sys.stdout.isatty() else None
    with _terminate_as_interrupt():  # a killed benchmark stops its running cell too (it resumes next time)
        cells = run_benchmark(config, args.out, echo=_echo, live=live, dry_run=args.dry_run, command=command,
                              engine=_engine(args))
    if args.dry_run:
        return 0
    failed = [cell for cell in cells if cell.status == "failed"]
    print(f"table: {args.out}/summary.md ({len(cells) - len(failed)} of {len(cells)} cells succeeded)")
    return 1 if failed else 0


def _engine(args: argparse.Namespace) -> CellEngine | None:
    """None for the local engine, else Ray tasks declaring the given resources."""
    if args.engine == "local":
        return None
    from medanomaly.evaluation.bench_ray import ray_cells

    return ray_cells(args.address, cpus=args.cell_cpus, memory_gb=args.cell_memory_gb)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the benchmark runs, so the cell process is killed, not orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _echo(line: str) -> None:
    print(line, flush=True)


def _live(text: str) -> None:
    sys.stdout.write("\r" + text[:150].ljust(150) + ("\r" if not text else ""))
    sys.stdout.flush()

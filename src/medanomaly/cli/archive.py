"""``medanomaly archive score SOURCE --model MODEL_DIR --out OUT_DIR``: score a whole archive into Parquet rows.

The parser imports nothing heavy: torch, pyarrow and Ray are imported when the command runs.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("archive", help="score a whole archive (folder, manifest, PACS) into Parquet rows")
    actions = parser.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    score = actions.add_parser("score", help="score every study not yet in OUT_DIR (resumable)")
    score.add_argument("source", help="a folder of studies (scanned as 'medanomaly score' does), a CSV path[,label], "
                       "or a DICOMweb query of the PACS, e.g. 'dicomweb:modality=DX,CR&since=2026-01-01&limit=500' "
                       "(keys modality, since, until, limit, study)")
    score.add_argument("--model", required=True, help="model directory written by 'medanomaly train'")
    score.add_argument("--out", required=True, help="output folder: Parquet parts, one row per study")
    score.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process; ray: a Ray cluster (needs the 'scale' extra)")
    score.add_argument("--address", default=None,
                       help="Ray cluster address (e.g. 'auto' or 'ray://head:10001'); default: start a local Ray")
    score.add_argument("--workers", type=int, default=None, help="Ray scoring actors (default: cluster CPUs - 1)")
    score.add_argument("--pacs-settings", default=None, metavar="FILE",
                       help="PACS settings file for a dicomweb: SOURCE (default: MEDANOMALY_PACS_* variables)")
    score.add_argument("--worker-memory-gb", type=float, default=1.5,
                       help="memory each Ray scoring actor declares (default 1.5)")
    score.add_argument("--part-size", type=int, default=64, help="studies per Parquet part (and per Ray batch)")
    score.add_argument("--maps", action="store_true", help="also write heat-map overlays (PNG) into OUT_DIR/maps")
    score.add_argument("--device", default="auto")
    score.add_argument("--ignore-domain", action="store_true",
                       help="research use: decide even on studies outside the model's domain (as 'score' does)")
    score.add_argument("--json", action="store_true", help="print the summary as JSON")
    score.add_argument("--no-progress", action="store_true")
    score.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Score the archive; exit 1 when some study failed (its row says why), 0 otherwise."""
    from medanomaly.archive.local import load_model, local_engine
    from medanomaly.archive.run import ArchiveJob, format_summary, run_archive

    if args.part_size < 1:
        raise ValueError("--part-size must be at least 1")
    job = ArchiveJob(args.source, args.model, args.out, part_size=args.part_size, ignore_domain=args.ignore_domain,
                     maps=args.maps, device=args.device, pacs_settings=args.pacs_settings)
    model = load_model(args.model, args.device)
    if args.engine == "ray":
        from medanomaly.archive.ray_engine import ray_engine

        engine = ray_engine(args.address, args.workers, memory_gb=args.worker_memory_gb)
    else:
        engine = local_engine(model)
    summary = run_archive(job, engine, (model.method, model.version), progress=not args.no_progress and not args.json)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 1 if summary["counts"].get("failed") else 0

"""``medanomaly score PATH... --model MODEL_DIR``: score images, DICOM files/series and NIfTI volumes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medanomaly.cli.overlays import write_all_overlays
from medanomaly.data.loading import Failure, describe_failures
from medanomaly.errors import printable
from medanomaly.io import scan_studies
from medanomaly.model import Model
from medanomaly.pipeline import OUT_OF_DOMAIN, StudyResult, score_paths


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("score", help="score studies with a trained model")
    parser.add_argument("paths", nargs="+", help="image files, DICOM files or series folders, NIfTI files, folders")
    parser.add_argument("--model", required=True, help="model directory written by 'medanomaly train'")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument("--maps", default=None, metavar="OUT_DIR", help="write heat-map overlays (PNG) here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ignore-domain", action="store_true",
                        help="research use: decide even on studies outside the model's domain (a modality, body part "
                        "or appearance it was not trained on); such results are marked 'domain check overridden'")
    parser.set_defaults(run=run)


def expand_paths(paths: list[str]) -> tuple[list[Path], list[Failure]]:
    """Files and series folders as given; a folder that is not one series expands into the studies inside it.

    Returns:
        The studies to read, and what a folder holds that cannot be one (unreadable DICOM, mixed series).
    """
    expanded: list[Path] = []
    failures: list[Failure] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside, failed = scan_studies(path)
            failures += [Failure(error.path, str(error)) for error in failed]
            expanded += inside if inside and inside != [path] or failed else [path]
        else:
            expanded.append(path)
    return expanded, failures


def format_line(result: StudyResult, kind: str) -> str:
    """One human line: ``name  ABNORMAL  score 0.0412 > threshold 0.0305`` or ``name  CLASS: 99.89%``."""
    name = printable(Path(result.path).name)
    if result.status == OUT_OF_DOMAIN:
        return f"{name}  OUT OF DOMAIN (no decision): {result.domain_reason}"
    overridden = f"  [out of domain, check overridden: {result.domain_reason}]" if result.domain_reason else ""
    return _decision_line(result, kind, name) + overridden


def _decision_line(result: StudyResult, kind: str, name: str) -> str:
    if kind == "classification":
        confidence = result.score if result.abnormal else 1.0 - result.score
        return f"{name}  {result.label}: {100 * confidence:.2f}%"
    relation = ">" if result.abnormal else "<="
    line = f"{name}  {result.label}  score {result.score:.4g} {relation} threshold {result.threshold:.4g}"
    if len(result.slice_scores) > 1:
        line += f"  ({len(result.slice_scores)} slices, most anomalous #{int(result.slice_scores.argmax())})"
    if result.findings:
        line += f"  {len(result.findings)} finding{'s' if len(result.findings) > 1 else ''}"
    return line


def run(args: argparse.Namespace) -> int:
    """Score every path; bad ones are skipped and listed at the end (exit 1 if any failed)."""
    model = Model.load(args.model, device=args.device)
    model.info["path"] = str(args.model)
    paths, failures = expand_paths(args.paths)
    results, failed = score_paths(model, paths, progress=not args.json, ignore_domain=args.ignore_domain)
    failures += failed
    _print_results(args, model, results, failures)  # scores first: a full disk or a kill during maps loses none
    sys.stdout.flush()
    if args.maps:
        map_failures = write_all_overlays(results, Path(args.maps))
        out = sys.stderr if args.json else sys.stdout
        for failure in map_failures:
            print(f"overlay not written: {Path(failure.path).name}: {failure.error}", file=out)
        failures += map_failures
    return 1 if failures else 0


def _print_results(args: argparse.Namespace, model: Model, results: list[StudyResult], failures: list[Failure]) -> None:
    """Print the results and the inputs that failed, as lines or one JSON object."""
    if args.json:
        domain = model.domain.describe() if model.domain is not None else "unknown"
        payload = {
            "model": {"method": model.method, "version": model.version, "path": str(args.model), "domain": domain},
            "results": [result.summary() for result in results],
            "failures": [failure.to_dict() for failure in failures],
        }
        print(json.dumps(payload, indent=2))
    else:
        for result in results:
            print(format_line(result, model.detector.kind))
        if failures:
            print(describe_failures(failures))

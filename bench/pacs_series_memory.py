"""Peak memory of the PACS result path for a long CT series: score, build SR/SEG/SC/PDF, write them to an outbox.

Uses the synthetic 512x512 CT series and the small conv_ae model of ``bench/series_memory.py`` (in their own
``--workdir``, with a FrameOfReferenceUID added), gives the model a region threshold (``--region-threshold``; the
default 0.2 lies inside the body's map values, so every slice holds a finding: the worst case for SR and SEG), and
runs, in a fresh process per series, exactly what the PACS link runs for one pulled series:
``medanomaly.pacs.sync.score_unit`` (read, score, source headers, ``build_results``, ``Outbox.add`` of each object,
supersede), stopping before anything is sent. Reports the process's peak resident set size (``VmHWM``), its RSS
after imports and model load, the seconds, the objects queued and their bytes on disk. ::

    .venv/bin/python bench/pacs_series_memory.py --slices 28 300 1000 --out /tmp/pacs_series_memory.json

``--worklist`` also registers the result in a web-service worklist (``pacs watch --db``: the source pixels are
kept for it); ``--stage score`` stops after read + score (the part ``bench/series_memory.py`` measures), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from series_memory import write_model, write_series


def with_frame_of_reference(folder: Path) -> Path:
    """Give the series' files one FrameOfReferenceUID (SEG and SC need it; the score-only series has none)."""
    import pydicom
    from pydicom.uid import generate_uid

    frame = generate_uid()
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if "FrameOfReferenceUID" in ds:
            return folder
        ds.FrameOfReferenceUID = frame
        ds.save_as(path, enforce_file_format=True)
    return folder


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{key}:")) / 1024


def with_region_threshold(model_dir: Path, region_threshold: float) -> Path:
    """A copy of the model (next to it) whose findings, SEG and heat-maps start at ``region_threshold``."""
    from medanomaly.model import Model

    target = model_dir.with_name(f"{model_dir.name}_region_{region_threshold:g}")
    if not (target / "model.json").exists():
        Model.load(model_dir, device="cpu").with_postprocessing(region_threshold=region_threshold).save(target)
    return target


def measure(model_dir: Path, series: Path, stage: str, with_worklist: bool = False) -> dict[str, object]:
    """Child side: load the model, run the PACS link's scoring unit on the series, return peak RSS and timings."""
    from medanomaly.io import read_study
    from medanomaly.model import Model
    from medanomaly.pacs.client import SeriesInfo
    from medanomaly.pacs.outbox import Outbox
    from medanomaly.pacs.sync import score_unit
    from medanomaly.pacs.worklist import Worklist
    from medanomaly.pipeline import score_study

    model = Model.load(model_dir, device="cpu")
    model.info["path"] = str(model_dir)  # as ``medanomaly pacs`` does
    base = _status_mb("VmRSS")
    started = time.perf_counter()
    row: dict[str, object] = {
        "slices": len(list(series.glob("*.dcm"))),
        "stage": stage,
        "worklist": with_worklist,
        "rss_after_load_mb": base,
    }
    if stage == "score":
        result = score_study(model, read_study(series))
        row.update(score=result.score, findings=len(result.findings))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            outbox = Outbox(Path(tmp) / "outbox")
            worklist = Worklist(f"sqlite:///{tmp}/service.sqlite") if with_worklist else None
            outcome = score_unit(model, series, SeriesInfo("1.2.3", "CT"), outbox, worklist)
            if outcome.error:
                raise RuntimeError(outcome.error)
            assert outcome.result is not None
            sizes: dict[str, int] = {}
            for item in outbox.items():
                sizes[item.kind] = sizes.get(item.kind, 0) + (outbox.root / item.path).stat().st_size
            row.update(
                score=outcome.result.score,
                findings=len(outcome.result.findings),
                queued=outcome.queued,
                mb_on_disk={kind: round(size / 2**20, 2) for kind, size in sizes.items()},
            )
    row.update(seconds=round(time.perf_counter() - started, 2), peak_rss_mb=round(_status_mb("VmHWM"), 1))
    return row


def main() -> int:
    """Command line: write the series and the model, measure each series in a fresh process, print JSON rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[28, 300, 1000])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--region-threshold", type=float, default=0.2)
    parser.add_argument("--stage", choices=["results", "score"], default="results")
    parser.add_argument("--worklist", action="store_true", help="also register in a web-service worklist (SQLite)")
    parser.add_argument("--workdir", default="/tmp/medanomaly_pacs_series_memory")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SERIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = measure(Path(args.child[0]), Path(args.child[1]), args.stage, args.worklist)
        print(json.dumps(row))
        return 0
    work = Path(args.workdir)
    model_dir = with_region_threshold(write_model(work / "model"), args.region_threshold)
    env = {**os.environ, "MEDANOMALY_MAX_VOXELS": str(max(args.slices) * args.size**2 * 2)}
    rows = []
    for n in args.slices:
        series = with_frame_of_reference(write_series(work / f"ct_{n}_{args.size}", n, args.size))
        command = [
            sys.executable,
            __file__,
            "--child",
            str(model_dir),
            str(series),
            "--stage",
            args.stage,
            *(["--worklist"] if args.worklist else []),
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        "rows": rows,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg": os.getloadavg(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

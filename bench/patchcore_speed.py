"""Fit time, scoring speed, peak memory and AUROC of patchcore / padim on a real data set.

Trains on the train split's normal images through medanomaly's own data loading, saves the model, then scores the
test split in a fresh process (so its peak memory is that of scoring alone, as in the service)::

    nice -n 10 .venv/bin/python bench/patchcore_speed.py --method patchcore \
        --data ../shared/data/zhanglab_chest_xray --resolution 224 --max-minutes 20 --out /tmp/pc_speed.json

Prints one JSON object (also written to ``--out``): fit seconds (features / coreset), images per second scoring
(detector only, and including reading + preprocessing), peak RSS of fitting and of scoring, AUROC, and the load
average before/after (numbers measured on a shared machine are not final).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medanomaly.data.datasets import load_index
from medanomaly.data.loading import load_images
from medanomaly.model import Model
from medanomaly.registry import create
from medanomaly.training import TrainConfig, Trainer
from medanomaly.transforms import Preprocessing

logger = logging.getLogger("patchcore_speed")


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's peak after fork/exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _budget(minutes: float) -> None:
    def stop(signum: int, frame: Any) -> None:
        msg = f"over the --max-minutes budget of {minutes} min"
        raise TimeoutError(msg)

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(max(1, int(minutes * 60)))


def fit(args: argparse.Namespace) -> dict[str, Any]:
    """Load the train normals, fit, save; returns timings and memory."""
    index = load_index(args.data, args.normal_label)
    preprocessing = Preprocessing(resolution=args.resolution)
    samples = index.select(split="train", normal=True)[: args.limit_train or None]
    started = time.perf_counter()
    normal = load_images(samples, preprocessing, progress=False, desc="train").images
    load_seconds = time.perf_counter() - started
    params = {"backbone": args.backbone, **dict(p.split("=", 1) for p in args.param)}
    params = {key: _number(value) for key, value in params.items()}
    detector = create(args.method, **params)
    trainer = Trainer(TrainConfig(batch_size=args.batch_size, progress=False, device="cpu"))
    started = time.perf_counter()
    detector.fit(normal, trainer=trainer)
    fit_seconds = time.perf_counter() - started
    Model(detector, preprocessing).save(args.model_dir)
    return {
        "n_train": len(normal),
        "load_train_seconds": round(load_seconds, 1),
        "fit_seconds": round(fit_seconds, 1),
        "fit_timings": {k: round(v, 1) for k, v in getattr(detector, "fit_timings_", {}).items()},
        "fit_peak_rss_mb": round(_peak_rss_mb()),
        "params": detector.get_params(),
    }


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Load the saved model and score the test split (run in a fresh process)."""
    model = Model.load(args.model_dir, device="cpu")
    index = load_index(args.data, args.normal_label)
    samples = index.select(split="test")
    started = time.perf_counter()
    loaded = load_images(samples, model.preprocessing, progress=False, desc="test")
    load_seconds = time.perf_counter() - started
    with torch.inference_mode():
        model.detector.score(loaded.images[:4], batch_size=4)  # warm-up (ONNX export/session, first allocations)
        started = time.perf_counter()
        prediction = model.detector.score(loaded.images, batch_size=args.batch_size)
        score_seconds = time.perf_counter() - started
    labels = np.array([0 if index.is_normal(s) else 1 for s in loaded.samples])
    n_images = len(loaded.images)
    return {
        "n_test": n_images,
        "auroc": round(float(roc_auc_score(labels, prediction.scores.numpy())), 4),
        "score_images_per_second": round(n_images / score_seconds, 1),
        "score_with_loading_images_per_second": round(n_images / (score_seconds + load_seconds), 1),
        "score_peak_rss_mb": round(_peak_rss_mb()),
    }


def _number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(value.lower(), value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="patchcore", choices=("patchcore", "padim"))
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/zhanglab_chest_xray"))
    parser.add_argument("--normal-label", default=None)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--param", action="append", default=[], help="extra hyper-parameter KEY=VALUE (repeatable)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-train", type=int, default=0, help="use only the first N train normals (0 = all)")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="abort when fitting + scoring take longer")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    parser.add_argument("--keep-model", default=None, help="save the fitted model here (default: a temporary folder)")
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fit here, score in a child process, print and save the combined JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    _budget(args.max_minutes)
    if args.score_only:
        print(json.dumps(score(args)))
        return 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pc_speed_") as tmp:
        args.model_dir = args.keep_model or str(Path(tmp) / "model")
        result = {"method": args.method, "resolution": args.resolution, "cpus": os.cpu_count(), **fit(args)}
        child = [sys.executable, __file__, "--score-only", "--model-dir", args.model_dir, "--data", args.data,
                 "--batch-size", str(args.batch_size), "--max-minutes", str(args.max_minutes)]  # fmt: skip
        if args.normal_label:
            child += ["--normal-label", args.normal_label]
        output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        result.update(json.loads(output.strip().splitlines()[-1]))
    result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

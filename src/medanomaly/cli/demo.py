"""``medanomaly demo``: the whole path on synthetic phantoms, no download, a few minutes on a CPU."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medanomaly.cli.overlays import write_overlays
from medanomaly.data.synthetic import write_phantom_dataset
from medanomaly.evaluation.evaluate import evaluate_model, write_report
from medanomaly.evaluation.metrics import pixel_metrics
from medanomaly.fitting import FitOptions, train_model
from medanomaly.model import Postprocessing
from medanomaly.pipeline import score_paths
from medanomaly.training import TrainConfig
from medanomaly.transforms import Preprocessing

#: conv_ae settings the demo was sized with (before the 64 px MLP-bottleneck defaults): an L1 map of the whole image.
_DEMO_AE = {"hidden_dim": 0, "loss": "l1", "weight_decay": 1e-5, "foreground": "none"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("demo", help="train and evaluate conv_ae on synthetic phantoms (no download)")
    parser.add_argument("--out", default="demo-output", help="folder for data, model and report (default demo-output)")
    parser.add_argument("--size", type=int, default=64, help="phantom side in pixels (default 64)")
    parser.add_argument("--n-train", type=int, default=300, help="normal training phantoms (default 300)")
    parser.add_argument("--epochs", type=int, default=40, help="maximum epochs; early stopping may end sooner")
    parser.add_argument(
        "--max-minutes", type=float, default=None,
        help="optional safety net; the demo is bound by epochs (default none)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help="then open the web workstation on the demo's studies")
    parser.add_argument("--port", type=int, default=8000, help="port of the workstation with --serve (default 8000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Make phantoms, train, evaluate, write the report and overlays, print where they are."""
    started = time.monotonic()
    out = Path(args.out)
    data = write_phantom_dataset(out / "data", n_train=args.n_train, size=args.size, seed=args.seed)
    print(f"phantom data set: {data} (train/NORMAL, val/NORMAL, test/NORMAL + test/LESION with masks)")
    options = FitOptions(
        params={"depth": 3, "width": 16, "latent_dim": 64, **_DEMO_AE},
        preprocessing=Preprocessing(resolution=args.size, normalize="minmax"),
        postprocessing=Postprocessing(median_size=3, score_from="map_topk"),
        train=TrainConfig(max_epochs=args.epochs, max_minutes=args.max_minutes, batch_size=32, patience=10),
        random_state=args.seed,
    )
    report = train_model(data, "conv_ae", out / "model", options)
    model = report.model
    print(f"trained conv_ae in {report.seconds:.0f} s ({model.training['stopped_because']}); "
          f"threshold {model.threshold.value:.4g} (95th pct of normals)")
    result = evaluate_model(model, data, split="test")
    write_report(result, out / "report")
    metrics = result.metrics
    metrics["pixel"] = _pixel_metrics(result, data)
    (out / "report" / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        f"test AUROC {metrics['auroc']:.3f} (95% CI {metrics['auroc_ci95'][0]:.3f}-{metrics['auroc_ci95'][1]:.3f}),"
        f" sensitivity {metrics['sensitivity']:.2f}, specificity {metrics['specificity']:.2f}, "
        f"pixel AUROC {metrics['pixel'].get('pixel_auroc', float('nan')):.3f}"
    )
    examples = (
        sorted((data / "test" / "LESION").glob("*.png"))[:4] + sorted((data / "test" / "NORMAL").glob("*.png"))[:2]
    )
    scored, _ = score_paths(model, examples, progress=False)
    for study in scored:
        write_overlays(study, out / "overlays")
    print(f"report: {out / 'report'} (metrics.json, roc.png, confusion_matrix.png, score_histogram.png)")
    print(f"heat-map overlays: {out / 'overlays'};  model: {out / 'model'}")
    print(f"try: medanomaly score {examples[0]} --model {out / 'model'}")
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    if args.serve:
        from medanomaly.service.cli_common import require_service
        from medanomaly.service.demo import serve_demo

        require_service()
        return serve_demo(out, out / "model", examples, port=args.port, size=args.size)
    return 0


def _pixel_metrics(result, data: Path) -> dict:
    """Pixel AUROC / best Dice of the maps against the planted-lesion masks."""
    masks, maps = [], []
    for path, label, scored in zip(result.paths, result.labels, result.scored, strict=True):
        mask_path = data / "masks" / "test" / Path(path).parent.name / Path(path).name
        if label == 1 and mask_path.exists() and scored.anomaly_maps is not None:
            masks.append(np.asarray(Image.open(mask_path)) > 0)
            maps.append(scored.anomaly_maps[0])
    return pixel_metrics(np.stack(masks), np.stack(maps)) if masks else {}

"""Train a reconstruction method once and compare its score rules on train-split validation and on the test split.

Used to choose conv_ae's default score rule without test labels (docs/methods/conv_ae.md): the validation set is
10 % of the train normals (held out from training) plus 300 train abnormals (ZhangLab), or the data set's own ``val``
split (COVID-CT); the test AUROC is printed for the record only. Run from the repository root:

    nice -n 10 python bench/ae_score_rules.py ../shared/data/zhanglab_chest_xray NORMAL --epochs 100 --patience 10
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medanomaly.cli.options import parse_params
from medanomaly.data.datasets import DatasetIndex, load_index
from medanomaly.data.loading import load_images
from medanomaly.detectors.residual_score import resolve_foreground
from medanomaly.registry import create, detector_class
from medanomaly.training import TrainConfig, Trainer
from medanomaly.transforms import Preprocessing

RULES = (("mean", 0.1), ("topk", 0.1), ("topk", 0.02))


def _load(index: DatasetIndex, samples: list, preprocessing: Preprocessing) -> tuple[torch.Tensor, np.ndarray]:
    loaded = load_images(samples, preprocessing, progress=False)
    labels = np.array([0 if index.is_normal(s) else 1 for s in loaded.samples])[loaded.owners]
    return loaded.images, labels


def main() -> None:
    """Parse arguments, train, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("normal_label")
    parser.add_argument("--method", default="conv_ae")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method hyper-parameter")
    args = parser.parse_args()
    cls = detector_class(args.method)
    preprocessing = Preprocessing(resolution=cls.default_resolution or 128)
    index = load_index(args.data, args.normal_label)
    images, labels = _load(index, index.select(split="train"), preprocessing)
    rng = np.random.default_rng(args.seed)
    normal, abnormal = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    if "val" in index.splits:
        fit_rows, (val_x, val_y) = normal, _load(index, index.select(split="val"), preprocessing)
    else:
        held = rng.choice(normal, size=len(normal) // 10, replace=False)
        fit_rows = np.setdiff1d(normal, held)
        rows = np.concatenate([held, rng.choice(abnormal, size=min(300, len(abnormal)), replace=False)])
        val_x, val_y = images[rows], labels[rows]
    test_x, test_y = _load(index, index.select(split="test"), preprocessing)
    schedule = {
        **cls.default_train,
        **({"max_epochs": args.epochs} if args.epochs else {}),
        **({"patience": args.patience or None} if args.patience is not None else {}),
    }
    detector = create(args.method, random_state=args.seed, **parse_params(args.param))
    started = time.time()
    detector.fit(images[fit_rows], trainer=Trainer(TrainConfig(progress=False, **schedule)))
    history = detector.history_
    result = {"data": args.data, "method": args.method, "seed": args.seed, "params": args.param, "schedule": schedule,
              "epochs_run": len(history.epochs), "best_epoch": history.best_epoch,
              "fit_seconds": round(time.time() - started, 1), "stopped": history.stopped_because,
              "foreground": resolve_foreground("auto", images[fit_rows])}  # fmt: skip
    for foreground in ("none", "outline"):
        for rule, fraction in RULES:
            detector.foreground_, detector.score_rule, detector.topk_fraction = foreground, rule, fraction
            val = detector.score(val_x).scores.numpy()
            test = detector.score(test_x).scores.numpy()
            name = f"{foreground}/{rule}{fraction if rule == 'topk' else ''}"
            result[name] = {"val": round(roc_auc_score(val_y, val), 3), "test": round(roc_auc_score(test_y, test), 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

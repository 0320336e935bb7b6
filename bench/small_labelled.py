"""Write small labelled data sets (manifests) for checking ``cnn_classifier`` on a few hundred images.

Draws ``--n`` training images (stratified, the train split's class ratio) from a data set's official train split and
keeps its official test split whole, so a model trained on the subset is scored on images it never saw and no
default is chosen on them. The manifest refers to the images by absolute path; nothing is copied.

    python bench/small_labelled.py ../shared/data/covid_ct_cropped /tmp/small/covid --n 210 --seed 0
    medanomaly train /tmp/small/covid --method cnn_classifier --normal-label CT_NonCOVID --out /tmp/m
    medanomaly evaluate /tmp/small/covid --model /tmp/m --normal-label CT_NonCOVID
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def write_subset(source: Path, out: Path, n_train: int, seed: int) -> Path:
    """Write ``out/manifest.csv``: ``n_train`` stratified train images of ``source`` plus all its test images."""
    with (source / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = [row for row in rows if row["split"] == "train"]
    test = [row for row in rows if row["split"] == "test"]
    rng = np.random.default_rng(seed)
    labels = sorted({row["label"] for row in train})
    chosen = []
    for label in labels:
        members = [row for row in train if row["label"] == label]
        count = round(n_train * len(members) / len(train))
        chosen += [members[i] for i in sorted(rng.choice(len(members), size=count, replace=False))]
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for row in chosen + test:
            writer.writerow([str((source / row["path"]).resolve()), row["label"], row["split"]])
    return manifest


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="data set folder with manifest.csv (train and test splits)")
    parser.add_argument("out", type=Path, help="folder to write manifest.csv into")
    parser.add_argument("--n", type=int, default=210, help="training images to draw (default 210)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_subset(args.source, args.out, args.n, args.seed))


if __name__ == "__main__":
    main()

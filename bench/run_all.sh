#!/usr/bin/env bash
# The full documented benchmark (docs/benchmarks.md): every method in METHODS x the two public data sets x 3 seeds.
#
#   bench/run_all.sh [OUT_DIR] [extra medanomaly bench options ...]
#
# Environment overrides: DATA_ROOT (default ../shared/data next to the repository), SEEDS (3), RESOLUTION (128),
# MAX_MINUTES (10, training budget per cell), CELL_TIMEOUT (90, minutes before a cell's process is killed).
# Running it again over the same OUT_DIR reuses every finished cell: an interrupted run continues where it stopped,
# and adding a method to METHODS only runs the new cells.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
DATA_ROOT="${DATA_ROOT:-$(dirname "$REPO")/shared/data}"
OUT="${1:-$(dirname "$REPO")/bench_runs/full}"
shift $(( $# > 0 ? 1 : 0 ))

# Methods in the table, in row order: every registered method (each went through `medanomaly bench --tiny` on a
# 32 px phantom set, and all went through the 2026-11-24 table of docs/benchmarks.md).
METHODS=(
    conv_ae
    perceptual_ae
    anomalypro           # learns from a mixed set: --mixed-fraction of the train normals + all train abnormals, unlabelled
    anatpaste
    firefly_svm          # supervised (labelled train abnormals): marked with a dagger in the table
    cnn_classifier       # supervised upper reference
    patchcore            # pretrained-feature baselines, at their backbone's 224 px (PARAMS below)
    padim
    fanogan              # GAN baselines
    ganomaly
    alad
    alocc
)

# Per-method settings (METHOD.KEY=VALUE, METHOD.preprocessing.FIELD=VALUE, METHOD.train.FIELD=VALUE).
PARAMS=(
    --param patchcore.preprocessing.resolution=224
    --param padim.preprocessing.resolution=224
    --param anatpaste.preprocessing.resolution=224
    --param anatpaste.train.batch_size=16
    --param firefly_svm.preprocessing.resolution=128   # the size its texture features are computed at
)

DATA=(
    --data "$DATA_ROOT/zhanglab_chest_xray"               # NORMAL / PNEUMONIA, official test split (234 / 390)
    --data "$DATA_ROOT/covid_ct_cropped:CT_NonCOVID"      # CT_NonCOVID / CT_COVID, official test split (105 / 97)
)

methods="$(IFS=,; echo "${METHODS[*]}")"
exec nice -n 10 "${MEDANOMALY:-$REPO/.venv/bin/medanomaly}" bench \
    "${DATA[@]}" \
    --methods "$methods" \
    ${PARAMS[@]+"${PARAMS[@]}"} \
    --seeds "${SEEDS:-3}" \
    --resolution "${RESOLUTION:-128}" \
    --max-minutes "${MAX_MINUTES:-10}" \
    --cell-timeout-minutes "${CELL_TIMEOUT:-90}" \
    --out "$OUT" \
    "$@"

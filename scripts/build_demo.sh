#!/usr/bin/env bash
# Rebuilds the shipped demo release (saved_models/, tokenizer/) and examples/ from scratch:
# the synthetic shapes dataset, a random-weight InceptionV3 cut after its mixed2 block at
# 128 px, and the default decoder settings. Takes about 3 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${WORK:-build/demo}
rm -rf "$WORK"
$PY -m captioning synthetic --out "$WORK/synthetic-shapes" --images 2000 --seed 7 --image-size 128
$PY -m captioning cache --format csv --captions "$WORK/synthetic-shapes/captions.csv" \
    --images "$WORK/synthetic-shapes/images" --out "$WORK/synthetic-shapes-cache" \
    --encoder inception_v3_mixed2 --weights none --image-size 128
# --scst-epochs 0: the shipped demo was built before SCST joined the defaults.
$PY -m captioning train --cache "$WORK/synthetic-shapes-cache" --out "$WORK/run" --seed 0 --quiet \
    --scst-epochs 0
$PY -m captioning evaluate --release "$WORK/run" --cache "$WORK/synthetic-shapes-cache" \
    --split test --json "$WORK/run/test_scores.json" --record
$PY -m captioning export --release "$WORK/run" --models-dir saved_models --tokenizer-dir tokenizer
$PY scripts/pick_examples.py "$WORK/synthetic-shapes" examples

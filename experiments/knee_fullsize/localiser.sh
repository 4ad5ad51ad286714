#!/usr/bin/env bash
# The knee-joint localiser shipped in orthonode/models/default/localiser (issue 14):
#   1. every film of ../shared/data/knee_fullsize (62 real films: 22 frontal with our knee annotations,
#      24 lateral, 3 two-view plates, 13 hip/shoulder) 12 times through the shipped encoder (once as
#      stored, 11 times augmented), kept in a cache keyed by the encoder and the inputs;
#   2. 4-fold cross-validation by film (each film predicted by a head that never saw it): detection rate,
#      centre error, false detections, view accuracy -> docs/results/localiser_cv.json;
#   3. the head trained on every film, installed beside the encoder it was trained on.
# Settings (12 passes, 400 steps, threshold 0.5) were fixed before the cross-validation was read.
#
#   experiments/knee_fullsize/localiser.sh
set -euo pipefail
bin=${BIN:-.venv/bin}
models=${MODELS:-orthonode/models/default}
out=${OUT:-runs/localiser}
"$bin/heads" -v localiser --encoder "$models/encoder" --films "${FILMS:-../shared/data/knee_fullsize}" \
  --annotations experiments/knee_fullsize/annotations.csv --augment 12 --folds 4 --steps 400 \
  --threshold 0.5 --cache "${CACHE:-$out/films.pt}" --out "$out/localiser"
rm -rf "$models/localiser" && cp -r "$out/localiser" "$models/localiser"
cp "$out/localiser_cv.json" docs/results/localiser_cv.json

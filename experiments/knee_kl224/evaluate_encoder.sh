#!/usr/bin/env bash
# Frozen-encoder evaluation on knee_kl224 (KL grade, 5 classes): weighted k-NN and a linear probe on val.
#
#   experiments/knee_kl224/evaluate_encoder.sh ENCODER_DIR OUT_DIR
#
# The probe is trained on the train split (early stopping on 15% of the TRAIN patients), then scored once
# on val with patient-bootstrap 95% CIs. Features are cached in runs/cache per encoder fingerprint.
# FEATURES=cls for a CNN (its pooled vector is already the mean of its positions).
set -euo pipefail
enc=${1:?encoder export directory}
out=${2:?output directory}
data=${DATA:-../shared/data/knee_kl224}
bin=${BIN:-.venv/bin}
common=(--encoder "$enc" --dataset chen_kl --data "$data" --task kl_grade --cache runs/cache)
mkdir -p "$out"
"$bin/heads" embed "${common[@]}"
"$bin/heads" knn "${common[@]}" --split val | tee "$out/knn.txt"
"$bin/heads" fit "${common[@]}" --head linear --features "${FEATURES:-cls+meanpatch}" --class-weighting none \
  --out "$out/probe"
"$bin/heads" evaluate --encoder "$enc" --dataset chen_kl --data "$data" --cache runs/cache \
  --bundle "$out/probe/kl_grade-1.0.0" --split val --out "$out/probe/eval-val"

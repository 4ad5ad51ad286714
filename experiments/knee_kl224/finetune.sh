#!/usr/bin/env bash
# Full fine-tuning of an encoder with a KL-grade head on the knee_kl224 TRAIN labels, then one evaluation
# on val with patient-bootstrap 95% CIs.
#
#   experiments/knee_kl224/finetune.sh ENCODER_DIR OUT_DIR [extra heads-fit options]
#
# The epoch is chosen on 15% of the TRAINING patients (never on val). Resumable: after an interruption run
# the same command again and it continues from OUT_DIR/finetune_state.pt. The fine-tuned encoder is stored
# in float16 (what the node ships); the bundle records that encoder's fingerprint. The training forward runs
# in bf16 where the CPU has native bf16 (1.25x faster for ViT-Ti there), in float32 elsewhere.
set -euo pipefail
enc=${1:?encoder export directory}; out=${2:?output directory}; shift 2
data=${DATA:-../shared/data/knee_kl224}
bin=${BIN:-.venv/bin}
"$bin/heads" -v fit --finetune --encoder "$enc" --dataset chen_kl --data "$data" --task kl_grade \
  --head linear --features cls+meanpatch --class-weighting none \
  --epochs 12 --batch-size 32 --lr 5e-4 --min-lr 1e-6 --warmup-epochs 1 --layer-decay 0.9 \
  --weight-decay 0.05 --drop-path 0.1 --patience 4 --select accuracy --encoder-dtype float16 \
  --precision auto \
  --out "$out" "$@"
"$bin/heads" evaluate --encoder "$out/encoder-kl_grade-1.0.0" --dataset chen_kl --data "$data" \
  --cache runs/cache --bundle "$out/kl_grade-1.0.0" --split val --out "$out/eval-val"

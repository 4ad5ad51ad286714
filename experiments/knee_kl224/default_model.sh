#!/usr/bin/env bash
# The default model the node ships (issue 5), from scratch, with the project's own commands:
#   1. self-supervised pretraining of ViT-Ti/16 on the knee_kl224 train images (no labels), ~35 min;
#   2. fine-tuning with the KL-grade head on the train labels (epoch chosen on train patients), in three
#      stages, each from the previous stage's encoder with a new head: 12 epochs from the SSL encoder
#      (~26 min), 14 more at a lower learning rate (~30 min), then 40 more with lighter regularisation
#      (~105 min);
#   3. evaluation on val after each stage (patient-bootstrap 95% CIs);
#   4. packaging into orthonode/models/default (encoder in float16 + head bundle with its val metrics).
# Every step resumes where it stopped: run the script again after an interruption.
#
#   experiments/knee_kl224/default_model.sh
set -euo pipefail
bin=${BIN:-.venv/bin}
ssl=${SSL_RUN:-knee_kl224_vit_tiny}
ft=runs/${FT_RUN:-default_kl_ft}
ft2=runs/${FT2_RUN:-default_kl_ft2}
ft3=runs/${FT3_RUN:-default_kl_ft3}
dest=${DEST:-orthonode/models/default}
here=$(dirname "$0")
[ -f "runs/$ssl/export/encoder.json" ] || "$here/pretrain.sh" "$ssl"
[ -f "$ft/eval-val/results.json" ] || "$here/finetune.sh" "runs/$ssl/export" "$ft"
[ -f "$ft2/eval-val/results.json" ] || "$here/finetune.sh" "$ft/encoder-kl_grade-1.0.0" "$ft2" \
  --epochs 14 --lr 2e-4 --warmup-epochs 0.5 --patience 5
[ -f "$ft3/eval-val/results.json" ] || "$here/finetune.sh" "$ft2/encoder-kl_grade-1.0.0" "$ft3" \
  --epochs 40 --lr 3e-4 --warmup-epochs 1 --layer-decay 0.95 --drop-path 0.05 --patience 10
rm -rf "$dest.new"
mkdir -p "$dest.new/heads"
cp -r "$ft3/encoder-kl_grade-1.0.0" "$dest.new/encoder"
"$bin/heads" export --bundle "$ft3/kl_grade-1.0.0" --results "$ft3/eval-val/results.json" \
  --out "$dest.new/heads"
[ -f "$dest/MODEL_CARD.md" ] && cp "$dest/MODEL_CARD.md" "$dest.new/"
rm -rf "$dest" && mv "$dest.new" "$dest"
du -sh "$dest"
ORTHONODE_MODELS_DIR="$dest" "$bin/orthonode" models

#!/usr/bin/env bash
# Self-supervised pretraining of an encoder on the knee_kl224 TRAIN images (labels unused).
#
#   experiments/knee_kl224/pretrain.sh RUN_NAME [key.sub=value ...]
#   CONFIG=knee_kl224_lite0 experiments/knee_kl224/pretrain.sh RUN_NAME   (continued, from ImageNet)
#
# CONFIG names a file in ssl_train/configs (default knee_kl224_vit_tiny: ViT-Ti/16 from random init).
#
# Resumable: run the same command again after an interruption and it continues from the last checkpoint.
# The export (the teacher backbone in the node's encoder format) lands in runs/<RUN_NAME>/export.
set -euo pipefail
name=${1:?run name}; shift
bin=${BIN:-.venv/bin}
manifest=runs/manifests/knee_kl224.csv
[ -f "$manifest" ] || "$bin/ssl-train" scan "${DATA:-../shared/data/knee_kl224}" --folder-split --out "$manifest"
if [ -d "runs/$name/checkpoints" ]; then
  "$bin/ssl-train" resume "runs/$name" "$@"
else
  "$bin/ssl-train" fit "ssl_train/configs/${CONFIG:-knee_kl224_vit_tiny}.yaml" run.name="$name" "$@"
fi
"$bin/ssl-train" export "runs/$name" --out "runs/$name/export"

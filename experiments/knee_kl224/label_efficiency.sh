#!/usr/bin/env bash
# Label efficiency of the best route (ImageNet init, fine-tuned): the default recipe at 224 px on a
# fraction of the TRAINING patients, drawn per seed (stratified by grade); the carve that picks the epoch
# is cut from that fraction too, so no run sees more labels than its fraction. Fewer images per epoch get
# more epochs, by a rule fixed before any run: epochs = round(12 / sqrt(fraction)), patience likewise from
# 4 (12.5%: 34 epochs, patience 11; 25%: 24 / 8; 50%: 17 / 6; 100%: the default 12 / 4). Each run is
# evaluated once on val with hflip TTA where its carve chose it; compare with the supervised CNN at 100%
# (63.8% / QWK 0.744, ../shared/data/README.md). Resumable: run the same command again.
#
#   FRACTIONS="0.125 0.25" SEEDS="0 1" experiments/knee_kl224/label_efficiency.sh
#   experiments/knee_kl224/label_efficiency_table.py runs/   (the table)
set -euo pipefail
here=$(dirname "$0")
bin=${BIN:-.venv/bin}
for fraction in ${FRACTIONS:-0.125 0.25 0.5}; do
  for seed in ${SEEDS:-0 1}; do
    read -r epochs patience < <("$bin/python" -c \
      "import sys; f=float(sys.argv[1]); print(round(12/f**0.5), round(4/f**0.5))" "$fraction")
    IMG_SIZE=224 SEED="$seed" TRAIN_FRACTION="$fraction" EPOCHS="$epochs" PATIENCE="$patience" \
      FT_RUN="lite0_in1k_ft224_frac${fraction}_s${seed}" PACKAGE=0 "$here/default_model.sh"
  done
done

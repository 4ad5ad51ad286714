#!/usr/bin/env bash
# The shipped default from several fine-tuned members (each made by default_model.sh with PACKAGE=0, all on
# the same carve): their weight-averaged soup (soup.py), the choice between single models, the soup and
# ensembles on the TRAINING patients' carve (ensemble.py: an ensemble must add 1 point to be chosen), one
# evaluation of the chosen model on val, and packaging into orthonode/models/default.
#
#   MEMBERS="runs/lite0_in1k_ft_ce/encoder-kl_grade-1.0.0:runs/lite0_in1k_ft_ce/tta/kl_grade-1.0.0 \
#            runs/lite0_in1k_ft_ce288/encoder-kl_grade-1.0.0:runs/lite0_in1k_ft_ce288/tta/kl_grade-1.0.0 \
#            runs/lite0_in1k_ft_ce224_s1/encoder-kl_grade-1.0.0:runs/lite0_in1k_ft_ce224_s1/tta/kl_grade-1.0.0" \
#     SIZE=288 SOUP=runs/soup_224_288 experiments/knee_kl224/soup_model.sh
#
# SOUP_MEMBERS (default: MEMBERS) are averaged; the choice sees MEMBERS and the soup. For 2.2.0 the soup
# was of the first two (SOUP_MEMBERS="<224> <288>") and the choice saw all three and the soup.
#
# The members' directories are ENCODER_DIR:BUNDLE_DIR pairs with their test-time augmentation set (the
# `tta/` export of default_model.sh). Packaging happens only when the carve chose the soup (PACKAGE=1).
set -euo pipefail
bin=${BIN:-.venv/bin}
data=${DATA:-../shared/data/knee_kl224}
size=${SIZE:-288}
soup=${SOUP:-runs/soup}
dest=${DEST:-orthonode/models/default}
here=$(dirname "$0")
read -r -a members <<< "${MEMBERS:?MEMBERS: ENCODER_DIR:BUNDLE_DIR pairs}"
read -r -a soup_members <<< "${SOUP_MEMBERS:-${MEMBERS}}"
args=()
for m in "${members[@]}"; do args+=(--member "$m"); done
soup_args=()
for m in "${soup_members[@]}"; do soup_args+=(--member "$m"); done
[ -f "$soup/kl_grade-1.0.0/head.json" ] || "$bin/python" "$here/soup.py" "${soup_args[@]}" --img-size "$size" --out "$soup"
"$bin/python" "$here/ensemble.py" "${args[@]}" --member "$soup/encoder-kl_grade-1.0.0:$soup/kl_grade-1.0.0" \
  --no-val --out "$soup/choice"
chosen=$("$bin/python" -c "import json,sys; print(' + '.join(json.load(open(sys.argv[1]))['chosen']['members']))" \
  "$soup/choice/ensemble.json")
echo "carve chose: $chosen"
"$bin/heads" evaluate --encoder "$soup/encoder-kl_grade-1.0.0" --dataset chen_kl --data "$data" \
  --cache runs/cache --bundle "$soup/kl_grade-1.0.0" --split val --out "$soup/eval-val"
[ "${PACKAGE:-1}" = 1 ] && [ "$chosen" = "$(basename "$soup")" ] || exit 0
"$here/package.sh" "$soup/encoder-kl_grade-1.0.0" "$soup/kl_grade-1.0.0" "$soup/eval-val/results.json" \
  "${VERSION:-2.2.0}" "$dest"

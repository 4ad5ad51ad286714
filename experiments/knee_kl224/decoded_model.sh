#!/usr/bin/env bash
# Default model 2.3.0: the 2.2.0 soup (encoder and head weights unchanged) with the decoding rule chosen on
# the training patients' carve (experiments/knee_kl224/decoding.py: the rule fixed before val chose
# median), evaluated once on val by that rule and packaged into orthonode/models/default.
#
#   experiments/knee_kl224/decoded_model.sh
set -euo pipefail
bin=${BIN:-.venv/bin}
data=${DATA:-../shared/data/knee_kl224}
src=${SRC:-orthonode/models/default}
out=${OUT:-runs/decoded}
here=$(dirname "$0")
bundle=$(ls -d "$src"/heads/kl_grade-* | sort -V | tail -1)
"$bin/python" "$here/decoding.py" --encoder "$src/encoder" --bundle "$bundle" --out "$out/choice"
rule=$("$bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['chosen'])" "$out/choice/decoding.json")
echo "carve chose: $rule"
rm -rf "$out/bundle" "$out/encoder" && mkdir -p "$out/bundle"
cp -r "$src/encoder" "$out/encoder"  # package.sh replaces $src whole: keep what it reads outside it
"$bin/heads" export --bundle "$bundle" --decode "$rule" --out "$out/bundle"
decoded=$(ls -d "$out"/bundle/kl_grade-*)
"$bin/heads" evaluate --encoder "$out/encoder" --dataset chen_kl --data "$data" --cache runs/cache \
  --bundle "$decoded" --split val --out "$out/eval-val"
[ "${PACKAGE:-1}" = 1 ] || exit 0
"$here/package.sh" "$out/encoder" "$decoded" "$out/eval-val/results.json" "${VERSION:-2.3.0}" "$src"

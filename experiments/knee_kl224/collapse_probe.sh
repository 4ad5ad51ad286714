#!/usr/bin/env bash
# The fast diagnostic of the DINO collapse on knee crops (README, "Self-supervised pretraining"): the
# 2-block test ViT at 64 px, 1,024 prototypes, batch 32, one thread, about 20 s per 120 iterations.
#
#   experiments/knee_kl224/collapse_probe.sh NAME [key.sub=value ...]   e.g. optim.freeze_last_layer_epochs=6
#
# Prints the DINO / iBOT / KoLeo losses every 20 iterations, then the teacher and student statistics of
# inspect_teacher.py (at initialisation and at the last checkpoint). ln K = 6.931 is a uniform output.
set -euo pipefail
name=${1:?run name}; shift
bin=${BIN:-.venv/bin}
out=${OUT:-runs/probes}
head="{num_prototypes: 1024, hidden_dim: 256, bottleneck_dim: 64, n_layers: 3}"
manifest=runs/manifests/knee_kl224.csv
[ -f "$manifest" ] || "$bin/ssl-train" scan "${DATA:-../shared/data/knee_kl224}" --folder-split --out "$manifest"
rm -rf "${out:?}/$name"; mkdir -p "$out"
OMP_NUM_THREADS=1 "$bin/ssl-train" fit ssl_train/configs/knee_kl224_vit_tiny.yaml run.name="$name" \
  run.output_dir="$out" model.arch=vit_test_patch16_dinov3 "model.dino_head=$head" "model.ibot_head=$head" \
  crops.global_size=64 crops.local_size=32 data.batch_size_per_device=32 data.num_workers=0 \
  optim.lr=0.001 optim.epochs=1 optim.warmup_epochs=0.1 optim.freeze_last_layer_epochs=0.02 \
  loss.warmup_teacher_temp_epochs=0.1 train.log_every=20 train.max_iterations="${ITERS:-120}" \
  train.progress=none "$@" > "$out/$name.log" 2>&1
"$bin/python" - "$out/$name/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("iteration: dino / ibot / koleo")
print("\n".join(f"{r['iteration']:>5}: {r['dino']:.3f} / {r['ibot']:.3f} / {r['koleo']:.2f}" for r in rows))
PY
OMP_NUM_THREADS=1 "$bin/python" "$(dirname "$0")/inspect_teacher.py" "$out/$name" --size 64

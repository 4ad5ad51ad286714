#!/usr/bin/env bash
# Install a fine-tuned encoder and its evaluated head bundle as the node's packaged model (swapped in whole:
# written beside the destination, then renamed), keeping the destination's MODEL_CARD.md and its knee-joint
# localiser (which belongs to the encoder: retrain it with experiments/knee_fullsize/localiser.sh when the
# encoder changes -- the node refuses a localiser of another encoder and then grades no full-size film).
#
#   experiments/knee_kl224/package.sh ENCODER_DIR BUNDLE_DIR RESULTS_JSON VERSION [DEST]
#
# Called by default_model.sh and soup_model.sh; DEST defaults to orthonode/models/default.
set -euo pipefail
bin=${BIN:-.venv/bin}
encoder=$1 bundle=$2 results=$3 version=$4
dest=${5:-orthonode/models/default}
rm -rf "$dest.new"
mkdir -p "$dest.new/heads"
cp -r "$encoder" "$dest.new/encoder"
"$bin/heads" export --bundle "$bundle" --results "$results" --version "$version" --out "$dest.new/heads"
[ -f "$dest/MODEL_CARD.md" ] && cp "$dest/MODEL_CARD.md" "$dest.new/"
[ -d "$dest/localiser" ] && cp -r "$dest/localiser" "$dest.new/"
rm -rf "$dest" && mv "$dest.new" "$dest"
du -sh "$dest"
ORTHONODE_MODELS_DIR="$dest" "$bin/orthonode" models

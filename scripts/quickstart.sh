#!/usr/bin/env bash
# Builds rmt, runs the example classifier on a photo, and checks a model against the authors'
# numbers with rmt-infer. Installs what it needs first (see scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/libtorch.sh  # RMT_LIBTORCH: wheel (default) or debian
BUILD_DIR="${BUILD_DIR:-$rmt_build_dir}"
REF="${RMT_REFERENCE_DIR:-../shared/reference}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$(rmt_torch_dir)"
cmake --build "$BUILD_DIR" -j"$(nproc)" --target rmt-classify rmt-infer
bin="$BUILD_DIR/examples"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The tiny classifier of the reference data (10 classes), as a config file.
cat > "$work/tiny_cls.json" <<'JSON'
{"embed_dims": [16, 32, 48, 64], "depths": [1, 2, 2, 1], "num_heads": [2, 2, 4, 4],
 "init_values": [2, 2, 2, 2], "heads_ranges": [4, 4, 6, 6], "mlp_ratios": [3, 3, 3, 3],
 "chunkwise_recurrents": [true, true, false, false], "layerscales": [false, false, false, false],
 "projection": 96, "num_classes": 10}
JSON

echo "== rmt-classify: a photo through the authors' eval transform and RMT-T"
# The reference checkpoints hold random weights, so the classes are arbitrary: pass the authors'
# RMT-T.pth (see weights/README.md) for real ones.
if [ -f "$REF/rmt_t.pth" ]; then
  "$bin/rmt-classify" --arch rmt_t --weights "$REF/rmt_t.pth" --topk 3 tests/data/preprocess_photo.jpg
else
  "$bin/rmt-classify" --config "$work/tiny_cls.json" --weights tests/data/tiny_cls.pth \
    --input-size 64 --topk 3 tests/data/preprocess_photo.jpg
fi

echo "== rmt-infer: the authors' numbers, float64"
"$bin/rmt-infer" --config "$work/tiny_cls.json" --kind classifier --weights tests/data/tiny_cls.pth \
  --input tests/data/tiny_cls.input.npy --output "$work/tiny_cls" --dtype float64 \
  --compare tests/data/tiny_cls.output.npy

#!/usr/bin/env bash
# Images/s of a sharded rmt-classify --output run: one process against N ranks under torchrun on
# this machine, end to end (start-up, weights, decoding, the model, chunk files, the merge), runs
# alternating so that a machine whose speed drifts treats both alike. Prints a table.
#
#   bash benchmarks/batch_ranks.sh [--build DIR] [--images N] [--ranks N] [--repeats R]
#        [--arch rmt_t --weights FILE] [--size WxH] [--batch-size B]
#
# Defaults: build/, 192 JPEG images of 500x375 (written once under $TMPDIR), 2 ranks, 2 repeats,
# RMT-T with the authors' weights from the reference folder (../shared/reference/rmt_t.pth).
# One process gets all the cores (--threads $(nproc)); each of the N ranks 1/N of them
# (torchrun's OMP_NUM_THREADS, --threads nproc/N). Needs python3 with Pillow and numpy, and torchrun.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build
IMAGES=192
RANKS=2
REPEATS=2
ARCH=rmt_t
WEIGHTS=$ROOT/../shared/reference/rmt_t.pth
SIZE=500x375
BATCH=16
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --images) IMAGES=$2; shift 2 ;;
    --ranks) RANKS=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --arch) ARCH=$2; shift 2 ;;
    --weights) WEIGHTS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --batch-size) BATCH=$2; shift 2 ;;
    *) echo "batch_ranks.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done
TOOL=$BUILD/examples/rmt-classify
[ -x "$TOOL" ] || { echo "batch_ranks.sh: $TOOL is missing: build the rmt-classify target" >&2; exit 1; }
[ -f "$WEIGHTS" ] || { echo "batch_ranks.sh: no weights at $WEIGHTS (give --weights FILE)" >&2; exit 1; }
if command -v torchrun > /dev/null; then TORCHRUN=torchrun; else TORCHRUN="python3 -m torch.distributed.run"; fi
CORES=$(nproc)

WORK=${TMPDIR:-/tmp}/rmt-batch-bench
IMGS=$WORK/images-$IMAGES-$SIZE
if [ ! -d "$IMGS" ]; then
  mkdir -p "$IMGS.partial"
  python3 - "$IMGS.partial" "$IMAGES" "$SIZE" <<'EOF'
import sys, numpy as np
from PIL import Image
out, n, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
w, h = map(int, size.split("x"))
y, x = np.mgrid[0:h, 0:w]
for i in range(n):  # smooth photo-like content with some texture, different per image
    rng = np.random.default_rng(i)
    f = rng.uniform(0.005, 0.05, 6)
    rgb = np.stack([np.sin(x * f[0] + y * f[1] + i), np.cos(x * f[2] - y * f[3]),
                    np.sin((x + y) * f[4] + i * 0.3)], -1) * 100 + 128
    rgb += rng.normal(0, 12, rgb.shape)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(f"{out}/img{i:05d}.jpg", quality=90)
EOF
  mv "$IMGS.partial" "$IMGS"
fi

COMMON=(--arch "$ARCH" --weights "$WEIGHTS" --batch-size "$BATCH" --chunk-size 64 --progress 1000000)
declare -A TOTAL_S=()
run() {  # run NAME: one timed run into a fresh directory; prints its wall seconds
  local name=$1 out=$WORK/run-$1
  rm -rf "$out"
  local start end
  start=$(date +%s.%N)
  if [ "$name" = one ]; then
    "$TOOL" "${COMMON[@]}" --threads "$CORES" --output "$out" "$IMGS" 2> "$WORK/$name.log"
  else
    $TORCHRUN --standalone --nproc-per-node "$RANKS" --no-python "$TOOL" "${COMMON[@]}" \
      --threads $(( CORES / RANKS > 0 ? CORES / RANKS : 1 )) --output "$out" "$IMGS" 2> "$WORK/$name.log"
  fi
  end=$(date +%s.%N)
  [ "$(wc -l < "$out/classes.jsonl")" -eq "$IMAGES" ] || { echo "batch_ranks.sh: $name: incomplete result" >&2; exit 1; }
  echo "$end - $start" | bc -l
}

echo "rmt-classify --output, $ARCH, $IMAGES JPEGs of $SIZE, batch $BATCH, $CORES cores, $REPEATS repeats (alternating)"
for r in $(seq "$REPEATS"); do
  for name in one ranks; do
    s=$(run "$name")
    TOTAL_S[$name]=$(echo "${TOTAL_S[$name]:-0} + $s" | bc -l)
    printf '  repeat %d %-6s %7.1f s\n' "$r" "$name" "$s"
  done
done
one=$(echo "${TOTAL_S[one]} / $REPEATS" | bc -l)
many=$(echo "${TOTAL_S[ranks]} / $REPEATS" | bc -l)
printf '\n| processes | threads each | wall s (mean) | images/s | vs 1 process |\n|---|---:|---:|---:|---:|\n'
printf '| 1 | %d | %.1f | %.2f | 1.00x |\n' "$CORES" "$one" "$(echo "$IMAGES / $one" | bc -l)"
printf '| %d (torchrun) | %d | %.1f | %.2f | %.2fx |\n' "$RANKS" $(( CORES / RANKS > 0 ? CORES / RANKS : 1 )) \
  "$many" "$(echo "$IMAGES / $many" | bc -l)" "$(echo "$one / $many" | bc -l)"

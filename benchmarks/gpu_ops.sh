#!/usr/bin/env bash
# One call on a GPU machine: build the MaSA operator targets, run their tests (CPU and CUDA),
# check the kernels for memory errors and races, and time them. Full logs go under $OUT (the
# device tool's output folder) or ./ops-out; a short summary ends the output.
#
#   bash benchmarks/gpu_ops.sh            # build + tests + sanitizer + benchmarks
#   SKIP_BENCH=1 bash benchmarks/gpu_ops.sh
#   REUSE_BUILD=1 BUILD=/path/to/build bash benchmarks/gpu_ops.sh   (skip the build if it is there)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-/tmp/build-ops}
OUT=${OUT:-$ROOT/ops-out}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
TORCH_LIB=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv \
  | tee "$OUT/gpu.txt"

if [ ! -x "$BUILD/tests/test_ops_cuda" ] || [ -z "${REUSE_BUILD:-}" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DRMT_BUILD_TOOLS=OFF -DRMT_CUDA=ON > "$OUT/configure.log" 2>&1 \
    || { tail -30 "$OUT/configure.log"; exit 1; }
  cmake --build "$BUILD" -j"$JOBS" --target test_ops test_ops_cuda bench_ops > "$OUT/build.log" 2>&1 \
    || { grep -E "error" -A5 "$OUT/build.log" | head -60; exit 1; }
fi

status=0
"$BUILD/tests/test_ops_cuda" --gtest_output="xml:$OUT/test_ops_cuda.xml" > "$OUT/test_ops_cuda.log" 2>&1 || status=1
"$BUILD/tests/test_ops" > "$OUT/test_ops.log" 2>&1 || status=1

# Memory errors and races on small cases (no atomics anywhere: racecheck should stay silent).
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 3 "$BUILD/tests/test_ops_cuda" \
      --gtest_filter='*NonContiguous*:*Rejects*' > "$OUT/sanitizer_$tool.log" 2>&1 || status=1
    tail -3 "$OUT/sanitizer_$tool.log"
  done
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  "$BUILD/benchmarks/bench_ops" > "$OUT/bench_float32.md" 2>&1
  "$BUILD/benchmarks/bench_ops" --dtype bfloat16 > "$OUT/bench_bfloat16.md" 2>&1
fi

echo "== tests"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED" "$OUT/test_ops_cuda.log" "$OUT/test_ops.log" | head -40
if [ -z "${SKIP_BENCH:-}" ]; then
  echo "== float32 (fused rows)"
  grep -E "^###|fused" "$OUT/bench_float32.md"
  echo "== bfloat16 (fused rows)"
  grep -E "^###|fused" "$OUT/bench_bfloat16.md"
fi
exit $status

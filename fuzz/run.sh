#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 60).
#   fuzz/run.sh [SECONDS] [BUILD_DIR]
# Seeds come from tests/data; corpora and any crash files stay in BUILD_DIR/corpus-*.
set -euo pipefail

seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${2:-$root/build-fuzz}
jobs=${JOBS:-2}

if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DRMT_FUZZ=ON \
    -DRMT_BUILD_TESTS=OFF -DRMT_BUILD_TOOLS=OFF -DRMT_BUILD_BENCHMARKS=OFF -DRMT_CUDA=OFF
fi
cmake --build "$build" -j "$jobs" --target fuzz_torch_save fuzz_pickle fuzz_safetensors

data=$root/tests/data
seed() {  # seed NAME FILES...
  local dir=$build/corpus-$1
  shift
  mkdir -p "$dir"
  for f in "$@"; do [[ -f $f ]] && cp -n "$f" "$dir/" || true; done
}
seed torch_save "$data/tiny_cls.legacy.pth" "$data/tiny_cls.module_prefix.pth" "$data/tiny_cls.fp16.pth"
seed safetensors "$data/tiny_cls.safetensors"
mkdir -p "$build/corpus-pickle"
if command -v unzip >/dev/null; then
  for f in tiny_cls tiny_dense tiny_ls; do
    unzip -p "$data/$f.pth" "$f/data.pkl" > "$build/corpus-pickle/$f.pkl" 2>/dev/null || true
  done
fi

# The readers reject inputs by throwing; libFuzzer reports only crashes, leaks, timeouts and
# sanitizer findings. Torch's own allocations look like leaks to LeakSanitizer at exit, so leak
# detection is per input only.
status=0
for target in torch_save pickle safetensors; do
  echo "== fuzz_$target for ${seconds}s"
  (cd "$build" && ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
    "$build/fuzz/fuzz_$target" -max_total_time="$seconds" -max_len=1048576 -timeout=30 \
      -rss_limit_mb=4096 -print_final_stats=1 "$build/corpus-$target") || status=1
done
exit $status

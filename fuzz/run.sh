#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 60), one after the
# other, on one core each.
#   fuzz/run.sh [SECONDS] [BUILD_DIR] [TARGET...]      TARGET: torch_save, pickle, safetensors
# Seeds: the committed corpus fuzz/corpus/<target> (see fuzz/make_seeds.py). The working corpora
# grow in BUILD_DIR/corpus-<target>; crash-*/leak-*/timeout-* files land in BUILD_DIR, and each
# run's log in BUILD_DIR/fuzz-<target>.log (its last lines: exec count, coverage).
# Environment: JOBS (build jobs, 2), MAX_LEN (bytes per input, 65536), MERGE=1 (afterwards,
# add the working-corpus inputs that reach new edges to fuzz/corpus/<target>: libFuzzer's
# -merge=1 on edge coverage only, -use_counters=0, which keeps the corpus small).
set -euo pipefail

seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${2:-$root/build-fuzz}
mkdir -p "$build"
build=$(cd "$build" && pwd)  # the runs below change directory
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(torch_save pickle safetensors)
jobs=${JOBS:-2}
max_len=${MAX_LEN:-65536}

if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DRMT_FUZZ=ON \
    -DRMT_BUILD_TESTS=OFF -DRMT_BUILD_TOOLS=OFF -DRMT_BUILD_BENCHMARKS=OFF -DRMT_CUDA=OFF
fi
cmake --build "$build" -j "$jobs" --target fuzz_torch_save fuzz_pickle fuzz_safetensors

for target in "${targets[@]}"; do
  mkdir -p "$build/corpus-$target"
  if [[ -d $root/fuzz/corpus/$target ]]; then
    cp -n "$root/fuzz/corpus/$target"/* "$build/corpus-$target/" 2>/dev/null || true
  fi
done

# The readers reject inputs by throwing; libFuzzer reports only crashes, leaks, timeouts and
# sanitizer findings (UBSan's included: halt_on_error). Leaks are checked per input (libFuzzer's
# -detect_leaks); LibTorch's own allocations that live until exit are not reported at exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
for target in "${targets[@]}"; do
  echo "== fuzz_$target for ${seconds}s (log: $build/fuzz-$target.log)"
  (cd "$build" && "$build/fuzz/fuzz_$target" -max_total_time="$seconds" -max_len="$max_len" \
      -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 "$build/corpus-$target") \
      >"$build/fuzz-$target.log" 2>&1 || status=1
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)' \
    "$build/fuzz-$target.log" || true
  if [[ ${MERGE:-0} == 1 && $status == 0 ]]; then
    mkdir -p "$root/fuzz/corpus/$target"
    (cd "$build" && "$build/fuzz/fuzz_$target" -merge=1 -use_counters=0 -max_len="$max_len" -timeout=30 \
        "$root/fuzz/corpus/$target" "$build/corpus-$target") >"$build/merge-$target.log" 2>&1 ||
      status=1
    tail -n 1 "$build/merge-$target.log"
  fi
done
exit $status

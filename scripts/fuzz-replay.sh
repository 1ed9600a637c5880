#!/usr/bin/env bash
# Replays the fuzz corpus through the three libFuzzer targets (fuzz/) built with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer, as CI does: every committed input
# (fuzz/corpus/<target>/) and the reference checkpoints of tests/data run once, and any crash,
# sanitizer report, leak or timeout fails. No fuzzing: a few minutes, mostly the build.
#
#   scripts/fuzz-replay.sh [BUILD_DIR] [CMAKE_ARGS...]
#
# BUILD_DIR (default build-fuzz-replay) is a build tree of its own, configured on the first run
# with the CMAKE_ARGS (e.g. -DTorch_DIR=...). Environment: JOBS (build jobs, 2), CC/CXX (clang,
# clang++), RMT_FUZZ_REQUIRED=1 (fail instead of skipping when clang or libFuzzer is missing).
# Exit status: 0 clean; 1 a finding, or the build failed; 77 no clang with libFuzzer here (CTest
# reports the test as skipped; scripts/install-deps.sh installs clang and libclang-rt-14-dev).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-fuzz-replay}
shift $(( $# > 0 ? 1 : 0 ))
jobs=${JOBS:-2}
cc=${CC:-clang}
cxx=${CXX:-clang++}
case $cxx in *clang*) ;; *) cc=clang; cxx=clang++ ;; esac  # libFuzzer is clang's
mkdir -p "$build"
build=$(cd "$build" && pwd)

# --- the toolchain: clang with the libFuzzer and sanitizer runtimes (libclang-rt-*-dev)
missing() {
  echo "fuzz-replay: $1" >&2
  echo "fuzz-replay: install clang and libclang-rt-14-dev (scripts/install-deps.sh does)" >&2
  if [[ ${RMT_FUZZ_REQUIRED:-0} == 1 ]]; then exit 1; fi
  echo "fuzz-replay: skipped" >&2
  exit 77
}
command -v "$cxx" >/dev/null 2>&1 || missing "no $cxx found"
probe=$build/toolchain-probe
mkdir -p "$probe"
printf '%s\n' '#include <cstddef>' '#include <cstdint>' \
  'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }' >"$probe/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" \
     >"$probe/probe.log" 2>&1; then
  cat "$probe/probe.log" >&2
  missing "$cxx cannot link a libFuzzer target with AddressSanitizer and UBSan"
fi

# --- the fuzz targets (only they are built: the readers in src/io, instrumented)
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DRMT_FUZZ=ON \
    -DRMT_BUILD_TESTS=OFF -DRMT_BUILD_TOOLS=OFF -DRMT_BUILD_BENCHMARKS=OFF -DRMT_CUDA=OFF "$@"
fi
cmake --build "$build" -j "$jobs" --target fuzz_torch_save fuzz_pickle fuzz_safetensors

# --- the inputs: the committed corpus, plus the reference checkpoints (their pickles for
# fuzz_pickle), which are not copied into fuzz/corpus to keep it small.
data=$root/tests/data
pickles=$build/reference-pickles
rm -rf "$pickles"
mkdir -p "$pickles"
if command -v python3 >/dev/null 2>&1; then
  python3 - "$pickles" "$data"/*.pth <<'EOF'
import os, sys, zipfile
out = sys.argv[1]
for path in sys.argv[2:]:
    if not zipfile.is_zipfile(path):
        continue  # legacy torch.save: replayed whole by fuzz_torch_save
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith("/data.pkl"):
                base = os.path.basename(path).rsplit(".", 1)[0]
                with open(os.path.join(out, base + ".data.pkl"), "wb") as f:
                    f.write(z.read(name))
EOF
fi

inputs() {  # inputs TARGET: one path per line
  local target=$1
  find "$root/fuzz/corpus/$target" -maxdepth 1 -type f 2>/dev/null | LC_ALL=C sort
  case $target in
    torch_save) ls "$data"/*.pth "$data"/*.safetensors 2>/dev/null ;;
    safetensors) ls "$data"/*.safetensors 2>/dev/null ;;
    pickle) find "$pickles" -type f | LC_ALL=C sort ;;
  esac
}

# Every finding is fatal (-fno-sanitize-recover=all in fuzz/CMakeLists.txt; halt_on_error for
# a UBSan built otherwise). Leaks are checked at exit: the readers' memory must all be freed.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
for target in torch_save pickle safetensors; do
  mapfile -t files < <(inputs "$target")
  if [[ ${#files[@]} -eq 0 ]]; then
    echo "fuzz-replay: fuzz_$target: no inputs found" >&2
    status=1
    continue
  fi
  log=$build/replay-$target.log
  # Inputs given as files are run once each, nothing is written; -timeout is per input.
  if (cd "$build" && "$build/fuzz/fuzz_$target" -timeout=60 -rss_limit_mb=4096 "${files[@]}") \
       >"$log" 2>&1; then
    echo "fuzz-replay: fuzz_$target: ${#files[@]} inputs, no finding"
  else
    echo "fuzz-replay: fuzz_$target: FINDING (log: $log)" >&2
    grep -E -B2 -A40 '^==[0-9]+==(ERROR|WARNING)|runtime error:|^SUMMARY|ALARM|out-of-memory' \
      "$log" | head -n 120 >&2 || tail -n 60 "$log" >&2
    last=$(grep -E '^Running: ' "$log" | tail -n 1 || true)
    [[ -z $last ]] || echo "fuzz-replay: the input: ${last#Running: }" >&2
    status=1
  fi
done
exit $status

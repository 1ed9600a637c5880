#!/usr/bin/env bash
# Builds the checkpoint readers (src/io) and their tests (tests/test_checkpoint.cpp,
# tests/test_checkpoint_bounds.cpp) with AddressSanitizer and UndefinedBehaviorSanitizer, in a
# small build of their own (tests/io_sanitized/), and runs them: any sanitizer report, leak or
# failure fails. CI runs it after the main suite (scripts/test.sh); scripts/sanitize.sh does the
# same for the whole library, tools and suite (too long for CI).
#
#   scripts/test-io-sanitized.sh [BUILD_DIR] [CMAKE_ARGS...]     (BUILD_DIR: build-io-sanitized)
#
# Environment: JOBS (build jobs, 2), CXX (g++; its sanitizer runtimes come with it on Debian).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-}
[[ -n $build ]] || build=$root/build-io-sanitized
shift $(( $# > 0 ? 1 : 0 ))
jobs=${JOBS:-2}
cxx=${CXX:-g++}
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

if ! printf 'int main() { return 0; }\n' | "$cxx" -x c++ $flags - -o /dev/null >/dev/null 2>&1; then
  echo "test-io-sanitized: $cxx cannot link with -fsanitize=address,undefined" >&2
  exit 1
fi
start=$(date +%s)
if [[ ! -f $build/CMakeCache.txt ]]; then
  # -O1: the tests run in seconds rather than minutes under the sanitizers.
  cmake -S "$root/tests/io_sanitized" -B "$build" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" "$@" >/dev/null
fi
cmake --build "$build" -j "$jobs"
built=$(date +%s)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:protect_shadow_gap=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/scripts/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
ctest --test-dir "$build" --output-on-failure
echo "test-io-sanitized: build $((built - start)) s, tests $(( $(date +%s) - built )) s"

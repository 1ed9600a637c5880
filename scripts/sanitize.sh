#!/usr/bin/env bash
# Builds rmt, its tools and its tests with AddressSanitizer and UndefinedBehaviorSanitizer in a
# build tree of their own and runs the test suite there (all but the `install` and `fuzz` labels).
#
#   scripts/sanitize.sh [BUILD_DIR] [CTEST_ARGS...]       e.g. scripts/sanitize.sh '' -R checkpoint
#
# BUILD_DIR defaults to build-sanitize. Environment: JOBS (build jobs, 2), CTEST_JOBS (tests run
# at once, 1), CC/CXX (gcc/g++, whose sanitizer runtimes come with g++ on Debian; clang/clang++
# work too, with libclang-rt-14-dev), RMT_SANITIZE_CMAKE_ARGS (more
# configure arguments, e.g. -DTorch_DIR=...). Every sanitizer finding fails the test it happens
# in. LibTorch itself is not instrumented: only rmt's code (the library, tools and tests) is checked.
#
# The sanitizer options, and why each differs from the default (override them through the
# environment: a variable already set is used as it is):
#   ASAN_OPTIONS
#     detect_leaks=1           leaks are reported, with the suppressions of scripts/lsan.supp
#                              (see that file for each one and why)
#     protect_shadow_gap=0     the CUDA driver maps memory where ASan's shadow gap is; without it a
#                              CUDA-enabled LibTorch cannot even ask whether a GPU is there
#   UBSAN_OPTIONS  halt_on_error=1 print_stacktrace=1  (a UBSan report fails the test)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-}
[[ -n $build ]] || build=$root/build-sanitize
shift $(( $# > 0 ? 1 : 0 ))
jobs=${JOBS:-2}
cc=${CC:-gcc}
cxx=${CXX:-g++}
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

if ! printf 'int main() { return 0; }\n' |
     "$cxx" -x c++ $flags - -o /dev/null >/dev/null 2>&1; then
  echo "sanitize: $cxx cannot link with -fsanitize=address,undefined" >&2
  echo "sanitize: install the sanitizer runtime (clang: libclang-rt-14-dev; gcc: libasan8," \
       "libubsan1; scripts/install-deps.sh installs clang's)" >&2
  exit 1
fi

# Debug for the assertions, at -O1 so that the suite runs in minutes, not hours.
# RMT_CUDA=OFF: the CUDA kernels are not instrumented by these flags; benchmarks are not tests.
if [[ ! -f $build/CMakeCache.txt ]]; then
  # shellcheck disable=SC2086
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
    -DRMT_CUDA=OFF -DRMT_BUILD_BENCHMARKS=OFF -DRMT_BUILD_TESTS=ON -DRMT_BUILD_TOOLS=ON \
    ${RMT_SANITIZE_CMAKE_ARGS:-}
fi
cmake --build "$build" -j "$jobs"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:protect_shadow_gap=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/scripts/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
ctest --test-dir "$build" -LE '^(install|fuzz)$' --output-on-failure -j "${CTEST_JOBS:-1}" "$@"

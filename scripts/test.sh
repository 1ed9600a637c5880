#!/usr/bin/env bash
# Builds rmt and runs the whole test suite through CTest. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/libtorch.sh  # RMT_LIBTORCH: wheel (default) or debian
BUILD_DIR="${BUILD_DIR:-$rmt_build_dir}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$(rmt_torch_dir)"
cmake --build "$BUILD_DIR" -j"$(nproc)"
ctest --test-dir "$BUILD_DIR" --output-on-failure
# The checkpoint readers and their tests under ASan/UBSan (about 4 min), in a build folder of their
# own per LibTorch; RMT_IO_SANITIZED=0 skips them (CI runs them once, with the wheel).
if [ "${RMT_IO_SANITIZED:-1}" != 0 ]; then
  scripts/test-io-sanitized.sh "build-io-sanitized-$RMT_LIBTORCH" -DTorch_DIR="$(rmt_torch_dir)"
fi

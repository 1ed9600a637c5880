#!/usr/bin/env bash
# Installs a built rmt into a temporary prefix, builds tests/consumer (a separate CMake project that
# does find_package(rmt CONFIG REQUIRED)) against that installation, runs it, and runs the
# installed tools' --help. Everything is removed afterwards.
#
# Usage: scripts/test-install.sh [BUILD_DIR]    (default: build; it must be built already)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
if [ ! -f "$build/CMakeCache.txt" ]; then
  echo "test-install: error: $build is not a configured build directory" >&2
  exit 1
fi
build="$(cd "$build" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/rmt-install.XXXXXX")"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

echo "test-install: cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log" >&2; echo "test-install: error: install failed (is $build fully built?)" >&2; exit 1; }

for f in include/rmt/rmt.h include/rmt/version.h include/rmt/data/preprocess.h include/rmt/nn/masa.h; do
  [ -e "$prefix/$f" ] || { echo "test-install: error: $f was not installed" >&2; exit 1; }
done
# fmt is private to the library and the tools (cmake/fmt.cmake): no installed header includes it.
if grep -rlE '#[[:space:]]*include[[:space:]]*[<"]fmt/' "$prefix/include/rmt" >&2; then
  echo "test-install: error: the installed headers above include fmt, which rmt keeps private" >&2
  exit 1
fi
# lib, lib64 or lib/<multiarch>, depending on CMAKE_INSTALL_LIBDIR.
for f in librmt.so rmtConfig.cmake rmtConfigVersion.cmake rmtTargets.cmake; do
  [ -n "$(find "$prefix" -name "$f" -print -quit)" ] ||
    { echo "test-install: error: $f was not installed" >&2; exit 1; }
done
for tool in rmt-infer rmt-classify; do
  [ -x "$prefix/bin/$tool" ] || { echo "test-install: error: bin/$tool was not installed" >&2; exit 1; }
done
for exe in "$prefix"/bin/rmt-*; do
  # Runs without LD_LIBRARY_PATH: the installed RUNPATH finds librmt and LibTorch.
  "$exe" --help >/dev/null || { echo "test-install: error: installed $(basename "$exe") --help failed" >&2; exit 1; }
done
# The installed tool works on its own (no data files): RMT-T's size.
"$prefix/bin/rmt-infer" --arch rmt_t --summary | grep -q "14,334,216" ||
  { echo "test-install: error: installed rmt-infer --summary did not print RMT-T's parameters" >&2; exit 1; }

# The consumer sees only the installed package (not the build tree): the prefix, plus LibTorch.
echo "test-install: building tests/consumer against $prefix"
cmake -S "$root/tests/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_TYPE=Release >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log" >&2; echo "test-install: error: configuring the consumer failed" >&2; exit 1; }
cmake --build "$work/consumer" -j"$(nproc)" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log" >&2; echo "test-install: error: building the consumer failed" >&2; exit 1; }
"$work/consumer/rmt_consumer"
echo "test-install: ok"

#!/usr/bin/env bash
# Installs what building and testing rmt needs on Debian 12: a compiler, CMake, GoogleTest,
# nlohmann-json, CLI11, stb, clang with its sanitizer and libFuzzer runtimes (libclang-rt-14-dev,
# only "recommended" by Debian's clang: scripts/fuzz-replay.sh and scripts/sanitize.sh need it),
# and LibTorch: from the PyPI torch wheel (pinned), or with RMT_LIBTORCH=debian Debian's
# libtorch-dev with OpenBLAS and libfmt-dev (the wheel ships fmt's headers; Debian's LibTorch does
# not: see cmake/fmt.cmake) (see scripts/libtorch.sh).
set -euo pipefail
source "$(dirname "$0")/libtorch.sh"
TORCH_VERSION="${RMT_TORCH_VERSION:-2.11.0}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

packages=(g++ cmake make libgtest-dev nlohmann-json3-dev libcli11-dev libstb-dev python3
          clang libclang-rt-14-dev)
if [ "$RMT_LIBTORCH" = debian ]; then
  # libtorch1.13 accepts any libblas.so.3, and apt would pick the reference BLAS (10x slower).
  packages+=(libtorch-dev libopenblas0-pthread libfmt-dev)
else
  packages+=(python3-pip)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# python3/pip may come from elsewhere (pyenv): only ask apt when no python3 with pip is on PATH.
if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
  missing=("${missing[@]/python3-pip}"); missing=("${missing[@]/python3}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "$RMT_LIBTORCH" = debian ]; then
  # An administrator's manual choice can keep the reference BLAS in spite of OpenBLAS.
  blas=$(readlink -f "/usr/lib/$(gcc -print-multiarch)/libblas.so.3" || true)
  case "$blas" in
    */blas/libblas.so.3*)
      echo "install-deps: warning: libblas.so.3 is the reference BLAS ($blas): LibTorch's CPU" \
           "matmuls run about 10x slower; choose OpenBLAS with" \
           "update-alternatives --config libblas.so.3-$(gcc -print-multiarch)" >&2 ;;
  esac
else
  have=$(python3 -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
  if [ "$have" != "$TORCH_VERSION" ]; then
    echo "install-deps: pip install torch==$TORCH_VERSION (found: ${have:-none})"
    python3 -m pip install -q "torch==$TORCH_VERSION" 2>/dev/null ||
      python3 -m pip install -q --break-system-packages "torch==$TORCH_VERSION"
  fi
fi

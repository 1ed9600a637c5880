# Sourced by scripts/install-deps.sh, quickstart.sh and test.sh: which LibTorch to build against.
#
#   RMT_LIBTORCH=wheel   (default) the LibTorch inside the PyPI torch wheel, torch==2.11.0
#   RMT_LIBTORCH=debian  Debian 12's libtorch-dev (LibTorch 1.13, CPU only) with OpenBLAS: no
#                        3.9 GB wheel to download
#
# Defines rmt_torch_dir (prints the chosen LibTorch's TorchConfig.cmake folder, for
# -DTorch_DIR; call it after install-deps) and rmt_build_dir (the default build folder:
# build, or build-debian so that the two never share a CMake cache).
RMT_LIBTORCH="${RMT_LIBTORCH:-wheel}"
case "$RMT_LIBTORCH" in
  wheel) rmt_build_dir=build ;;
  debian) rmt_build_dir=build-debian ;;
  *)
    echo "$(basename "$0"): error: RMT_LIBTORCH=$RMT_LIBTORCH: expected wheel (the default) or debian" >&2
    exit 1
    ;;
esac

rmt_torch_dir() {
  if [ "$RMT_LIBTORCH" = debian ]; then
    echo "/usr/lib/$(gcc -print-multiarch)/cmake/Torch"
  else
    python3 -c 'import os, torch; print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))'
  fi
}

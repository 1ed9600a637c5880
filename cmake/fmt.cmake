# fmt, header-only, for rmt's formatted text (tables, summaries, progress, messages).
# Included by the top-level CMakeLists.txt after LibTorch; defines the imported target rmt_fmt,
# which rmt, the tools and the tests link PRIVATE: fmt never appears in an installed header.
#
# Which fmt: the one inside the chosen LibTorch's include folders when it has one (the PyPI wheel
# ships fmt 12 headers in torch/include/fmt, a folder that comes first on the include path and
# would shadow any other fmt anyway). Its libc10 exports no fmt symbols, so fmt is used header-only
# (FMT_HEADER_ONLY). A LibTorch without fmt headers (Debian's libtorch-dev 1.13) takes
# find_package(fmt), e.g. Debian's libfmt-dev, again header-only.

set(_rmt_fmt_dir "")
foreach(dir IN LISTS TORCH_INCLUDE_DIRS)
  if(EXISTS "${dir}/fmt/format.h")
    set(_rmt_fmt_dir "${dir}")
    break()
  endif()
endforeach()

add_library(rmt_fmt INTERFACE IMPORTED)
if(_rmt_fmt_dir)
  set(_rmt_fmt_source "LibTorch's headers")
  set_target_properties(rmt_fmt PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_rmt_fmt_dir}"
    INTERFACE_COMPILE_DEFINITIONS FMT_HEADER_ONLY=1)
else()
  find_package(fmt CONFIG QUIET)
  if(NOT fmt_FOUND OR NOT TARGET fmt::fmt-header-only)
    message(FATAL_ERROR "rmt: fmt not found: this LibTorch (${Torch_VERSION}) has no fmt headers "
                        "in its include folders (${TORCH_INCLUDE_DIRS}) and find_package(fmt) found "
                        "none. Install fmt (Debian: apt-get install libfmt-dev) or give -Dfmt_DIR.")
  endif()
  get_target_property(_rmt_fmt_dir fmt::fmt-header-only INTERFACE_INCLUDE_DIRECTORIES)
  set(_rmt_fmt_source "find_package(fmt), ${fmt_DIR}")
  set_target_properties(rmt_fmt PROPERTIES INTERFACE_LINK_LIBRARIES fmt::fmt-header-only)
endif()

# The version, for the configure log: FMT_VERSION is in base.h (fmt >= 11) or core.h.
set(_rmt_fmt_version "version unknown")
foreach(dir IN LISTS _rmt_fmt_dir)
  foreach(header base.h core.h)
    if(EXISTS "${dir}/fmt/${header}")
      file(STRINGS "${dir}/fmt/${header}" line REGEX "^#define FMT_VERSION [0-9]+")
      if(line MATCHES "FMT_VERSION ([0-9]+)")
        math(EXPR major "${CMAKE_MATCH_1} / 10000")
        math(EXPR minor "${CMAKE_MATCH_1} % 10000 / 100")
        set(_rmt_fmt_version "${major}.${minor}")
        break()
      endif()
    endif()
  endforeach()
  if(NOT _rmt_fmt_version STREQUAL "version unknown")
    break()
  endif()
endforeach()
message(STATUS "rmt: fmt ${_rmt_fmt_version} (header-only) from ${_rmt_fmt_source}")

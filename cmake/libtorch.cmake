# LibTorch, whole: its headers and every one of its libraries from the one installation chosen.
# Included by the top-level CMakeLists.txt in place of a bare find_package(Torch).
#
# Which LibTorch: the one -DTorch_DIR=<folder of TorchConfig.cmake> or -DCMAKE_PREFIX_PATH names;
# without either, the one inside python3's torch wheel (failing that, find_package's own search).
#
# Why more than find_package(Torch): TorchConfig.cmake finds its imported targets with
# find_package(Caffe2 PATHS <its folder>/../Caffe2) and some of its libraries with
# find_library(c10 PATHS <its prefix>/lib), and both search the system folders before PATHS. With
# Debian's libtorch-dev (1.13) installed beside the wheel, a build took the wheel's headers and
# libtorch_cpu.so but /usr/lib/x86_64-linux-gnu/libc10.so (with -DTorch_DIR=<wheel>: Debian's
# targets altogether), and the tools loaded two libc10 and crashed in malloc. So
#   1. Torch_ROOT is set to the chosen LibTorch's prefix: find_* calls made while Torch's package
#      files load search it before anything else (CMP0074);
#   2. rmt_check_one_libtorch() stops the configure, saying what came from where, if LibTorch's
#      targets or any LibTorch library the build would link (TORCH_LIBRARIES and the imported
#      targets behind it) are not the chosen LibTorch's.
# At run time the binaries' RUNPATH holds the chosen LibTorch's library folder (CMake adds it);
# the `single_libtorch` test checks that the built programs load exactly one libc10.

# The prefix of the LibTorch whose TorchConfig.cmake is in CONFIG_DIR: the nearest parent folder
# holding its headers (<prefix>/share/cmake/Torch in a wheel or libtorch archive,
# <prefix>/lib/<arch>/cmake/Torch in Debian's package).
function(_rmt_torch_prefix config_dir out)
  get_filename_component(dir "${config_dir}" ABSOLUTE)
  foreach(_ RANGE 4)
    if(EXISTS "${dir}/include/torch/csrc/api/include/torch/torch.h")
      set(${out} "${dir}" PARENT_SCOPE)
      return()
    endif()
    get_filename_component(dir "${dir}" DIRECTORY)
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

# The version of the LibTorch whose libraries are in LIB_DIR, from its TorchConfigVersion.cmake,
# else from the library's file name (libc10.so.1.13.0), else "version unknown".
function(_rmt_torch_version_at lib_dir file out)
  foreach(candidate "${lib_dir}/cmake/Torch" "${lib_dir}/../share/cmake/Torch")
    if(EXISTS "${candidate}/TorchConfigVersion.cmake")
      file(STRINGS "${candidate}/TorchConfigVersion.cmake" line REGEX "set\\(PACKAGE_VERSION \"")
      if(line MATCHES "PACKAGE_VERSION \"([^\"]+)\"")
        set(${out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
        return()
      endif()
    endif()
  endforeach()
  get_filename_component(real "${file}" REALPATH)
  if(real MATCHES "\\.so\\.([0-9][0-9.]*)$")
    set(${out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
  else()
    set(${out} "version unknown" PARENT_SCOPE)
  endif()
endfunction()

# Every library file the link items ARGN stand for: paths, imported targets (their locations and,
# recursively, what they link) and the targets named in generator expressions
# ($<TARGET_FILE:torch_cpu>, $<TARGET_PROPERTY:torch_cpu,INTERFACE_LINK_LIBRARIES>).
function(_rmt_link_files out)
  set(files)
  set(seen)
  set(queue ${ARGN})
  while(queue)
    list(POP_FRONT queue item)
    if("${item}" IN_LIST seen)
      continue()
    endif()
    list(APPEND seen "${item}")
    if(TARGET "${item}")
      get_target_property(type "${item}" TYPE)
      get_target_property(imported "${item}" IMPORTED)
      if(imported AND NOT type STREQUAL "INTERFACE_LIBRARY")
        get_target_property(configs "${item}" IMPORTED_CONFIGURATIONS)
        set(props IMPORTED_LOCATION)
        foreach(config IN LISTS configs)
          string(TOUPPER "${config}" config)
          list(APPEND props IMPORTED_LOCATION_${config})
        endforeach()
        foreach(prop IN LISTS props)
          get_target_property(location "${item}" ${prop})
          if(location)
            list(APPEND files "${location}")
          endif()
        endforeach()
      endif()
      get_target_property(deps "${item}" INTERFACE_LINK_LIBRARIES)
      if(deps)
        list(APPEND queue ${deps})
      endif()
    else()
      string(REGEX MATCHALL "\\$<TARGET_[A-Z_]+:[^,>]+" refs "${item}")
      foreach(ref IN LISTS refs)
        string(REGEX REPLACE "^\\$<TARGET_[A-Z_]+:" "" ref "${ref}")
        list(APPEND queue "${ref}")
      endforeach()
      # Absolute paths, alone or inside linker flags ("-Wl,--whole-archive /x/libtorch.a ...").
      string(REGEX MATCHALL "(^|[ ,\"])/[^ ,\"$<>]+" paths "${item}")
      foreach(path IN LISTS paths)
        string(REGEX REPLACE "^[ ,\"]" "" path "${path}")
        if(EXISTS "${path}" AND NOT IS_DIRECTORY "${path}")
          list(APPEND files "${path}")
        endif()
      endforeach()
    endif()
  endwhile()
  list(REMOVE_DUPLICATES files)
  set(${out} "${files}" PARENT_SCOPE)
endfunction()

# Stops the configure unless the chosen LibTorch (the one of Torch_DIR: TorchConfig.cmake and the
# headers) is the one the build links: LibTorch's imported targets come from the Caffe2Config.cmake
# beside TorchConfig.cmake, and every LibTorch library (libtorch*, libc10*, libcaffe2*, libshm*,
# libkineto*) among the link items ARGN lies in the folder of the `torch` target's libtorch.so
# (whose path those targets give relative to themselves: never searched for).
function(rmt_check_one_libtorch)
  list(GET TORCH_INCLUDE_DIRS 0 headers)
  set(found "\n    TorchConfig.cmake: ${Torch_DIR} (LibTorch ${Torch_VERSION}), headers ${headers}")
  set(problems "")

  get_filename_component(expected_caffe2 "${Torch_DIR}/../Caffe2" REALPATH)
  get_filename_component(caffe2 "${Caffe2_DIR}" REALPATH)
  if(Caffe2_DIR AND NOT caffe2 STREQUAL expected_caffe2)
    string(APPEND problems "\n    LibTorch's targets: Caffe2Config.cmake in ${Caffe2_DIR}")
  endif()

  get_target_property(type torch TYPE)
  if(type STREQUAL "SHARED_LIBRARY")
    _rmt_link_files(torch_files torch)
    list(GET torch_files 0 torch_lib)
    get_filename_component(lib_dir "${torch_lib}" DIRECTORY)
  else()
    set(lib_dir "${TORCH_INSTALL_PREFIX}/lib")
  endif()
  string(APPEND found "\n    libraries: ${lib_dir}")
  get_filename_component(lib_dir_real "${lib_dir}" REALPATH)

  _rmt_link_files(files ${ARGN})
  get_cmake_property(cache_vars CACHE_VARIABLES)
  foreach(file IN LISTS files)
    get_filename_component(name "${file}" NAME)
    if(NOT name MATCHES "^lib(torch|c10|caffe2|shm|kineto)([_.-].*)?$")
      continue()
    endif()
    get_filename_component(real "${file}" REALPATH)
    get_filename_component(dir "${real}" DIRECTORY)
    if(dir STREQUAL lib_dir_real)
      continue()
    endif()
    get_filename_component(file_dir "${file}" DIRECTORY)
    _rmt_torch_version_at("${file_dir}" "${file}" version)
    set(from "")
    foreach(var IN LISTS cache_vars)
      get_property(value CACHE ${var} PROPERTY VALUE)
      if(value STREQUAL file)
        set(from ", cache entry ${var}")
      endif()
    endforeach()
    string(APPEND problems "\n    ${file} (LibTorch ${version}${from})")
  endforeach()

  if(problems)
    message(FATAL_ERROR
      "rmt: two LibTorches in one build (the programs would load two libc10 and crash).\n"
      "  Found:${found}\n"
      "  but also, from another LibTorch:${problems}\n"
      "Choose one LibTorch, in a fresh build directory: -DTorch_DIR=<the folder of its "
      "TorchConfig.cmake>, with no Torch_ROOT or CMAKE_PREFIX_PATH naming another "
      "(README: Choosing a LibTorch).")
  endif()
  message(STATUS "rmt: LibTorch ${Torch_VERSION}, libraries in ${lib_dir}")
endfunction()

# 1. The chosen LibTorch's prefix, known before its package files run (they search for libraries).
set(_rmt_torch_config_dir "")
if(Torch_DIR)
  set(_rmt_torch_config_dir "${Torch_DIR}")
elseif(CMAKE_PREFIX_PATH)
  # Where find_package(Torch CONFIG) will look: <entry>/ (torch.utils.cmake_prefix_path is a
  # .../share/cmake), <entry>/share/cmake/, <entry>/lib[/<arch>]/cmake/.
  foreach(_rmt_entry IN LISTS CMAKE_PREFIX_PATH)
    foreach(_rmt_suffix Torch share/cmake/Torch lib/cmake/Torch
                        lib/${CMAKE_LIBRARY_ARCHITECTURE}/cmake/Torch)
      if(NOT _rmt_torch_config_dir AND EXISTS "${_rmt_entry}/${_rmt_suffix}/TorchConfig.cmake")
        set(_rmt_torch_config_dir "${_rmt_entry}/${_rmt_suffix}")
      endif()
    endforeach()
  endforeach()
else()
  # By default the LibTorch inside the PyPI torch wheel.
  execute_process(COMMAND python3 -c "import torch; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE _rmt_wheel_cmake_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(_rmt_wheel_cmake_dir)
    list(APPEND CMAKE_PREFIX_PATH "${_rmt_wheel_cmake_dir}")
    set(_rmt_torch_config_dir "${_rmt_wheel_cmake_dir}/Torch")
  endif()
endif()
if(_rmt_torch_config_dir AND NOT DEFINED Torch_ROOT AND NOT DEFINED ENV{Torch_ROOT})
  _rmt_torch_prefix("${_rmt_torch_config_dir}" Torch_ROOT)
endif()

# 2. Find it (its CUDA parts need the CUDA language enabled first: the caller does that).
find_package(Torch REQUIRED)

# 3. Verify.
rmt_check_one_libtorch(${TORCH_LIBRARIES})

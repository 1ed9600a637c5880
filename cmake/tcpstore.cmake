# The finish barrier of rmt::batch (src/batch/barrier.cpp) uses c10d's TCPStore, which LibTorch
# ships in libtorch_cpu when it was built with distributed support. Included by the top-level
# CMakeLists.txt after the rmt target exists. RMT_TCPSTORE: AUTO (use it when a test program
# compiles and links), ON (required), OFF. Without it, `--merge DIR` and the rank marks still work.
set(RMT_TCPSTORE "AUTO" CACHE STRING "Use c10d's TCPStore for the batch tools' finish barrier: AUTO, ON, OFF")
set(RMT_WITH_TCPSTORE OFF)
if(NOT RMT_TCPSTORE STREQUAL "OFF")
  include(CheckCXXSourceCompiles)
  # The library files, not Torch's imported targets (try_compile cannot re-export those), from
  # the chosen LibTorch's library folder only (that of TORCH_LIBRARY, which cmake/libtorch.cmake
  # vetted): a default search finds another installation's first (Debian's in /usr/lib beside
  # the wheel), the test program then fails to link and the barrier is silently left out.
  get_filename_component(_rmt_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
  find_library(RMT_TORCH_CPU_LIBRARY torch_cpu PATHS "${_rmt_torch_lib_dir}" NO_DEFAULT_PATH)
  find_library(RMT_C10_LIBRARY c10 PATHS "${_rmt_torch_lib_dir}" NO_DEFAULT_PATH)
  mark_as_advanced(RMT_TORCH_CPU_LIBRARY RMT_C10_LIBRARY)
  set(CMAKE_REQUIRED_INCLUDES ${TORCH_INCLUDE_DIRS})
  set(CMAKE_REQUIRED_LIBRARIES ${RMT_TORCH_CPU_LIBRARY} ${RMT_C10_LIBRARY})
  set(CMAKE_REQUIRED_FLAGS "${TORCH_CXX_FLAGS} -std=c++17")
  set(CMAKE_REQUIRED_QUIET ON)
  check_cxx_source_compiles([=[
    #include <torch/csrc/distributed/c10d/TCPStore.hpp>
    int main() {
      c10d::TCPStoreOptions options;
      options.port = 29500;
      options.isServer = false;
      options.waitWorkers = false;
      options.timeout = std::chrono::milliseconds(1);
      auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
      return static_cast<int>(store->add("k", 0) + store->check({"k"}));
    }]=] RMT_HAVE_TCPSTORE)
  unset(CMAKE_REQUIRED_INCLUDES)
  unset(CMAKE_REQUIRED_LIBRARIES)
  unset(CMAKE_REQUIRED_FLAGS)
  unset(CMAKE_REQUIRED_QUIET)
  if(RMT_HAVE_TCPSTORE)
    set(RMT_WITH_TCPSTORE ON)
    target_compile_definitions(rmt PRIVATE RMT_WITH_TCPSTORE)
  elseif(RMT_TCPSTORE STREQUAL "ON")
    message(FATAL_ERROR "RMT_TCPSTORE=ON but this LibTorch's c10d TCPStore does not compile or link "
                        "(see CMakeFiles/CMakeError.log or CMakeConfigureLog.yaml)")
  endif()
endif()
message(STATUS "rmt: TCPStore finish barrier for the batch tools: ${RMT_WITH_TCPSTORE}")

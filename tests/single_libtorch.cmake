# Included by tests/CMakeLists.txt (after its foreach over test_*.cpp):
#   include(${CMAKE_CURRENT_SOURCE_DIR}/single_libtorch.cmake)
#
# `single_libtorch`: every program of the build (the tools, benchmarks and test programs defined
# so far) loads exactly one libc10, and all its LibTorch libraries from one folder
# (scripts/check-one-libtorch.sh). cmake/libtorch.cmake refuses to configure a build that links
# two LibTorches; this checks what the dynamic loader makes of the result.
set(_rmt_programs)
set(_rmt_dirs ${PROJECT_SOURCE_DIR})
while(_rmt_dirs)
  list(POP_FRONT _rmt_dirs _rmt_dir)
  get_property(_rmt_subdirs DIRECTORY ${_rmt_dir} PROPERTY SUBDIRECTORIES)
  list(APPEND _rmt_dirs ${_rmt_subdirs})
  get_property(_rmt_targets DIRECTORY ${_rmt_dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(_rmt_target IN LISTS _rmt_targets)
    get_target_property(_rmt_type ${_rmt_target} TYPE)
    if(_rmt_type STREQUAL "EXECUTABLE")
      list(APPEND _rmt_programs "$<TARGET_FILE:${_rmt_target}>")
    endif()
  endforeach()
endwhile()
add_test(NAME single_libtorch
         COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/check-one-libtorch.sh ${_rmt_programs})
set_tests_properties(single_libtorch PROPERTIES TIMEOUT 600)

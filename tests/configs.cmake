# Included by tests/CMakeLists.txt (after its foreach over test_*.cpp):
#   include(${CMAKE_CURRENT_SOURCE_DIR}/configs.cmake)
#
# test_configs runs rmt-infer on dense configs: tell it where it is, and build it first.
if(TARGET test_configs AND TARGET rmt-infer)
  target_compile_definitions(test_configs PRIVATE RMT_INFER_EXE="$<TARGET_FILE:rmt-infer>")
  add_dependencies(test_configs rmt-infer)
endif()

# Included by tests/CMakeLists.txt (after its foreach over test_*.cpp):
#   include(${CMAKE_CURRENT_SOURCE_DIR}/install_test.cmake)
#
# 1. `install`: installs the built tree into a temporary prefix, builds tests/consumer against it
#    with find_package(rmt CONFIG REQUIRED) and runs it (scripts/test-install.sh). Label: install
#    (skip it with ctest -LE install).
add_test(NAME install COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/../scripts/test-install.sh ${PROJECT_BINARY_DIR})
set_tests_properties(install PROPERTIES LABELS install TIMEOUT 1800)

# 2. test_tools runs the command-line tools: tell it where they are, and build them first.
if(TARGET test_tools)
  foreach(_tool rmt-classify rmt-infer)
    if(TARGET ${_tool})
      string(TOUPPER ${_tool} _macro)
      string(REPLACE "-" "_" _macro ${_macro})
      target_compile_definitions(test_tools PRIVATE ${_macro}_EXE="$<TARGET_FILE:${_tool}>")
      add_dependencies(test_tools ${_tool})
    endif()
  endforeach()
endif()

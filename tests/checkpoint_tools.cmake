# Included by tests/CMakeLists.txt (after its foreach over test_*.cpp):
#   include(${CMAKE_CURRENT_SOURCE_DIR}/checkpoint_tools.cmake)
#
# test_checkpoint_tools runs rmt-inspect and rmt-convert: tell it where they are, and build them
# first.
if(TARGET test_checkpoint_tools)
  foreach(_tool rmt-inspect rmt-convert)
    if(TARGET ${_tool})
      string(TOUPPER ${_tool} _macro)
      string(REPLACE "-" "_" _macro ${_macro})
      target_compile_definitions(test_checkpoint_tools PRIVATE ${_macro}_EXE="$<TARGET_FILE:${_tool}>")
      add_dependencies(test_checkpoint_tools ${_tool})
    endif()
  endforeach()
endif()

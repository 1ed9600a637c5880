# Included by tests/CMakeLists.txt (after its foreach over test_*.cpp):
#
# test_batch runs rmt-classify and rmt-extract (one process, ranks under torchrun, Slurm's and a
# Kubernetes Indexed Job's variables): build them first and tell it where they are.
if(TARGET test_batch)
  foreach(_tool rmt-classify rmt-extract)
    if(TARGET ${_tool})
      add_dependencies(test_batch ${_tool})
    endif()
  endforeach()
  foreach(_tool rmt-classify rmt-extract)
    if(TARGET ${_tool})
      string(TOUPPER ${_tool} _macro)
      string(REPLACE "-" "_" _macro ${_macro})
      target_compile_definitions(test_batch PRIVATE ${_macro}_EXE="$<TARGET_FILE:${_tool}>")
    endif()
  endforeach()
  # The multi-rank runs start torchrun (a Python program) and several processes at once.
  set_tests_properties(test_batch PROPERTIES PROCESSORS 2)
endif()

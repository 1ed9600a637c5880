# Included by tests/CMakeLists.txt (after its foreach over test_*.cpp):
#   include(${CMAKE_CURRENT_SOURCE_DIR}/fuzz_replay.cmake)
#
# `fuzz_replay`: builds the libFuzzer targets with clang, AddressSanitizer and UBSan in a build
# tree of their own (<build>/fuzz-replay) and replays the committed corpus fuzz/corpus/ and the
# reference checkpoints through them (scripts/fuzz-replay.sh). Label: fuzz (skip it with
# ctest -LE fuzz). Skipped (exit 77) where clang or libFuzzer's runtime is missing.
set(_rmt_fuzz_args)
foreach(_var Torch_DIR nlohmann_json_DIR fmt_DIR CMAKE_PREFIX_PATH)
  if(DEFINED ${_var} AND NOT "${${_var}}" STREQUAL "")
    string(REPLACE ";" "\\;" _value "${${_var}}")
    list(APPEND _rmt_fuzz_args "-D${_var}=${_value}")
  endif()
endforeach()
add_test(NAME fuzz_replay
         COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/fuzz-replay.sh ${PROJECT_BINARY_DIR}/fuzz-replay
                 ${_rmt_fuzz_args})
set_tests_properties(fuzz_replay PROPERTIES LABELS fuzz TIMEOUT 1800 SKIP_RETURN_CODE 77
                     PROCESSORS 2)
